"""fulmen.plot / `fulmen plot`: curves from metrics.csv (or TensorBoard events) to PNG and SVG."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

import numpy as np  # noqa: E402
from matplotlib.image import imread  # noqa: E402

import fulmen  # noqa: E402
from fulmen.__main__ import main as cli_main  # noqa: E402
from fulmen.plot import figure, find_run, read_metrics, split_name  # noqa: E402

CSV = """epoch,step,train_loss_step,train_loss_epoch,val_loss,val_acc,lr-SGD
0,0,2.0,,,,0.1
0,1,1.5,,,,0.1
0,1,,1.75,1.6,0.5,
1,2,1.2,,,,0.05
1,3,0.9,,,,0.05
1,3,,1.05,1.1,0.7,
2,4,0.7,,,,0.01
2,5,0.5,,,,0.01
2,5,,0.6,0.8,0.9,
"""


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "lightning_logs" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(CSV)
    return folder


def _png_stats(path):
    pixels = imread(path)[..., :3]
    colourful = np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max(axis=-1) > 0.15
    not_white = (pixels < 0.9).any(axis=-1)
    return pixels.shape, colourful.mean(), not_white.mean()


def test_png_has_the_expected_size_and_drawn_curves(run, tmp_path):
    out = fulmen.plot(run, out=tmp_path / "curves.png", dpi=80)
    assert out == str(tmp_path / "curves.png")
    assert os.path.getsize(out) > 10_000
    shape, colourful, not_white = _png_stats(out)
    assert shape[:2] == (int(3.3 * 80), int(3 * 4.6 * 80))  # one row of three panels: acc, loss, lr-SGD
    assert colourful > 0.002  # coloured curve pixels, not just black axes
    assert 0.01 < not_white < 0.5


def test_train_and_val_share_a_panel(run):
    fig = figure(run)
    panels = {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in fig.axes}
    assert panels == {"acc": ["val"], "loss": ["train step", "train epoch", "val"], "lr-SGD": ["lr-SGD"]}
    loss = next(ax for ax in fig.axes if ax.get_title() == "loss")
    val = loss.get_lines()[2]
    assert list(val.get_xdata()) == [1.0, 3.0, 5.0]
    assert list(val.get_ydata()) == [1.6, 1.1, 0.8]


def test_epoch_axis_averages_step_values_per_epoch(run):
    fig = figure(run, x="epoch", metrics=["loss"])
    (ax,) = fig.axes
    step_line = ax.get_lines()[0]
    assert step_line.get_label() == "train step"
    assert list(step_line.get_xdata()) == [0.0, 1.0, 2.0]
    assert list(step_line.get_ydata()) == pytest.approx([1.75, 1.05, 0.6])


def test_svg_output(run, tmp_path):
    out = fulmen.plot(run, out=tmp_path / "curves.svg", metrics=["val_acc"])
    text = open(out).read()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert text.count("<path") > 10


def test_default_output_goes_beside_the_logs_and_root_picks_latest_version(run, tmp_path):
    newer = tmp_path / "lightning_logs" / "version_1"
    newer.mkdir()
    (newer / "metrics.csv").write_text("epoch,step,loss\n0,0,1.0\n0,1,0.5\n")
    assert find_run(tmp_path) == str(newer)
    out = fulmen.plot(tmp_path)
    assert out == str(newer / "metrics.png") and os.path.getsize(out) > 5_000


def test_split_name_rules():
    assert split_name("val_loss") == ("loss", "val")
    assert split_name("train/acc_step") == ("acc", "train step")
    assert split_name("loss_validation") == ("loss", "val")
    assert split_name("lr") == ("lr", "")
    assert split_name("trainable_params") == ("trainable_params", "")


def test_reads_tensorboard_events_when_there_is_no_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from fulmen.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    for step in range(4):
        logger.log_metrics({"train_loss": 1.0 / (step + 1), "epoch": step // 2}, step=step)
    logger.log_metrics({"val_loss": 0.7, "epoch": 0}, step=1)
    logger.finalize("success")
    series = read_metrics(logger.log_dir)
    assert [(s, e, round(v, 3)) for s, e, v in series["train_loss"]] == [
        (0, 0.0, 1.0),
        (1, 0.0, 0.5),
        (2, 1.0, 0.333),
        (3, 1.0, 0.25),
    ]
    fig = figure(tmp_path)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train", "val"]


def test_missing_folder_and_empty_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fulmen.plot(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        fulmen.plot(tmp_path)
    with pytest.raises(ValueError, match="'step' or 'epoch'"):
        fulmen.plot(tmp_path, x="time")


def test_cli_plot_subcommand(run, tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert cli_main(["plot", str(run), "-o", str(out), "--x", "epoch"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert os.path.getsize(out) > 5_000
    assert cli_main(["plot", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_console_entry_point_runs_in_a_subprocess(run, tmp_path):
    out = tmp_path / "sub.png"
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    done = subprocess.run(
        [sys.executable, "-m", "fulmen", "plot", str(run), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists()


def test_missing_matplotlib_names_the_install_command(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        fulmen.plot(run)

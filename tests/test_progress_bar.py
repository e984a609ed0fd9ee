"""TQDMProgressBar: one line per epoch off-terminal (CI logs), in-place bar on a terminal or notebook, rank 0 only."""

import re
import sys
import types

import pytest

import fulmen as L
from fulmen.callbacks import ProgressBar
from fulmen.callbacks.progress import TQDMProgressBar, _in_notebook
from fulmen.demos import BoringModel


class LoggingModel(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"], prog_bar=True)
        return out


def _fit(make_trainer, bar, epochs=3):
    trainer = make_trainer(
        max_epochs=epochs,
        limit_train_batches=20,
        limit_val_batches=0,
        enable_progress_bar=True,
        callbacks=[bar],
    )
    trainer.fit(LoggingModel())


def _terminal_bar(monkeypatch):
    """A TQDMProgressBar on what it takes for a terminal, redrawn at every batch so the output is deterministic."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = TQDMProgressBar()
    bar.min_interval = 0.0
    return bar


def test_ci_log_gets_one_line_per_epoch(make_trainer, capsys):
    bar = TQDMProgressBar()
    assert not bar._interactive  # pytest's captured stdout is not a terminal
    _fit(make_trainer, bar)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch 0", "Epoch 1", "Epoch 2"]
    assert all("20 batches" in line and "train_loss=" in line for line in lines)
    assert "\r" not in out


def test_terminal_gets_an_in_place_bar(make_trainer, capsys, monkeypatch):
    bar = _terminal_bar(monkeypatch)
    _fit(make_trainer, bar, epochs=1)
    out = capsys.readouterr().out
    assert "\r" in out and "Epoch 0" in out and "20/20" in out


def test_notebook_counts_as_interactive(monkeypatch):
    assert not _in_notebook()

    class ZMQInteractiveShell:
        pass

    fake = types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell())
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert _in_notebook()
    assert TQDMProgressBar()._interactive


def test_only_rank_zero_prints(make_trainer, capsys, monkeypatch):
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    _fit(make_trainer, TQDMProgressBar(), epochs=2)
    assert capsys.readouterr().out == ""


def test_terminal_shows_validation_and_test_bars(make_trainer, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = TQDMProgressBar()
    trainer = make_trainer(
        limit_train_batches=4,
        limit_val_batches=3,
        limit_test_batches=5,
        enable_progress_bar=True,
        callbacks=[bar],
    )
    model = LoggingModel()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    out = capsys.readouterr().out
    assert "Sanity Checking" in out and "2/2" in out
    assert "Validation" in out and "3/3" in out
    assert "Testing" in out and "5/5" in out


def _last_screen_line(out):
    """What a terminal shows last: the text after the final carriage return of the last non-empty line."""
    lines = [line.split("\r")[-1] for line in out.split("\n")]
    return [line for line in lines if line.strip()][-1]


def test_the_last_epochs_bar_stays_on_screen_after_fit(make_trainer, capsys, monkeypatch):
    # Lightning 2.6 leaves the final epoch's bar (with its metrics); an erased bar ends a run with nothing shown
    bar = _terminal_bar(monkeypatch)
    _fit(make_trainer, bar, epochs=2)
    last = _last_screen_line(capsys.readouterr().out)
    assert last.startswith("Epoch 1") and "20/20" in last and "train_loss=" in last


def test_one_bar_is_reused_across_epochs_unless_leave(make_trainer, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    _fit(make_trainer, TQDMProgressBar(), epochs=3)
    kept = [line for line in capsys.readouterr().out.split("\n") if line.strip()]
    assert len(kept) == 1  # one bar, reset each epoch, one final newline
    _fit(make_trainer, TQDMProgressBar(leave=True), epochs=3)
    kept = [line.split("\r")[-1] for line in capsys.readouterr().out.split("\n") if line.strip()]
    assert [line.split(":")[0] for line in kept] == ["Epoch 0", "Epoch 1", "Epoch 2"]


@pytest.mark.parametrize("installed", [True, False])
def test_rich_is_the_default_bar_and_summary_when_installed(monkeypatch, installed):
    # Lightning 2.6: RichProgressBar and RichModelSummary when `rich` can be imported, else TQDM and the text summary
    import importlib.util

    real = importlib.util.find_spec
    if installed and real("rich") is None:
        pytest.skip("rich is not installed")

    def find_spec(name, *args):
        return None if name == "rich" and not installed else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    kinds = [type(c).__name__ for c in trainer.callbacks]
    assert kinds == (
        ["RichProgressBar", "RichModelSummary"] if installed else ["TQDMProgressBar", "ModelSummary"]
    )


def test_a_bar_subclass_reads_trainer_and_pl_module_in_its_hooks(make_trainer):
    """Lightning's ProgressBar.trainer/pl_module: set at setup, readable in any later hook."""
    seen = {}

    class Bar(TQDMProgressBar):
        def on_train_end(self, trainer, pl_module):
            seen["epoch"] = self.trainer.current_epoch
            seen["module"] = self.pl_module

    bar = Bar()
    with pytest.raises(TypeError, match="Bar.trainer"):
        _ = bar.trainer
    _fit(make_trainer, bar, epochs=2)
    assert seen["epoch"] == 2
    assert isinstance(seen["module"], LoggingModel)
    assert bar.trainer.lightning_module is seen["module"]


def _text(capsys, caplog):
    captured = capsys.readouterr()
    return captured.out + captured.err + caplog.text


class ProgBarModel(BoringModel):
    def training_step(self, batch, batch_idx):
        self.log("shown_metric", 3.14159, prog_bar=True)
        self.log("hidden_metric", 2.71828)
        return super().training_step(batch, batch_idx)


def test_progress_bar_is_the_default_and_can_be_disabled(tmp_path):
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False)
    # TQDM, or Rich where it is installed (Lightning picks Rich then)
    assert isinstance(trainer.progress_bar_callback, ProgressBar)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    assert trainer.progress_bar_callback is None
    assert not [c for c in trainer.callbacks if isinstance(c, ProgressBar)]


def test_tqdm_progress_bar_shows_prog_bar_metrics(make_trainer, capsys, caplog):
    trainer = make_trainer(
        limit_train_batches=3,
        limit_val_batches=0,
        enable_progress_bar=True,
        callbacks=[TQDMProgressBar(refresh_rate=1)],
    )
    trainer.fit(ProgBarModel())
    text = _text(capsys, caplog)
    assert re.search(r"shown_metric=3\.14", text)
    assert "hidden_metric" not in text
    assert "Epoch 0" in text


def test_progress_bar_get_metrics_contains_prog_bar_metrics(make_trainer):
    seen = {}

    class Peek(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.update(trainer.progress_bar_callback.get_metrics(trainer, pl_module))

    trainer = make_trainer(
        limit_train_batches=2, limit_val_batches=0, enable_progress_bar=True, callbacks=[Peek()]
    )
    trainer.fit(ProgBarModel())
    assert float(seen["shown_metric"]) == pytest.approx(3.14159)
    assert "hidden_metric" not in seen

"""TQDMProgressBar: one line per epoch off-terminal (CI logs), in-place bar on a terminal or notebook, rank 0 only."""

import sys
import types

import fulmen as L
from fulmen.callbacks.progress import TQDMProgressBar, _in_notebook
from fulmen.demos import BoringModel


class LoggingModel(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"], prog_bar=True)
        return out


def _fit(tmp_path, bar, epochs=3):
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=epochs,
        limit_train_batches=20,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    trainer.fit(LoggingModel())


def test_ci_log_gets_one_line_per_epoch(tmp_path, capsys):
    bar = TQDMProgressBar()
    assert not bar._interactive  # pytest's captured stdout is not a terminal
    _fit(tmp_path, bar)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch 0", "Epoch 1", "Epoch 2"]
    assert all("20 batches" in line and "train_loss=" in line for line in lines)
    assert "\r" not in out


def test_terminal_gets_an_in_place_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = TQDMProgressBar()
    bar.min_interval = 0.0
    _fit(tmp_path, bar, epochs=1)
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


def test_only_rank_zero_prints(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    _fit(tmp_path, TQDMProgressBar(), epochs=2)
    assert capsys.readouterr().out == ""


def test_terminal_shows_validation_and_test_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = TQDMProgressBar()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=3,
        limit_test_batches=5,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    model = LoggingModel()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    out = capsys.readouterr().out
    assert "Sanity Checking" in out and "2/2" in out
    assert "Validation" in out and "3/3" in out
    assert "Testing" in out and "5/5" in out

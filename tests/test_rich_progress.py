"""RichProgressBar (bar + metrics table, one line per epoch off-terminal, rank 0 only) and RichModelSummary."""

import io
import sys

import pytest

pytest.importorskip("rich")

import fulmen as L  # noqa: E402
from fulmen.callbacks.rich_progress import RichModelSummary, RichProgressBar, RichProgressBarTheme  # noqa: E402
from fulmen.demos import BoringModel  # noqa: E402


class LoggingModel(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"], prog_bar=True)
        return out

    def validation_step(self, batch, batch_idx):
        self.log("val_score", 0.5, prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.log("test_score", 0.25)


def _bar(terminal, **kwargs):
    out = io.StringIO()
    bar = RichProgressBar(console_kwargs={"file": out, "force_terminal": terminal, "width": 140}, **kwargs)
    bar.min_interval = 0.0  # redraw on every batch so the output is deterministic
    return bar, out


def _trainer(make_trainer, callbacks, epochs=2, **kwargs):
    options = dict(
        limit_train_batches=4,
        limit_val_batches=2,
        limit_test_batches=3,
        num_sanity_val_steps=1,
        enable_progress_bar=True,
    )
    return make_trainer(max_epochs=epochs, callbacks=callbacks, **{**options, **kwargs})


def test_terminal_bar_shows_epochs_validation_and_metrics_table(make_trainer):
    bar, out = _bar(terminal=True, leave=True)
    _trainer(make_trainer, [bar]).fit(LoggingModel())
    text = out.getvalue()
    for piece in (
        "Sanity Checking",
        "Epoch 0",
        "Epoch 1",
        "Validation",
        "4/4",
        "train_loss",
        "val_score",
        "0.500",
    ):
        assert piece in text, piece
    assert bar._live is None  # the live display is closed after training


def test_not_a_terminal_prints_one_line_per_epoch(make_trainer):
    bar, out = _bar(terminal=False)
    _trainer(make_trainer, [bar], epochs=3).fit(LoggingModel())
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Epoch 0", "Epoch 1", "Epoch 2"]
    assert all("4 batches" in line and "train_loss=" in line and "val_score=0.500" in line for line in lines)
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_test_bar_and_theme_format(make_trainer):
    bar, out = _bar(terminal=True, theme=RichProgressBarTheme(metrics_format=".1f"))
    trainer = _trainer(make_trainer, [bar])
    trainer.test(LoggingModel(), verbose=False)
    assert "Testing" in out.getvalue() and "3/3" in out.getvalue()


def test_only_rank_zero_draws(make_trainer, monkeypatch):
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    bar, out = _bar(terminal=False)
    _trainer(make_trainer, [bar]).fit(LoggingModel())
    assert out.getvalue() == ""


def test_refresh_rate_zero_disables(make_trainer):
    bar, out = _bar(terminal=True, refresh_rate=0)
    _trainer(make_trainer, [bar]).fit(LoggingModel())
    assert not bar.is_enabled and out.getvalue() == ""


def test_replaces_the_default_tqdm_bar(make_trainer):
    from fulmen.callbacks import TQDMProgressBar

    bar, _ = _bar(terminal=False)
    trainer = _trainer(make_trainer, [bar])
    assert trainer.progress_bar_callback is bar
    assert not any(isinstance(c, TQDMProgressBar) for c in trainer.callbacks)


def test_rich_model_summary_table(make_trainer):
    out = io.StringIO()
    summary = RichModelSummary(file=out, width=120)
    trainer = _trainer(make_trainer, [summary], epochs=1, enable_progress_bar=False)
    trainer.fit(LoggingModel())
    text = out.getvalue()
    for piece in ("Name", "layer", "Linear", "66", "Trainable params", "Total params", "train"):
        assert piece in text, piece
    assert summary.summary.total_parameters == 66


def test_missing_rich_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ImportError, match="pip install rich"):
        RichProgressBar()
    with pytest.raises(ImportError, match="pip install rich"):
        RichModelSummary()

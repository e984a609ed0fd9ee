"""Built-in core callbacks: the TQDM progress bar and ModelSummary (CSVLogger: test_loggers_csv.py)."""

import re

import pytest
import torch

import fulmen as L
from fulmen.callbacks import ModelSummary, ProgressBar, TQDMProgressBar
from fulmen.demos import BoringModel


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


class TwoLayers(BoringModel):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(32, 20)
        self.head = torch.nn.Linear(20, 2)
        self.head.requires_grad_(False)

    def forward(self, x):
        return self.head(torch.relu(self.layer(x)))


def _printed_by_fit(trainer, model, capsys, caplog):
    """What fitting `model` for one batch printed or logged."""
    caplog.set_level("INFO")
    trainer.fit(model)
    return _text(capsys, caplog)


def test_model_summary_lists_layers_and_parameter_counts(make_trainer, capsys, caplog):
    model = TwoLayers()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == (702, 660)
    trainer = make_trainer(
        limit_train_batches=1, limit_val_batches=0, enable_model_summary=True, callbacks=[ModelSummary()]
    )
    text = _printed_by_fit(trainer, model, capsys, caplog)
    assert re.search(r"layer\s*\|\s*Linear\s*\|\s*660", text)
    assert re.search(r"head\s*\|\s*Linear\s*\|\s*42", text)
    assert re.search(r"660\s+Trainable params", text)
    assert re.search(r"42\s+Non-trainable params", text)
    assert re.search(r"702\s+Total params", text)


def test_model_summary_is_on_by_default(tmp_path, capsys, caplog):
    # the Trainer's own default, so not make_trainer (which turns the summary off)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    text = _printed_by_fit(trainer, BoringModel(), capsys, caplog)
    # a plain or a Rich table: the total is next to its label either way
    assert re.search(r"66\s+Total params|Total params\W+66\b", text)


def test_model_summary_disabled(make_trainer, capsys, caplog):
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0, enable_model_summary=False)
    assert "Total params" not in _printed_by_fit(trainer, BoringModel(), capsys, caplog)

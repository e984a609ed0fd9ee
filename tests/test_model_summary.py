"""callbacks/model_summary.py: ModelSummary, the table of layers and parameter counts printed at fit start."""

import re

import torch
from test_progress_bar import _text

import fulmen as L
from fulmen.callbacks import ModelSummary
from fulmen.demos import BoringModel


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

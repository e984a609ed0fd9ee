"""Built-in core callbacks and loggers: TQDM progress bar, ModelSummary, CSVLogger."""

import csv
import re

import pytest
import torch
import yaml

import fulmen as L
from fulmen.callbacks import ModelSummary, ProgressBar, TQDMProgressBar
from fulmen.demos import BoringModel
from fulmen.loggers import CSVLogger


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


def test_tqdm_progress_bar_shows_prog_bar_metrics(tmp_path, capsys, caplog):
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[TQDMProgressBar(refresh_rate=1)],
    )
    trainer.fit(ProgBarModel())
    text = _text(capsys, caplog)
    assert re.search(r"shown_metric=3\.14", text)
    assert "hidden_metric" not in text
    assert "Epoch 0" in text


def test_progress_bar_get_metrics_contains_prog_bar_metrics(tmp_path):
    seen = {}

    class Peek(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.update(trainer.progress_bar_callback.get_metrics(trainer, pl_module))

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[Peek()],
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


def test_model_summary_lists_layers_and_parameter_counts(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    model = TwoLayers()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == (702, 660)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[ModelSummary()],
    )
    trainer.fit(model)
    text = _text(capsys, caplog)
    assert re.search(r"layer\s*\|\s*Linear\s*\|\s*660", text)
    assert re.search(r"head\s*\|\s*Linear\s*\|\s*42", text)
    assert re.search(r"660\s+Trainable params", text)
    assert re.search(r"42\s+Non-trainable params", text)
    assert re.search(r"702\s+Total params", text)


def test_model_summary_is_on_by_default(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(BoringModel())
    # a plain or a Rich table: the total is next to its label either way
    assert re.search(r"66\s+Total params|Total params\W+66\b", _text(capsys, caplog))


def test_model_summary_disabled(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert "Total params" not in _text(capsys, caplog)


class LoggingModel(BoringModel):
    def __init__(self, lr=0.1, hidden=4):
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        self.log("train_loss", float(batch_idx))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", 0.5)


def _fit_with(logger, tmp_path, **kwargs):
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        logger=logger,
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(LoggingModel(lr=0.01, hidden=16))
    return trainer


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_writes_metrics_and_hparams(tmp_path):
    trainer = _fit_with(CSVLogger(save_dir=tmp_path), tmp_path)
    version_dir = tmp_path / "lightning_logs" / "version_0"
    assert trainer.log_dir == str(version_dir)
    rows = _read_csv(version_dir / "metrics.csv")
    assert {"epoch", "step", "train_loss", "val_loss"} <= set(rows[0])
    train = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    assert train == [0.0, 1.0, 2.0] * 2
    val = [(int(r["epoch"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    assert val == [(0, 0.5), (1, 0.5)]
    hparams = yaml.safe_load((version_dir / "hparams.yaml").read_text())
    assert hparams == {"lr": 0.01, "hidden": 16}


def test_csv_logger_versions_increment(tmp_path):
    _fit_with(CSVLogger(save_dir=tmp_path), tmp_path)
    logger = CSVLogger(save_dir=tmp_path)
    trainer = _fit_with(logger, tmp_path)
    assert logger.version == 1
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0", "version_1"]
    assert (tmp_path / "lightning_logs" / "version_1" / "metrics.csv").is_file()
    assert trainer.log_dir == str(tmp_path / "lightning_logs" / "version_1")


def test_csv_logger_name_and_version(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, name="exp", version="run_a")
    _fit_with(logger, tmp_path)
    assert (tmp_path / "exp" / "run_a" / "metrics.csv").is_file()
    assert logger.log_dir == str(tmp_path / "exp" / "run_a")


def test_default_logger_is_csv_without_tensorboard(tmp_path):
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed: the default logger is TensorBoard")
    except ImportError:
        pass
    trainer = _fit_with(True, tmp_path)
    assert isinstance(trainer.logger, CSVLogger)
    assert (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").is_file()

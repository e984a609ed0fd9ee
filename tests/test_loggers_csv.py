"""CSVLogger: metrics.csv rows, flush interval, hparams.yaml, versions, rank zero."""

import csv
import os

import pytest
import torch
import yaml

import fulmen as L
from fulmen.loggers import CSVLogger
from fulmen.utilities import rank_zero_only


def _rows(logger):
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_step_and_epoch_rows_with_step_and_epoch_columns(tmp_path, logged_fit):
    logger = CSVLogger(tmp_path)
    logged_fit(logger)
    rows = _rows(logger)
    steps = [(r["step"], r["train_value"]) for r in rows if r["train_value"]]
    assert steps == [("0", "0.0"), ("1", "1.0"), ("2", "2.0"), ("3", "0.0"), ("4", "1.0"), ("5", "2.0")]
    val = [(r["step"], r["epoch"], r["val_value"]) for r in rows if r["val_value"]]
    assert val == [("2", "0", "10.0"), ("5", "1", "11.0")]


def test_hparams_yaml_holds_saved_hyperparameters(tmp_path, logged_fit, logging_model):
    logger = CSVLogger(tmp_path)
    logged_fit(logger, epochs=1, model=logging_model(lr=0.05, hidden=16))
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        assert yaml.safe_load(f) == {"lr": 0.05, "hidden": 16}


def test_each_fit_with_a_new_logger_writes_the_next_version_folder(tmp_path, logged_fit):
    first = logged_fit(CSVLogger(save_dir=tmp_path), epochs=1)
    assert first.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    logger = CSVLogger(save_dir=tmp_path)
    trainer = logged_fit(logger, epochs=1)
    assert logger.version == 1
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0", "version_1"]
    assert (tmp_path / "lightning_logs" / "version_1" / "metrics.csv").is_file()
    assert trainer.log_dir == str(tmp_path / "lightning_logs" / "version_1")


def test_name_and_version_name_the_folder(tmp_path, logged_fit):
    logger = CSVLogger(save_dir=tmp_path, name="exp", version="run_a")
    logged_fit(logger, epochs=1)
    assert (tmp_path / "exp" / "run_a" / "metrics.csv").is_file()
    assert logger.log_dir == str(tmp_path / "exp" / "run_a")


def test_default_logger_is_csv_without_tensorboard(tmp_path, logged_fit, logging_model):
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed: the default logger is TensorBoard")
    except ImportError:
        pass
    trainer = logged_fit(True, epochs=1, model=logging_model(lr=0.01, hidden=16))
    assert isinstance(trainer.logger, CSVLogger)
    assert (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").is_file()


def test_rows_are_buffered_until_the_flush_interval(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_metrics({"a": 2.0}, step=1)
    assert not os.path.exists(path)
    logger.log_metrics({"a": 3.0}, step=2)
    assert [r["a"] for r in _rows(logger)] == ["1.0", "2.0", "3.0"]
    logger.log_metrics({"a": 4.0}, step=3)
    assert len(_rows(logger)) == 3
    logger.finalize("success")
    assert [r["a"] for r in _rows(logger)] == ["1.0", "2.0", "3.0", "4.0"]


def test_new_column_rewrites_header_and_keeps_old_rows(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_metrics({"b": torch.tensor(2.5)}, step=1)
    rows = _rows(logger)
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("0", "1.0", ""), ("1", "", "2.5")]


def test_same_version_appends_instead_of_overwriting(tmp_path):
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    again = CSVLogger(tmp_path, version=0)
    again.log_metrics({"a": 2.0}, step=1)
    again.finalize("success")
    assert [r["a"] for r in _rows(again)] == ["1.0", "2.0"]


def test_versions_and_prefix(tmp_path):
    CSVLogger(tmp_path, name="exp").log_metrics({"a": 1.0}, step=0)
    logger = CSVLogger(tmp_path, name="exp", prefix="fold1")
    assert logger.version == 1
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    assert logger.log_dir == os.path.join(tmp_path, "exp", "version_1")
    assert "fold1-a" in _rows(logger)[0]


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"lr": 1.0})
    logger.log_metrics({"a": 1.0}, step=0)
    logger.finalize("success")
    assert not os.path.exists(os.path.join(tmp_path, "lightning_logs"))


def test_a_logger_that_cannot_write_at_the_end_fails_the_run_after_the_checkpoint_is_safe(
    tmp_path, make_trainer, logging_model
):
    """Issue 13 item 7: fit must not return normally when the logger's files could not be written."""
    import shutil

    from fulmen.callbacks import ModelCheckpoint
    from fulmen.trainer import LoggerFinalizeError

    class BreakTheFolder(L.Callback):
        def on_train_end(self, trainer, pl_module):
            folder = trainer.logger.log_dir
            shutil.rmtree(folder)
            with open(folder, "w") as f:  # a file where the folder was: writing metrics.csv must fail
                f.write("in the way")

    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1000)
    trainer = make_trainer(
        limit_train_batches=2,
        limit_val_batches=0,
        logger=logger,
        callbacks=[BreakTheFolder(), ModelCheckpoint(dirpath=tmp_path / "ckpts")],
    )
    with pytest.raises(LoggerFinalizeError, match=r"could not write its files: CSVLogger: "):
        trainer.fit(logging_model())
    assert os.listdir(tmp_path / "ckpts") == ["epoch=0-step=2.ckpt"]
    assert torch.load(tmp_path / "ckpts" / "epoch=0-step=2.ckpt", weights_only=True)["global_step"] == 2

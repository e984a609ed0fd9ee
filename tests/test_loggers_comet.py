"""CometLogger in offline mode (no network): metrics, hyper-parameters and the experiment's archive."""

import importlib.util
import json
import os
import zipfile

import pytest
import torch

from fulmen.demos import BoringModel
from fulmen.loggers import CometLogger

# checked without importing comet_ml (it takes seconds), so that collecting the suite stays fast
pytestmark = pytest.mark.skipif(importlib.util.find_spec("comet_ml") is None, reason="needs comet_ml")


def _messages(folder):
    archives = [f for f in os.listdir(folder) if f.endswith(".zip")]
    assert len(archives) == 1
    with zipfile.ZipFile(os.path.join(folder, archives[0])) as archive:
        lines = archive.read("messages.json").decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class LogsLoss(BoringModel):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out


@pytest.mark.slow  # comet_ml takes seconds to import and to archive the offline experiment
def test_offline_experiment_records_metrics_and_hyperparameters(tmp_path, make_trainer):
    logger = CometLogger(online=False, project="fulmen-test", offline_directory=str(tmp_path), prefix="p")
    assert logger.name == "fulmen-test" and logger.save_dir == str(tmp_path)
    assert isinstance(logger.version, str) and len(logger.version) == 32
    trainer = make_trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=0, log_every_n_steps=1, logger=logger
    )
    trainer.fit(LogsLoss(lr=0.25))
    logger.experiment.log_metrics({"after": 1.0})  # the experiment stays open after fit, as in Lightning
    logger.experiment.end()
    messages = _messages(tmp_path)
    metrics = [m["payload"]["metric"] for m in messages if m["type"] == "metric_msg"]
    train = [m for m in metrics if m["metricName"] == "p_train_loss"]
    assert [m["step"] for m in train] == [0, 1, 2]
    assert all(m["epoch"] == 0 for m in train)
    params = {
        p["payload"]["param"]["paramName"]: p["payload"]["param"]["paramValue"]
        for p in messages
        if p["type"] == "parameter_msg"
    }
    assert params.get("lr") in (0.25, "0.25")
    assert any(m["metricName"] == "after" for m in metrics)


def test_old_argument_names_are_mapped_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="save_dir"):
        logger = CometLogger(offline=True, save_dir=str(tmp_path), project_name="old")
    assert logger._online is False and logger.save_dir == str(tmp_path) and logger.name == "old"
    state = logger.__getstate__()
    assert state["_experiment"] is None and state["_experiment_key"] == logger.version
    logger.experiment.end()


def test_tensors_are_logged_as_numbers(tmp_path):
    logger = CometLogger(online=False, offline_directory=str(tmp_path))
    logger.log_metrics({"x": torch.tensor(2.5), "epoch": 3}, step=7)
    logger.experiment.end()
    metrics = [m["payload"]["metric"] for m in _messages(tmp_path) if m["type"] == "metric_msg"]
    metric = next(m for m in metrics if m["metricName"] == "x")  # comet_ml also records system metrics
    assert (metric["metricName"], float(metric["metricValue"]), metric["step"], metric["epoch"]) == (
        "x",
        2.5,
        7,
        3,
    )

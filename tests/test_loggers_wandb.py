"""WandbLogger in offline mode: the run's transaction log (run-<id>.wandb) is read back record by record."""

import glob
import json
import os
import time

import pytest

wandb = pytest.importorskip("wandb")

from wandb.proto import wandb_internal_pb2  # noqa: E402

from fulmen.loggers.wandb import WandbLogger  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_offline(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield
    if wandb.run is not None:
        wandb.finish()


def _records(path):
    """The protobuf records of a .wandb file (a 7-byte header, then LevelDB-style 32 KiB blocks)."""
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        body = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        pending = body if kind in (1, 2) else pending + body
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _history_and_config(save_dir):
    (path,) = glob.glob(os.path.join(save_dir, "wandb", "offline-run-*", "run-*.wandb"))
    deadline = time.monotonic() + 20
    records = list(_records(path))
    while not any(
        r.WhichOneof("record_type") == "exit" for r in records
    ):  # the service writes asynchronously
        assert time.monotonic() < deadline, "the offline run was never closed"
        time.sleep(0.1)
        records = list(_records(path))
    history, config = [], {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    return history, config


def test_offline_run_records_metrics_at_global_step_and_config(tmp_path, logged_fit, logging_model):
    logger = WandbLogger(save_dir=tmp_path, offline=True, project="fulmen-test", name="first")
    logged_fit(logger, model=logging_model(lr=0.25, optim={"name": "sgd"}))
    run_id = logger.version
    assert logger.name == "fulmen-test" and run_id == logger.experiment.id
    wandb.finish()
    history, config = _history_and_config(str(tmp_path))
    steps = [(h["trainer/global_step"], h["train_value"]) for h in history if "train_value" in h]
    assert steps == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 0.0), (4, 1.0), (5, 2.0)]
    val = [(h["trainer/global_step"], h["epoch"], h["val_value"]) for h in history if "val_value" in h]
    assert val == [(2, 0, 10.0), (5, 1, 11.0)]
    assert config["lr"] == 0.25 and config["optim"] == {"name": "sgd"}


def test_prefix_and_log_table(tmp_path):
    logger = WandbLogger(save_dir=tmp_path, offline=True, prefix="fold1")
    logger.log_metrics({"loss": 0.5}, step=4)
    logger.log_table("preds", columns=["x", "y"], data=[[1, 2]], step=4)
    wandb.finish()
    history, _ = _history_and_config(str(tmp_path))
    assert history[0]["fold1-loss"] == 0.5 and history[0]["trainer/global_step"] == 4
    assert history[1]["fold1-preds/_type"] == "table-file" and history[1]["fold1-preds/nrows"] == 1
    assert history[1]["trainer/global_step"] == 4


def test_offline_with_log_model_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="offline=True, log_model"):
        WandbLogger(save_dir=tmp_path, offline=True, log_model=True)


def test_missing_wandb_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match="pip install wandb"):
        WandbLogger()

"""MLFlowLogger against a real local SQLite tracking store, queried back with MlflowClient."""

import logging
import os

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")

from mlflow.tracking import MlflowClient  # noqa: E402

from fulmen.loggers.mlflow import MLFlowLogger  # noqa: E402
from fulmen.utilities import rank_zero_only  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module: creating MLflow's tables takes seconds."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    folder = tmp_path_factory.mktemp("mlflow")
    uri = "sqlite:///" + os.path.join(folder, "mlflow.db")
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema once
    return uri, folder


def test_params_metrics_with_steps_tags_and_status(store, tmp_path, logged_fit, logging_model):
    uri, _ = store
    logger = MLFlowLogger("fit-run", run_name="first", tracking_uri=uri, tags={"team": "vision"})
    logged_fit(logger, model=logging_model(lr=0.25, optim={"name": "sgd", "momentum": 0.9}))
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.run_id)
    assert run.data.params == {"lr": "0.25", "optim/name": "sgd", "optim/momentum": "0.9"}
    assert run.data.tags["team"] == "vision"
    assert run.info.run_name == "first"
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(logger.run_id, "train_value")
    assert sorted((m.step, m.value) for m in history) == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 0.0),
        (4, 1.0),
        (5, 2.0),
    ]
    val = client.get_metric_history(logger.run_id, "val_value")
    assert sorted((m.step, m.value) for m in val) == [(2, 10.0), (5, 11.0)]
    epochs = {(m.step, m.value) for m in client.get_metric_history(logger.run_id, "epoch")}
    assert {(2, 0.0), (5, 1.0)} <= epochs
    assert logger.name == run.info.experiment_id
    assert logger.save_dir is None  # a database URI has no folder (checkpoints go to default_root_dir)
    assert logger.version == run.info.run_id


def test_fit_then_test_reach_the_store_with_the_default_background_queue(
    store, tmp_path, logged_fit, logging_model
):
    uri, _ = store
    logger = MLFlowLogger("fit-test", tracking_uri=uri)
    trainer = logged_fit(logger, epochs=1)
    trainer.test(logging_model(), verbose=False)
    client = MlflowClient(tracking_uri=uri)
    assert len(client.get_metric_history(logger.run_id, "train_value")) == 3
    assert [m.value for m in client.get_metric_history(logger.run_id, "test_value")] == [0.5]


def test_synchronous_true_writes_before_returning(store):
    uri, _ = store
    logger = MLFlowLogger("sync", tracking_uri=uri, synchronous=True)
    logger.log_metrics({"a": 3.0}, step=2)
    assert MlflowClient(tracking_uri=uri).get_run(logger.run_id).data.metrics == {"a": 3.0}


def test_existing_experiment_is_reused_and_run_id_continues_a_run(store):
    uri, _ = store
    first = MLFlowLogger("shared", tracking_uri=uri)
    first.log_metrics({"a": 1.0}, step=0)
    second = MLFlowLogger("shared", tracking_uri=uri)
    assert second.experiment_id == first.experiment_id and second.run_id != first.run_id
    again = MLFlowLogger(tracking_uri=uri, run_id=first.run_id)
    again.log_metrics({"a": 2.0}, step=1)
    again.finalize("failed")
    run = MlflowClient(tracking_uri=uri).get_run(first.run_id)
    assert run.data.metrics["a"] == 2.0 and run.info.status == "FAILED"


def test_prefix_key_cleanup_and_text_values(store):
    uri, _ = store
    logger = MLFlowLogger("keys", tracking_uri=uri, prefix="fold1")
    with pytest.warns(UserWarning) as caught:
        logger.log_metrics({"loss(total)": 1.5, "note": "text"}, step=3)
    logger.save()
    messages = " ".join(str(w.message) for w in caught)
    assert "'note'" in messages and "fold1-losstotal" in messages
    metrics = MlflowClient(tracking_uri=uri).get_run(logger.run_id).data.metrics
    assert metrics == {"fold1-losstotal": 1.5}


def test_repeated_hyperparams_are_not_relogged(store):
    uri, _ = store
    logger = MLFlowLogger("params", tracking_uri=uri)
    logger.log_hyperparams({"lr": 0.1, "long": "x" * 10_000})
    logger.log_hyperparams({"lr": 0.1})  # fit then test log the same params again: no error
    logger.save()
    params = MlflowClient(tracking_uri=uri).get_run(logger.run_id).data.params
    assert params["lr"] == "0.1" and 250 <= len(params["long"]) < 10_000


def test_log_model_all_uploads_checkpoints(store, tmp_path, logged_fit):
    uri, _ = store
    from fulmen.callbacks import ModelCheckpoint

    logger = MLFlowLogger("models", tracking_uri=uri, log_model="all")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1, filename="{epoch}")
    logged_fit(logger, epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
    files = MlflowClient(tracking_uri=uri).list_artifacts(logger.run_id, "checkpoints")
    assert sorted(os.path.basename(f.path) for f in files) == ["epoch=0.ckpt", "epoch=1.ckpt"]


def test_log_model_true_uploads_best_at_the_end(store, tmp_path, logged_fit):
    uri, _ = store
    from fulmen.callbacks import ModelCheckpoint

    logger = MLFlowLogger("models-end", tracking_uri=uri, log_model=True)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpts", monitor="val_value", mode="max", filename="{epoch}"
    )
    logged_fit(logger, epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
    files = MlflowClient(tracking_uri=uri).list_artifacts(logger.run_id, "checkpoints")
    assert [os.path.basename(f.path) for f in files] == ["epoch=1.ckpt"]


def test_default_store_is_sqlite_in_save_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = MLFlowLogger(save_dir=tmp_path / "runs")
    assert logger._tracking_uri == "sqlite:///" + os.path.join(tmp_path, "runs", "mlflow.db")
    assert logger.save_dir == os.path.join(tmp_path, "runs")


def test_bad_log_model_value():
    with pytest.raises(ValueError, match="log_model='best'"):
        MLFlowLogger(log_model="best", tracking_uri="sqlite:///unused.db")


def test_only_rank_zero_talks_to_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = MLFlowLogger(tracking_uri="sqlite:///" + os.path.join(tmp_path, "never.db"))
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"a": 1.0}, step=0)
    logger.finalize("success")
    assert not os.path.exists(os.path.join(tmp_path, "never.db"))


def test_missing_mlflow_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match="pip install mlflow"):
        MLFlowLogger()

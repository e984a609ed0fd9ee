"""TensorBoardLogger: event files read back with TensorBoard's own EventAccumulator."""

import os
from unittest import mock

import pytest
import torch

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, metadata  # noqa: E402

from fulmen.demos import BoringModel  # noqa: E402
from fulmen.loggers import CSVLogger, TensorBoardLogger, default_logger  # noqa: E402
from fulmen.utilities import rank_zero_only  # noqa: E402


def _read(log_dir):
    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_step_scalars_are_written_at_their_global_step(tmp_path, logged_fit):
    logger = TensorBoardLogger(tmp_path)
    logged_fit(logger)
    scalars = _read(logger.log_dir).Scalars("train_value")
    assert [(s.step, s.value) for s in scalars] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 0.0),
        (4, 1.0),
        (5, 2.0),
    ]


def test_epoch_scalars_land_on_last_step_with_epoch_key(tmp_path, logged_fit):
    logger = TensorBoardLogger(tmp_path)
    logged_fit(logger)
    acc = _read(logger.log_dir)
    assert [(s.step, s.value) for s in acc.Scalars("val_value")] == [(2, 10.0), (5, 11.0)]
    epochs = {s.step: s.value for s in acc.Scalars("epoch")}
    assert epochs[2] == 0.0 and epochs[5] == 1.0


def test_versions_are_numbered_folders(tmp_path, logged_fit):
    first = TensorBoardLogger(tmp_path, name="exp")
    logged_fit(first, epochs=1)
    second = TensorBoardLogger(tmp_path, name="exp")
    assert second.version == 1
    assert second.log_dir == os.path.join(tmp_path, "exp", "version_1")
    named = TensorBoardLogger(tmp_path, name="exp", version="baseline", sub_dir="fold0")
    assert named.log_dir == os.path.join(tmp_path, "exp", "baseline", "fold0")
    assert os.listdir(os.path.join(tmp_path, "exp")) == ["version_0"]


def test_hparams_session_lists_values_and_metrics_appear_as_scalars(tmp_path, logged_fit, logging_model):
    logger = TensorBoardLogger(tmp_path)
    logged_fit(logger, epochs=1, model=logging_model(lr=0.25, layers=3))
    acc = _read(logger.log_dir)
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["lr"].number_value == 0.25
    assert start.hparams["layers"].number_value == 3
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    # no "experiment" record: TensorBoard lists every logged scalar as a metric of this session
    assert metadata.EXPERIMENT_TAG not in content
    assert [s.value for s in acc.Scalars("hp_metric")] == [-1.0]
    assert {"train_value", "val_value", "epoch"} <= set(acc.Tags()["scalars"])


def test_hparams_yaml_written_with_nested_values(tmp_path):
    import yaml

    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams({"optim": {"lr": 0.5, "name": "sgd"}, "act": torch.nn.ReLU})
    logger.log_metrics({"loss": 1.5}, step=7)
    logger.finalize("success")
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["optim"] == {"lr": 0.5, "name": "sgd"}
    acc = _read(logger.log_dir)
    start = metadata.parse_session_start_info_plugin_data(
        acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    )
    assert start.hparams["optim/lr"].number_value == 0.5
    assert start.hparams["optim/name"].string_value == "sgd"
    assert "ReLU" in start.hparams["act"].string_value
    assert "hp_metric" not in acc.Tags()["scalars"]
    assert [(s.step, s.value) for s in acc.Scalars("loss")] == [(7, 1.5)]


def test_log_hyperparams_with_metrics_and_prefix(tmp_path):
    logger = TensorBoardLogger(tmp_path, prefix="run")
    logger.log_hyperparams({"lr": 0.1}, metrics={"hp_metric": 0.75})
    logger.finalize("success")
    assert [s.value for s in _read(logger.log_dir).Scalars("run-hp_metric")] == [0.75]


def test_a_bare_number_is_the_hp_metric(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1}, metrics=0.125)
    logger.finalize("success")
    assert [s.value for s in _read(logger.log_dir).Scalars("hp_metric")] == [0.125]


def test_log_graph_writes_the_traced_model(tmp_path, logged_fit, logging_model):
    class GraphModel(logging_model):
        def __init__(self):
            super().__init__()
            self.example_input_array = torch.zeros(2, 32)

    logger = TensorBoardLogger(tmp_path, log_graph=True)
    logged_fit(logger, epochs=1, model=GraphModel())
    graph = _read(logger.log_dir).Graph()
    ops = {node.op for node in graph.node}
    assert "aten::linear" in ops


def test_log_graph_without_example_input_warns(tmp_path):
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    with pytest.warns(UserWarning, match="example_input_array"):
        logger.log_graph(BoringModel())


def test_non_numeric_metric_names_the_key(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ValueError, match="'note'"):
        logger.log_metrics({"note": "hello"}, step=0)


def test_unknown_writer_option_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="flush_every"):
        TensorBoardLogger(tmp_path, flush_every=3)


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert not os.path.exists(os.path.join(tmp_path, "lightning_logs"))


def test_default_logger_is_tensorboard_when_installed(tmp_path, monkeypatch):
    assert isinstance(default_logger(str(tmp_path)), TensorBoardLogger)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert isinstance(default_logger(str(tmp_path)), CSVLogger)


def test_several_loggers_receive_the_same_metrics(tmp_path, logged_fit):
    tb = TensorBoardLogger(tmp_path, name="tb")
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = logged_fit([tb, csv_logger], epochs=1)
    assert trainer.loggers == [tb, csv_logger] and trainer.log_dir == tb.log_dir
    tb_values = [s.value for s in _read(tb.log_dir).Scalars("val_value")]
    with open(os.path.join(csv_logger.log_dir, "metrics.csv")) as f:
        header, *rows = [line.rstrip("\n").split(",") for line in f]
    column = header.index("val_value")
    assert tb_values == [10.0] and [float(r[column]) for r in rows if r[column]] == [10.0]


def test_missing_tensorboard_names_the_install_command(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path)


def test_hparams_dashboard_lists_every_logged_scalar_as_a_metric(tmp_path, logged_fit, logging_model):
    """TensorBoard's own HParams backend builds the experiment from what the logger wrote."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    logger = TensorBoardLogger(tmp_path)
    logged_fit(logger, epochs=1, model=logging_model(lr=0.5, layers=2))
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    hparams = backend_context.Context(base_plugin.TBContext(data_provider=provider, logdir=str(tmp_path)))
    request = context.RequestContext()
    experiment = hparams.experiment_from_metadata(
        request,
        "",
        True,
        hparams.hparams_metadata(request, ""),
        hparams.hparams_from_data_provider(request, "", 0),
    )
    assert sorted(h.name for h in experiment.hparam_infos) == ["layers", "lr"]
    assert sorted(m.name.tag for m in experiment.metric_infos) == [
        "epoch",
        "hp_metric",
        "train_value",
        "val_value",
    ]


class _LogsFoo(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("foo", 3.0)
        return out


class _SavesHparams(_LogsFoo):
    def __init__(self, width=4):
        super().__init__()
        self.save_hyperparameters()


def _log_metrics_calls(logged_fit, logger, model):
    """The calls a one-step fit of `model` makes to `logger.log_metrics`."""
    with mock.patch.object(TensorBoardLogger, "log_metrics") as log_metrics:
        logged_fit(logger, model=model, max_steps=1, limit_val_batches=0)
    return log_metrics.mock_calls


def test_no_saved_hyperparameters_means_no_hp_metric_call(tmp_path, logged_fit):
    calls = _log_metrics_calls(logged_fit, TensorBoardLogger(tmp_path), _LogsFoo())
    # only the step metrics, passed by keyword as Lightning does
    assert calls == [mock.call(metrics={"foo": 3.0, "epoch": 0}, step=0)]


def test_saved_hyperparameters_still_get_the_hp_metric_placeholder(tmp_path, logged_fit):
    logger = TensorBoardLogger(tmp_path)
    calls = _log_metrics_calls(logged_fit, logger, _SavesHparams())
    # Lightning 2.6 passes log_hyperparams' `step` (None by default) on
    assert calls[0] == mock.call({"hp_metric": -1}, None)
    assert calls[1] == mock.call(metrics={"foo": 3.0, "epoch": 0}, step=0)
    assert logger.hparams == {"width": 4}


def test_log_hyperparams_writes_its_metrics_at_the_given_step(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1}, {"hp_metric": 0.5}, step=7)
    logger.experiment.flush()
    assert [(s.step, s.value) for s in _read(logger.log_dir).Scalars("hp_metric")] == [(7, 0.5)]

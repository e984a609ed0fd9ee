"""TensorBoardLogger: event files under `<save_dir>/<name>/version_<N>/`, read by `tensorboard --logdir`.

The `experiment` is a real `torch.utils.tensorboard.SummaryWriter`, so `self.logger.experiment.add_image(...)`
and friends work as users expect. Metrics of one `log_metrics` call go out as one event (cheap: one
protobuf, one queue put). Hyper-parameters are written as the HParams plugin's session-start record,
without an "experiment" record: TensorBoard then lists every scalar this run logged as a metric of
these hyper-parameters, so the HParams dashboard shows the metrics the run really produced.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from fulmen.hparams_file import save_hparams_to_yaml
from fulmen.loggers.logger import FolderLogger, rank_zero_experiment
from fulmen.utilities import move_data_to_device, rank_zero_only, rank_zero_warn

# SummaryWriter options a user may pass through, as with Lightning's **kwargs.
_WRITER_OPTIONS = ("max_queue", "flush_secs", "filename_suffix", "comment", "purge_step")


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "TensorBoardLogger needs the `tensorboard` package: `pip install tensorboard` "
            "(or use CSVLogger, which needs nothing extra)."
        ) from err


def flatten_dict(params: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined with `sep` (`{"a": {"b": 1}}` -> `{"a/b": 1}`)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, Mapping) and value:
            out.update(flatten_dict(value, sep, name))
        else:
            out[name] = value
    return out


def _as_params(params: Mapping[str, Any] | Namespace | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return dict(vars(params))
    if not isinstance(params, Mapping):
        raise TypeError(
            f"log_hyperparams expects a dict or an argparse.Namespace, got {type(params).__name__}; "
            "pass `vars(obj)` or a dict."
        )
    return dict(params)


class TensorBoardLogger(FolderLogger):
    """Logs to TensorBoard event files in `<save_dir>/<name>/version_<N>[/<sub_dir>]`.

    Args:
        save_dir: the root folder of all experiments.
        name: the experiment's folder under `save_dir` (None or "" writes versions directly in it).
        version: an int gives `version_<int>`, a str is used as the folder name; None takes the next free number.
        log_graph: trace the module with `example_input_array` at fit start and write its graph.
        default_hp_metric: log `hp_metric = -1` with the hyper-parameters (as Lightning does) so that the
            HParams dashboard has a placeholder for the user's own `hp_metric`.
        prefix: a string put before every metric name (`"<prefix>-<name>"`).
        sub_dir: a folder inside the version folder to write to.
        **kwargs: passed to `SummaryWriter` (`max_queue`, `flush_secs`, `filename_suffix`, ...).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        _require_tensorboard()
        unknown = sorted(set(kwargs) - set(_WRITER_OPTIONS))
        if unknown:
            raise TypeError(
                f"TensorBoardLogger got unknown arguments {unknown}; the SummaryWriter options it passes on "
                f"are {list(_WRITER_OPTIONS)}."
            )
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._writer_kwargs = kwargs
        self._writer: Any = None
        self.hparams: dict[str, Any] = {}
        self._session_started = False
        self._graph_logged = False

    # ------------------------------------------------------------------ where
    @property
    def sub_dir(self) -> str | None:
        """The folder inside the version folder that receives the event files, if any."""
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        """`<save_dir>/<name>/version_<N>[/<sub_dir>]`."""
        path = super().log_dir
        if self._sub_dir:
            path = os.path.join(path, self._sub_dir)
        return os.path.expandvars(os.path.expanduser(path))

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The `SummaryWriter` (created, with its folder, on first use)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = SummaryWriter(log_dir=self.log_dir, **self._writer_kwargs)
        return self._writer

    # ------------------------------------------------------------------ what
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Write every scalar of `metrics` at `step`, in one event; dict values go through `add_scalars`."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        writer = self.experiment
        values = []
        for key, value in metrics.items():
            tag = f"{self._prefix}-{key}" if self._prefix else key
            if isinstance(value, Mapping):
                writer.add_scalars(tag, dict(value), step)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"TensorBoardLogger can only log numbers, but metric {key!r} is {type(value).__name__}; "
                    "log a float or a scalar tensor."
                ) from err
            values.append(Summary.Value(tag=tag, simple_value=number))
        if values:
            writer.file_writer.add_summary(Summary(value=values), step)

    @rank_zero_only
    def log_hyperparams(  # noqa: D102
        self,
        params: Mapping[str, Any] | Namespace | None = None,
        metrics: Mapping[str, Any] | float | None = None,
        step: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Record hyper-parameters (and optionally the metrics they produced, at `step`) for the HParams dashboard."""
        new = _as_params(params)
        self.hparams.update(new)
        if metrics is None and self._default_hp_metric and not self._session_started:
            metrics = {"hp_metric": -1}
        elif metrics is not None and not isinstance(metrics, Mapping):  # a bare number is the hp_metric
            metrics = {"hp_metric": metrics}
        if metrics:
            self.log_metrics(metrics, step)
        if not self.hparams or (self._session_started and not new):
            return
        self._write_session_start()

    def _write_session_start(self) -> None:
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2

        info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for key, value in flatten_dict(self.hparams).items():
            if isinstance(value, bool):
                info.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[key].number_value = value
            elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a tensor / numpy scalar
                info.hparams[key].number_value = float(value.item())
            else:
                info.hparams[key].string_value = value if isinstance(value, str) else repr(value)
        self._write_hparams_record(
            metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info)
        )
        self._session_started = True

    def _write_hparams_record(self, tag: str, data: Any) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import metadata

        summary = Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])
        self.experiment.file_writer.add_summary(summary)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Trace `model` with `input_array` (default: `model.example_input_array`) and write its graph."""
        if not self._log_graph or self._graph_logged:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            rank_zero_warn(
                "TensorBoardLogger(log_graph=True) could not log the graph: set `self.example_input_array` "
                "in your LightningModule's __init__ or pass `input_array` to log_graph()."
            )
            return

        device = next((p.device for p in model.parameters()), None)
        if device is not None:
            input_array = move_data_to_device(input_array, device)
        import warnings

        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                self.experiment.add_graph(model, input_array)
            self._graph_logged = True
        finally:
            model.train(was_training)

    @rank_zero_only
    def save(self) -> None:
        """Flush the event file and write hparams.yaml beside it."""
        if self._writer is None:
            return
        self._writer.flush()
        if self.hparams and os.path.isdir(self.log_dir):
            save_hparams_to_yaml(os.path.join(self.log_dir, "hparams.yaml"), self.hparams)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Mark the hyper-parameter session ended (success or failure), flush and close the file."""
        if self._writer is None:
            return
        if self._session_started:
            from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

            code = api_pb2.STATUS_SUCCESS if status in ("success", "finished") else api_pb2.STATUS_FAILURE
            end = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
            self._write_hparams_record(
                metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)
            )
        self.save()
        self._writer.close()
        self._writer = None  # a closed SummaryWriter cannot write again; a later run opens a new file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_writer"] = None  # the writer owns a thread and an open file
        return state

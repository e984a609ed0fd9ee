"""MLFlowLogger: params, metrics with their steps, tags and (optionally) checkpoints in an MLflow run.

Talks to the tracking store through `mlflow.tracking.MlflowClient` only (no global `mlflow.start_run`
state), so several loggers and the user's own MLflow code do not interfere. Without a tracking URI it
uses a SQLite file in `save_dir`: MLflow 3 no longer accepts the plain-folder store by default.
"""

from __future__ import annotations

import os
import re
import time
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from fulmen.loggers.logger import Logger, rank_zero_experiment
from fulmen.loggers.tensorboard import _as_params, flatten_dict
from fulmen.utilities import rank_zero_only, rank_zero_warn

_PARAM_BATCH = 100  # MLflow accepts at most 100 params and 1000 metrics per log_batch call
_METRIC_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]+")
_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


def _require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "MLFlowLogger needs MLflow: `pip install mlflow` (or the lighter `pip install mlflow-skinny "
            "sqlalchemy alembic` for a local SQLite store)."
        ) from err


def _local_dir(uri: str) -> str | None:
    if uri.startswith("file:"):
        path = uri[len("file:") :]
        return path[2:] if path.startswith("//") else path
    return None


class MLFlowLogger(Logger):
    """Logs to an MLflow tracking server or local store.

    Args:
        experiment_name: the MLflow experiment (created if missing).
        run_name: the run's display name.
        tracking_uri: where the store is (`http://...`, `sqlite:///path.db`, `file:/folder`); default: the
            `MLFLOW_TRACKING_URI` environment variable, else `sqlite:///<save_dir>/mlflow.db`.
        tags: tags set on the new run.
        save_dir: the folder of the default SQLite store (and of its artifacts).
        log_model: False; True logs the best and last checkpoints when training ends; "all" logs every
            checkpoint as it is saved.
        prefix: a string put before every metric name (`"<prefix>-<name>"`).
        artifact_location: where a newly created experiment stores artifacts.
        run_id: continue this existing run instead of creating one.
        synchronous: True waits for the store on every call. False or None (the default, unlike Lightning)
            queue the writes in MLflow's background thread (MLflow >= 2.8): a SQLite write takes tens of
            milliseconds, which training should not wait for. `save()` and `finalize()` wait for the queue.
    """

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, Any] | None = None,
        save_dir: str | os.PathLike[str] | None = "./mlruns",
        log_model: bool | str = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        _require_mlflow()
        if log_model not in (False, True, "all"):
            raise ValueError(f"MLFlowLogger(log_model={log_model!r}): use False, True or 'all'.")
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        folder = os.path.abspath(os.fspath(save_dir or "./mlruns"))
        self._default_store_dir: str | None = None
        if tracking_uri is None:
            os.makedirs(folder, exist_ok=True)
            self._default_store_dir = folder
            tracking_uri = "sqlite:///" + os.path.join(folder, "mlflow.db")
            if artifact_location is None:
                artifact_location = os.path.join(folder, "artifacts")
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._tracking_uri = tracking_uri
        self.tags = dict(tags or {})
        self._log_model = log_model
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._run_id = run_id
        self._experiment_id: str | None = None
        self._synchronous = synchronous
        self._sync_supported: bool | None = None
        self._client: Any = None
        self._logged_params: dict[str, str] = {}
        self._logged_checkpoints: dict[str, float] = {}
        self._checkpoint_callback: Any = None

    # ------------------------------------------------------------------ where
    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The `MlflowClient`; the experiment and the run are created on first use."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self._tracking_uri)
            if self._run_id is not None:
                self._experiment_id = client.get_run(self._run_id).info.experiment_id
            else:
                found = client.get_experiment_by_name(self._experiment_name)
                if found is not None:
                    self._experiment_id = found.experiment_id
                else:
                    self._experiment_id = client.create_experiment(
                        self._experiment_name, artifact_location=self._artifact_location
                    )
                tags = {str(k): str(v) for k, v in self.tags.items()}
                run = client.create_run(self._experiment_id, run_name=self._run_name, tags=tags)
                self._run_id = run.info.run_id
            self._client = client
        return self._client

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (creates the run on first use)."""
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment id (creates the experiment on first use)."""
        _ = self.experiment
        return self._experiment_id

    @property
    def name(self) -> str | None:
        """The experiment id, as in Lightning."""
        return self.experiment_id

    @property
    def version(self) -> str | None:
        """The run id, as in Lightning."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        """The folder of a `file:` store or of fulmen's default SQLite store; None otherwise (as in Lightning)."""
        return self._default_store_dir or _local_dir(self._tracking_uri)

    # ------------------------------------------------------------------ what
    @rank_zero_only
    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace | None, *args: Any, **kwargs: Any
    ) -> None:
        """Log hyper-parameters as MLflow params (flattened with "/", values as text, cut to MLflow's limit)."""
        from mlflow.entities import Param

        limit = _param_limit()
        new = []
        for key, value in flatten_dict(_as_params(params)).items():
            text = str(value)[:limit]
            if self._logged_params.get(key) == text:
                continue  # MLflow params are write-once: re-logging at test time must not change them
            self._logged_params[key] = text
            new.append(Param(key, text))
        client = self.experiment
        for i in range(0, len(new), _PARAM_BATCH):
            client.log_batch(run_id=self._run_id, params=new[i : i + _PARAM_BATCH], **self._sync_kwargs())

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics at `step` in one batch call; text values are skipped with a warning."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            name = f"{self._prefix}-{key}" if self._prefix else key
            if isinstance(value, str):
                rank_zero_warn(f"MLFlowLogger skips metric {key!r}: its value is text, not a number.")
                continue
            clean = _BAD_KEY_CHARS.sub("", name)
            if clean != name:
                rank_zero_warn(
                    f"MLFlowLogger renamed metric {name!r} to {clean!r}: MLflow forbids those characters."
                )
            batch.append(Metric(key=clean, value=float(value), timestamp=stamp, step=step or 0))
        client = self.experiment
        for i in range(0, len(batch), _METRIC_BATCH):
            client.log_batch(run_id=self._run_id, metrics=batch[i : i + _METRIC_BATCH], **self._sync_kwargs())

    def _sync_kwargs(self) -> dict[str, Any]:
        if self._sync_supported is None:
            import inspect

            self._sync_supported = "synchronous" in inspect.signature(self._client.log_batch).parameters
        if not self._sync_supported:
            return {}
        return {"synchronous": bool(self._synchronous)}

    @rank_zero_only
    def save(self) -> None:
        """Wait until queued params and metrics are in the store."""
        store = getattr(getattr(self._client, "_tracking_client", None), "store", None)
        flush = getattr(store, "flush_async_logging", None)
        if flush is not None:
            flush()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """With `log_model="all"` upload the new checkpoints now; with True remember them for the end."""
        self._checkpoint_callback = checkpoint_callback
        if self._log_model == "all" or (
            self._log_model is True and getattr(checkpoint_callback, "save_top_k", 1) == -1
        ):
            self._log_checkpoints(checkpoint_callback)

    @rank_zero_only
    def _log_checkpoints(self, checkpoint_callback: Any) -> None:
        paths = list(getattr(checkpoint_callback, "best_k_models", {}) or {})
        for attr in ("best_model_path", "last_model_path"):
            path = getattr(checkpoint_callback, attr, "")
            if path:
                paths.append(path)
        client = self.experiment
        for path in dict.fromkeys(paths):
            if not os.path.isfile(path):
                continue
            stamp = os.path.getmtime(path)
            if self._logged_checkpoints.get(path) == stamp:
                continue
            client.log_artifact(self._run_id, path, artifact_path="checkpoints")
            self._logged_checkpoints[path] = stamp

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Upload pending checkpoints (log_model=True) and mark the run FINISHED or FAILED."""
        if self._client is None:
            return
        if self._log_model and self._checkpoint_callback is not None:
            self._log_checkpoints(self._checkpoint_callback)
        self.save()
        self._client.set_terminated(self._run_id, _STATUS.get(status, "KILLED"))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # reconnects (to the same run) in a child process
        return state


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except ImportError:
        return 250

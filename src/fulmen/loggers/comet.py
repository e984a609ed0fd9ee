"""CometLogger: metrics, hyper-parameters and the model graph in a Comet experiment (`pip install comet_ml`).

`online=False` (or no API key) makes an offline experiment: everything goes into a zip under
`offline_directory` (default `.cometml-runs`) for a later `comet upload <zip>`; no network is needed.
The experiment is created when the logger is (on rank 0), and stays open after training, as in
Lightning, so more can be logged; `logger.experiment.end()` closes it (and writes the offline zip).
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

import torch

from fulmen.loggers.logger import Logger, rank_zero_experiment
from fulmen.loggers.tensorboard import _as_params
from fulmen.utilities import rank_zero_only, rank_zero_warn

_CREATED_FROM = "fulmen"
# Lightning 1.x/2.0 spellings -> (the current argument, how to convert the value)
_RENAMED = {
    "experiment_name": ("name", lambda v: v),
    "project_name": ("project", lambda v: v),
    "offline": ("online", lambda v: not v),
    "save_dir": ("offline_directory", lambda v: os.fspath(v)),
}


def _require_comet() -> Any:
    try:
        import comet_ml
    except ImportError as err:
        raise ModuleNotFoundError(
            "CometLogger needs the `comet_ml` package: `pip install comet_ml`."
        ) from err
    return comet_ml


class CometLogger(Logger):
    """Logs to a Comet experiment (keyword arguments only, as in Lightning 2.6).

    Args:
        api_key: the Comet API key (else read by comet_ml from COMET_API_KEY or its config file).
        workspace: the Comet workspace.
        project: the Comet project (also the logger's `name`).
        experiment_key: the key of an experiment to continue or to create with that key.
        mode: "get_or_create", "get" or "create" (comet_ml's default when None).
        online: False writes an offline experiment to `offline_directory`; None lets comet_ml decide.
        prefix: a string put before every metric name.
        **kwargs: passed to `comet_ml.ExperimentConfig` (e.g. `name`, `offline_directory`, `tags`). The
            1.x names `experiment_name`, `project_name`, `offline` and `save_dir` are mapped, with a warning.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        workspace: str | None = None,
        project: str | None = None,
        experiment_key: str | None = None,
        mode: str | None = None,
        online: bool | None = None,
        prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        comet_ml = _require_comet()
        for old, (new, convert) in _RENAMED.items():
            if old not in kwargs:
                continue
            value = convert(kwargs.pop(old))
            rank_zero_warn(f"CometLogger({old}=...) is the old spelling; use {new}= instead.")
            if new == "project":
                project = project if project is not None else value
            elif new == "online":
                online = online if online is not None else value
            else:
                kwargs.setdefault(new, value)
        self._api_key = api_key
        self._workspace = workspace
        self._project_name = project
        self._experiment_key = experiment_key
        self._mode = mode
        self._online = online
        self._prefix = prefix
        self._kwargs = kwargs
        self._experiment: Any = None
        os.environ.setdefault(
            "COMET_DISABLE_AUTO_LOGGING", "1"
        )  # fulmen logs what it should; no monkey-patching
        self._config = comet_ml.ExperimentConfig(**kwargs)
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            self._create_experiment()

    def _create_experiment(self) -> None:
        comet_ml = _require_comet()
        experiment = comet_ml.start(
            api_key=self._api_key,
            workspace=self._workspace,
            project=self._project_name,
            experiment_key=self._experiment_key,
            mode=self._mode,
            online=self._online,
            experiment_config=self._config,
        )
        if experiment is None:
            raise RuntimeError(
                "comet_ml.start did not create an experiment; check the CometLogger arguments."
            )
        self._experiment = experiment
        self._experiment_key = experiment.get_key()
        self._project_name = experiment.project_name
        experiment.log_other("Created from", _CREATED_FROM)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The comet_ml experiment (created again after unpickling in another process)."""
        if self._experiment is None:
            self._create_experiment()
        return self._experiment

    @property
    def name(self) -> str | None:
        """The Comet project."""
        return self._project_name

    @property
    def version(self) -> str | None:
        """The experiment key."""
        return self._experiment.get_key() if self._experiment is not None else self._experiment_key

    @property
    def save_dir(self) -> str | None:
        """Where an offline experiment's zip is written."""
        return getattr(self._config, "offline_directory", None)

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Log the hyper-parameters (nested dicts are flattened by Comet)."""
        self.experiment.log_parameters(_as_params(params), nested_support=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar metrics at `step`; an `epoch` entry becomes Comet's epoch."""
        values = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        epoch = values.pop("epoch", None)
        self.experiment.log_metrics(values, prefix=self._prefix, step=step, epoch=epoch)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model's structure in the experiment."""
        if self._experiment is not None:
            self._experiment.set_model_graph(model)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Flush what was logged; the experiment stays open (call `experiment.end()` to close it)."""
        if self._experiment is not None:
            self._experiment.flush()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # a child process re-attaches to the same experiment by key
        state["_experiment_key"] = self.version
        state["_experiment"] = None
        return state

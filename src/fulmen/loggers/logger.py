"""Logger: the interface every experiment logger implements (rank 0 writes, others do nothing)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fulmen.utilities import rank_zero_only


class Logger:
    """Base class: `log_metrics`, `log_hyperparams`, `save`, `finalize`, and where logs go."""

    @property
    def name(self) -> str | None:
        """The experiment's name."""
        return None

    @property
    def version(self) -> int | str | None:
        """The run's version within the experiment."""
        return None

    @property
    def root_dir(self) -> str | None:
        """The folder that holds every version of the experiment."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The folder of this run's files."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The folder given by the user."""
        return None

    @property
    def experiment(self) -> Any:
        """The underlying writer object (created on first use)."""
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record `metrics` at `step`."""
        raise NotImplementedError

    def log_hyperparams(self, params: Mapping[str, Any] | Any, *args: Any, **kwargs: Any) -> None:
        """Record the run's hyper-parameters."""
        raise NotImplementedError

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model graph (if the backend supports it)."""

    def save(self) -> None:
        """Flush what was logged to storage."""

    def finalize(self, status: str) -> None:
        """Close the run ("success", "failed" or "finished")."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Called after a checkpoint was written."""


class FolderLogger(Logger):
    """A logger writing under `<save_dir>/<name>/version_<N>/`: the folder rules CSV and TensorBoard share.

    Subclasses set `_save_dir`, `_name` and `_version` (None: the next free number) in `__init__`.
    """

    _save_dir: str
    _name: str
    _version: int | str | None

    @property
    def name(self) -> str:  # noqa: D102
        return self._name

    @property
    def version(self) -> int | str:  # noqa: D102
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:  # noqa: D102
        return self._save_dir

    @property
    def root_dir(self) -> str:  # noqa: D102
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:  # noqa: D102
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)


def rank_zero_experiment(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return the real experiment on rank 0 and a do-nothing stand-in elsewhere."""

    @functools.wraps(fn)
    def experiment(self: Any) -> Any:
        if rank_zero_only.rank > 0:  # type: ignore[attr-defined]
            return _DummyExperiment()
        return fn(self)

    return experiment


class _DummyExperiment:
    """Stands in for a writer object: every method call, index and item assignment does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):  # copy/pickle probe dunders: behave like a plain object
            raise AttributeError(name)
        return _nothing

    def __getitem__(self, idx: Any) -> _DummyExperiment:
        # `logger.experiment[0].add_image(...)` also does nothing
        return self

    def __setitem__(self, *args: Any) -> None:
        pass


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class DummyLogger(Logger):
    """A logger that records nothing: `fast_dev_run` puts it in place of the configured loggers.

    Every call on it or on its `experiment` (e.g. `self.logger.experiment.add_histogram(...)`) does
    nothing, so code written for a real logger runs unchanged during a quick debugging run.
    """

    def __init__(self) -> None:
        self._experiment = _DummyExperiment()

    @property
    def experiment(self) -> _DummyExperiment:
        """A stand-in on which every method call does nothing."""
        return self._experiment

    @property
    def name(self) -> str:
        """Empty: there is no experiment."""
        return ""

    @property
    def version(self) -> str:
        """Empty: there is no run."""
        return ""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record nothing."""

    def log_hyperparams(self, params: Mapping[str, Any] | Any, *args: Any, **kwargs: Any) -> None:
        """Record nothing."""

    def __getitem__(self, idx: int) -> DummyLogger:
        # `self.logger[0]` works as on a list of loggers
        return self

    def __iter__(self) -> Iterator[Any]:
        yield from ()

    def __getattr__(self, name: str) -> Callable[..., None]:
        """Any other method a logger might have (`log_image`, `log_table`, ...) exists and does nothing."""
        if name.startswith("_"):  # private and dunder lookups (copy, pickle, `_version`) stay normal
            raise AttributeError(name)
        return _nothing


def next_version(root_dir: str) -> int:
    """The first unused `version_N` number under `root_dir`."""
    if not os.path.isdir(root_dir):
        return 0
    taken = []
    for entry in os.listdir(root_dir):
        if entry.startswith("version_") and os.path.isdir(os.path.join(root_dir, entry)):
            suffix = entry.split("_", 1)[1]
            if suffix.isdigit():
                taken.append(int(suffix))
    return max(taken) + 1 if taken else 0

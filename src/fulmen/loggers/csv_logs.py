"""CSVLogger: metrics.csv and hparams.yaml under `<save_dir>/<name>/version_N/`, no extra packages."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any

from fulmen.hparams_file import save_hparams_to_yaml
from fulmen.loggers.logger import FolderLogger, rank_zero_experiment
from fulmen.utilities import rank_zero_only


class _CSVWriter:
    """Buffers metric rows and rewrites the file when new columns appear."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, "metrics.csv")
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.keys: list[str] = []
        os.makedirs(log_dir, exist_ok=True)
        if os.path.isfile(self.metrics_file_path):  # resuming into this version: append, keep old rows
            with open(self.metrics_file_path, newline="") as f:
                self.keys = next(csv.reader(f), [])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None) -> None:
        """Buffer one row; tensors become plain numbers."""
        row = {
            k: v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v
            for k, v in metrics.items()
        }
        row["step"] = step
        self.metrics.append(row)

    def save(self) -> None:
        """Append the buffered rows to metrics.csv (rewriting the header when new columns appeared)."""
        if not self.metrics:
            return
        new_keys = [k for row in self.metrics for k in row if k not in self.keys]
        new_keys = list(dict.fromkeys(new_keys))
        if new_keys and os.path.exists(self.metrics_file_path) and self.keys:
            with open(self.metrics_file_path, newline="") as f:
                old_rows = list(csv.DictReader(f))
            self.keys = sorted(set(self.keys) | set(new_keys))
            with open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(old_rows)
        elif new_keys:
            self.keys = sorted(set(self.keys) | set(new_keys))
            with open(self.metrics_file_path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writeheader()
        with open(self.metrics_file_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerows(self.metrics)
        self.metrics = []

    def save_hparams(self) -> None:
        """Write hparams.yaml."""
        save_hparams_to_yaml(os.path.join(self.log_dir, "hparams.yaml"), self.hparams)


class CSVLogger(FolderLogger):
    """Writes metrics to `<save_dir>/<name>/version_<N>/metrics.csv` and hyper-parameters to hparams.yaml."""

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._flush_every = flush_logs_every_n_steps
        self._writer: _CSVWriter | None = None
        self._rows_since_flush = 0

    @property
    @rank_zero_experiment
    def experiment(self) -> _CSVWriter:
        """The CSV writer (creates the version folder on first use)."""
        if self._writer is None:
            self._writer = _CSVWriter(self.log_dir)
        return self._writer

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Any = None, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        if params is None:
            return
        if not isinstance(params, Mapping):
            params = vars(params)
        self.experiment.hparams.update(params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # noqa: D102
        if self._prefix:
            metrics = {f"{self._prefix}-{k}": v for k, v in metrics.items()}
        self.experiment.log_metrics(metrics, step)
        self._rows_since_flush += 1
        if self._rows_since_flush >= self._flush_every:
            self.save()

    @rank_zero_only
    def save(self) -> None:  # noqa: D102
        self._rows_since_flush = 0
        writer = self.experiment
        writer.save_hparams()
        writer.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:  # noqa: D102
        if self._writer is None:
            return
        self.save()

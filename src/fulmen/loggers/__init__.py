"""Experiment loggers (import path mirrors lightning.pytorch.loggers)."""

from __future__ import annotations

from typing import Any

from fulmen.loggers.csv_logs import CSVLogger
from fulmen.loggers.logger import Logger, rank_zero_experiment

__all__ = ["CSVLogger", "Logger", "default_logger", "rank_zero_experiment"]


def default_logger(root_dir: str) -> Any:
    """The logger used when `logger=True`: CSV under `<root>/lightning_logs/`."""
    return CSVLogger(save_dir=root_dir, name="lightning_logs")

"""Experiment loggers (import path mirrors lightning.pytorch.loggers)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from fulmen.loggers.csv_logs import CSVLogger
from fulmen.loggers.logger import Logger, rank_zero_experiment
from fulmen.loggers.tensorboard import TensorBoardLogger
from fulmen.out_of_scope import LitLogger
from fulmen.utilities.lazy import lazy_names

# loggers of optional services: their modules load when the name is first asked for (import fulmen stays fast)
_LAZY: dict[str, str] = {
    "CometLogger": "fulmen.loggers.comet",
    "MLFlowLogger": "fulmen.loggers.mlflow",
    "WandbLogger": "fulmen.loggers.wandb",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "CSVLogger",
    "CometLogger",
    "LitLogger",
    "Logger",
    "MLFlowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "default_logger",
    "rank_zero_experiment",
]


def default_logger(root_dir: str) -> Any:
    """The logger used when `logger=True`: TensorBoard if installed, else CSV, under `<root>/lightning_logs/`."""
    if importlib.util.find_spec("tensorboard") is not None:
        return TensorBoardLogger(save_dir=root_dir, name="lightning_logs")
    return CSVLogger(save_dir=root_dir, name="lightning_logs")

"""ModelSummary: a table of the module's layers, parameter counts and estimated size at fit start."""

from __future__ import annotations

from typing import Any

from fulmen.callbacks.callback import Callback
from fulmen.utilities import rank_zero_info
from fulmen.utilities.model_summary import ModelSummary as Summary
from fulmen.utilities.model_summary import summarize

__all__ = ["ModelSummary", "summarize"]


class ModelSummary(Callback):
    """Prints the layer table when fit starts (`max_depth` levels of submodules; -1 for all)."""

    def __init__(self, max_depth: int = 1) -> None:
        self._max_depth = max_depth
        self.summary: Summary | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.is_global_zero:
            return
        self.summary = Summary(pl_module, self._max_depth)
        rank_zero_info(str(self.summary))

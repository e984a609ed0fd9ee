"""FSDP: placeholder while the sharded strategy is written."""

from __future__ import annotations

from typing import Any

from fulmen.strategies.ddp import DDPStrategy


class FSDPStrategy(DDPStrategy):
    """Fully sharded data parallel (not finished)."""

    strategy_name = "fsdp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("strategy='fsdp' is not finished yet; use strategy='ddp'.")

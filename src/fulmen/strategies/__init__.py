"""Strategies: how and where the module trains (one device, many processes, sharded)."""

from __future__ import annotations

import torch

from fulmen.accelerators import Accelerator
from fulmen.precision import Precision
from fulmen.strategies.strategy import SingleDeviceStrategy, Strategy
from fulmen.utilities import MisconfigurationException

__all__ = ["SingleDeviceStrategy", "Strategy", "select_strategy"]

_STRATEGY_NAMES = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_notebook", "ddp_fork", "fsdp", "dp")


def select_strategy(
    strategy: str | Strategy,
    accelerator: Accelerator,
    devices: list[int],
    num_nodes: int,
    precision: Precision,
) -> Strategy:
    """Pick the Strategy for the flags: the one place where accelerator, devices and nodes meet."""
    device_objs = accelerator.parallel_devices(devices)
    if isinstance(strategy, Strategy):
        strategy.accelerator = strategy.accelerator or accelerator
        strategy.precision_plugin = precision
        return strategy
    name = str(strategy).lower()
    if name not in _STRATEGY_NAMES:
        raise MisconfigurationException(
            f"strategy={strategy!r} is not valid; use one of {list(_STRATEGY_NAMES)}."
        )
    multi = len(devices) > 1 or num_nodes > 1
    if name in ("auto", "single_device") and not multi:
        device = device_objs[0] if accelerator.name != "cpu" else torch.device("cpu")
        return SingleDeviceStrategy(accelerator, device, precision)
    raise NotImplementedError(
        f"strategy={name!r} with devices={devices} and num_nodes={num_nodes} needs distributed training, "
        "which this version of fulmen does not have yet; use devices=1."
    )

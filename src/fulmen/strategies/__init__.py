"""Strategies: how and where the module trains (one device, many processes, sharded)."""

from __future__ import annotations

import sys
from typing import Any

import torch

from fulmen.accelerators import Accelerator
from fulmen.checkpoint_io import CheckpointIO
from fulmen.environments import ClusterEnvironment
from fulmen.layer_sync import LayerSync
from fulmen.out_of_scope import raise_for_flag
from fulmen.precision import Precision
from fulmen.strategies.strategy import ParallelStrategy, SingleDeviceStrategy, Strategy
from fulmen.utilities import MisconfigurationException
from fulmen.utilities.lazy import lazy_names

__all__ = [
    "DDPSpawnStrategy",
    "DDPStrategy",
    "FSDPStrategy",
    "ParallelStrategy",
    "SingleDeviceStrategy",
    "Strategy",
    "select_strategy",
]

# name -> (start method, extra DistributedDataParallel arguments)
_DDP_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "ddp": ("popen", {}),
    "ddp_find_unused_parameters_true": ("popen", {"find_unused_parameters": True}),
    "ddp_find_unused_parameters_false": ("popen", {"find_unused_parameters": False}),
    "ddp_spawn": ("spawn", {}),
    "ddp_spawn_find_unused_parameters_true": ("spawn", {"find_unused_parameters": True}),
    "ddp_fork": ("fork", {}),
    "ddp_fork_find_unused_parameters_true": ("fork", {"find_unused_parameters": True}),
    "ddp_notebook": ("fork", {}),
}
_REMOVED = {
    "dp": "DataParallel (strategy='dp') was removed in Lightning 2.0; use strategy='ddp'.",
    "ddp2": "strategy='ddp2' was removed in Lightning 2.0; use strategy='ddp'.",
    "ddp_sharded": "strategy='ddp_sharded' (fairscale) was removed in Lightning 2.0; use strategy='fsdp'.",
}
_STRATEGY_NAMES = ("auto", "single_device", *_DDP_NAMES, "fsdp")


# the distributed strategies import torch.distributed: load them on first use only
_LAZY: dict[str, str] = {
    "DDPStrategy": "fulmen.strategies.ddp",
    "DDPSpawnStrategy": "fulmen.strategies.ddp",
    "FSDPStrategy": "fulmen.strategies.fsdp",
    "DeepSpeedStrategy": "fulmen.out_of_scope",
    "ModelParallelStrategy": "fulmen.out_of_scope",
    "XLAStrategy": "fulmen.out_of_scope",
}
__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


def select_strategy(
    strategy: str | Strategy,
    accelerator: Accelerator,
    devices: list[int],
    num_nodes: int,
    precision: Precision,
    cluster_environment: Any = None,
) -> Strategy:
    """Pick the Strategy for the flags: the one place where accelerator, devices and nodes meet.

    `cluster_environment` (from `Trainer(plugins=...)`) replaces the detected one in a distributed strategy.
    """
    device_objs = accelerator.parallel_devices(devices)
    if isinstance(strategy, Strategy):
        strategy.accelerator = strategy.accelerator or accelerator
        strategy.precision_plugin = precision
        if cluster_environment is not None and getattr(strategy, "cluster_environment", None) is None:
            strategy.cluster_environment = cluster_environment  # type: ignore[attr-defined]
        connect = getattr(strategy, "connect_flags", None)
        if connect is not None:  # a distributed strategy built by the user: give it devices and nodes
            connect(accelerator, device_objs, num_nodes)
        return strategy
    raise_for_flag("strategy", strategy)
    name = str(strategy).lower()
    if name in _REMOVED:
        raise MisconfigurationException(_REMOVED[name])
    if name not in _STRATEGY_NAMES:
        raise MisconfigurationException(
            f"strategy={strategy!r} is not valid; use one of {list(_STRATEGY_NAMES)}."
        )
    multi = len(devices) > 1 or num_nodes > 1
    if accelerator.name == "tpu":
        if multi or name not in ("auto", "single_device"):
            raise MisconfigurationException(
                f"On TPUs fulmen runs one process on one device for now (got strategy={strategy!r}, "
                f"devices={devices}, num_nodes={num_nodes}); use devices=1."
            )
        from fulmen.strategies.xla import SingleDeviceXLAStrategy

        return SingleDeviceXLAStrategy(device_objs[0], accelerator, precision)
    if name in ("auto", "single_device") and not multi:
        device = device_objs[0] if accelerator.name != "cpu" else torch.device("cpu")
        return SingleDeviceStrategy(device, accelerator, precision)
    if name == "single_device":
        raise MisconfigurationException(
            f"strategy='single_device' runs one process, but devices={devices} and num_nodes={num_nodes} ask for "
            "more; use strategy='ddp' (or 'auto'), or devices=1."
        )
    if name == "auto":
        name = "ddp_fork" if _interactive() else "ddp"
    if name == "fsdp":
        from fulmen.strategies.fsdp import FSDPStrategy

        return FSDPStrategy(
            accelerator=accelerator,
            parallel_devices=device_objs,
            num_nodes=num_nodes,
            precision=precision,
            cluster_environment=cluster_environment,
        )
    from fulmen.strategies.ddp import DDPStrategy

    start_method, ddp_kwargs = _DDP_NAMES[name]
    return DDPStrategy(
        accelerator=accelerator,
        parallel_devices=device_objs,
        num_nodes=num_nodes,
        precision=precision,
        cluster_environment=cluster_environment,
        start_method=start_method,
        **ddp_kwargs,
    )


PRECISION_TWICE = "The precision was given twice (in `plugins=` and/or `precision=`); pass exactly one."

# the kinds `Trainer(plugins=...)` sorts its objects into (each configures the strategy selected above),
# each by the base class that makes it one
_KINDS: tuple[tuple[str, type], ...] = (
    ("precision", Precision),
    ("checkpoint_io", CheckpointIO),
    ("cluster_environment", ClusterEnvironment),
    ("layer_sync", LayerSync),
)


def sort_plugins(plugins: Any) -> dict[str, Any]:
    """The objects of `Trainer(plugins=...)` by kind: precision, checkpoint_io, cluster_environment, layer_sync."""
    items = [] if plugins is None else plugins if isinstance(plugins, (list, tuple)) else [plugins]
    found: dict[str, Any] = {}
    for plugin in items:
        kind = next((name for name, cls in _KINDS if isinstance(plugin, cls)), None)
        if kind is None:
            raise MisconfigurationException(
                f"Trainer(plugins=...) got {plugin!r}, which is not a plugin: pass Precision, CheckpointIO, "
                "ClusterEnvironment or LayerSync objects (from fulmen.plugins)."
            )
        if kind in found:
            names = [type(found[kind]).__name__, type(plugin).__name__]
            if kind == "checkpoint_io":
                raise MisconfigurationException(
                    f"Trainer(plugins=...) got several checkpoint I/O plugins {names}; pass one (wrap one in "
                    "another, e.g. AsyncCheckpointIO(MyCheckpointIO()), to combine them)."
                )
            if kind == "precision":
                raise MisconfigurationException(PRECISION_TWICE)
            raise MisconfigurationException(f"Trainer(plugins=...) got two {kind} plugins {names}; pass one.")
        found[kind] = plugin
    return found


def _interactive() -> bool:
    """True in a notebook or a REPL, where there is no script to re-run."""
    import __main__

    return hasattr(sys, "ps1") or not hasattr(__main__, "__file__")

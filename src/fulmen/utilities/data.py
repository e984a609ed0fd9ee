"""Data questions that depend on the machine: how many loader workers fit, whether ranks share a disk."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from fulmen.utilities import extract_batch_size

__all__ = ["extract_batch_size", "is_shared_filesystem", "suggested_max_num_workers"]


def _num_cpus_available() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # the cores this process may run on, not the machine's
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for `DataLoader(num_workers=...)`: this machine's cores per local process, minus one.

    Args:
        local_world_size: the number of training processes on this machine (the Trainer's `devices`).
    """
    if local_world_size < 1:
        raise ValueError(f"suggested_max_num_workers(local_world_size={local_world_size}): must be >= 1.")
    # one core per process stays with the training loop itself
    return max(1, _num_cpus_available() // local_world_size - 1)


def is_shared_filesystem(strategy: Any, path: str | Path | None = None, timeout: int = 3) -> bool:
    """True when every process of `strategy` sees the same files under `path` (default: the working directory).

    Rank 0 writes a marker file; every rank looks for it for up to `timeout` seconds; the answer is True
    only when all of them found it. Call it on every rank (it holds barriers). One process: always True.
    """
    if strategy.world_size == 1:
        return True
    folder = Path(path if path is not None else os.getcwd())
    name = strategy.broadcast(
        f".fulmen_shared_fs_check_{uuid.uuid4().hex}" if strategy.is_global_zero else None
    )
    marker = folder / name
    if strategy.is_global_zero:
        marker.touch()
    strategy.barrier()
    deadline = time.monotonic() + timeout
    found = marker.exists()
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = marker.exists()
    shared = strategy.reduce_boolean_decision(found, all=True)
    strategy.barrier()
    if strategy.is_global_zero:
        marker.unlink(missing_ok=True)
    return shared

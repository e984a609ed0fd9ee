"""Seeding every random number generator a training run touches."""

from __future__ import annotations

import os
import random

import torch

from fulmen.utilities import rank_zero_info


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python, numpy and torch (CPU and CUDA); with `workers=True` dataloader workers are seeded too.

    Returns:
        The seed used (read from ``PL_GLOBAL_SEED`` or 0 when `seed` is None).
    """
    if seed is None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    seed = int(seed)
    if not (0 <= seed <= 2**32 - 1):
        raise ValueError(f"seed_everything: {seed} is out of range; use an integer in [0, 2**32 - 1]")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)
    if verbose:
        rank_zero_info(f"Seed set to {seed}")
    return seed


def worker_init_fn(worker_id: int) -> None:
    """Derive distinct python/numpy seeds for a dataloader worker from torch's per-worker seed."""
    base = torch.initial_seed() % 2**32
    random.seed(base)
    try:
        import numpy as np

        np.random.seed(base)
    except ImportError:
        pass

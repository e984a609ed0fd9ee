"""Seeding every random number generator a training run touches, and capturing/restoring their states."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Generator
from typing import Any

import torch

from fulmen.utilities import MisconfigurationException, rank_zero_info, rank_zero_warn


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


def rng_states() -> dict[str, Any]:
    """The python, numpy (if imported), torch CPU and CUDA (if initialized) RNG states, as plain data."""
    version, internal, gauss = random.getstate()
    # the 625 words of Python's Mersenne Twister as one tensor: pickling 625 ints costs a millisecond
    words = torch.tensor(internal, dtype=torch.int64)
    state: dict[str, Any] = {"python": [version, words, gauss], "torch": torch.get_rng_state()}
    np = sys.modules.get("numpy")
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    version, internal, gauss = state["python"]
    # a tensor since the words are stored as one; older fulmen files hold a list
    words = internal.tolist() if isinstance(internal, torch.Tensor) else internal
    random.setstate((version, tuple(words), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolate_rng(include_cuda: bool = True) -> Generator[None, None, None]:
    """Run the block, then put the Python, NumPy and torch (CPU, and CUDA if asked) generators back.

    Random numbers drawn inside the block do not change what is drawn after it:
    ``with isolate_rng(): torch.rand(1)`` leaves ``torch.rand`` where it was.
    """
    state = rng_states()
    if not include_cuda:
        state.pop("cuda", None)
    try:
        yield
    finally:
        set_rng_states(state)


def set_determinism(deterministic: bool | str | None, benchmark: bool | None) -> None:
    """Apply `Trainer(deterministic=..., benchmark=...)` to torch's algorithm choice and cuDNN."""
    if deterministic is not None and deterministic not in (True, False, "warn"):
        raise MisconfigurationException(
            f"deterministic={deterministic!r} is not valid; use True, False or 'warn'."
        )
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    elif deterministic is False:
        torch.use_deterministic_algorithms(False)
    if benchmark is not None:
        if benchmark and deterministic:
            rank_zero_warn("benchmark=True and deterministic=True conflict; deterministic wins.")
        else:
            torch.backends.cudnn.benchmark = benchmark

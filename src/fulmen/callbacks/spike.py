"""SpikeDetection: stop training when the loss jumps away from its recent mean, and say which batches to skip.

After each training batch the loss is compared with the mean of the last `window` accepted losses. It
is a spike when it is not an improvement on the previous loss and differs from that mean by at least
`atol` (if set) and by at least `rtol` times the mean (if set); a NaN/inf loss is a spike when
`finite_only`. On a spike the callback records that batch and the one before it in a JSON file (so a
resumed run can skip them) and raises `TrainingSpikeException`.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

import torch

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException

Trainer = Any
Module = Any


class TrainingSpikeException(RuntimeError):
    """Raised by SpikeDetection when the training loss spiked."""

    def __init__(self, batch_idx: int, *args: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args)
        self.batch_idx = batch_idx


class SpikeDetection(Callback):
    """Raise `TrainingSpikeException` when the training loss spikes (see the module docstring).

    Args:
        mode: "min" when a lower loss is better, "max" otherwise.
        window: how many recent losses the reference mean covers.
        warmup: batches at the start of each epoch (by `batch_idx`) that are never called a spike.
        atol: the smallest absolute distance from the mean that counts as a spike (None: no condition).
        rtol: the smallest distance from the mean, relative to the mean, that counts (None: no condition).
        exclude_batches_path: the JSON file (or its folder) listing the batches to skip; defaults to
            `<default_root_dir>/skip_batches.json`.
        finite_only: treat a NaN or infinite loss as a spike.
    """

    def __init__(
        self,
        mode: Literal["min", "max"] = "min",
        window: int = 10,
        warmup: int = 1,
        atol: float | None = None,
        rtol: float | None = 2.0,
        exclude_batches_path: str | os.PathLike[str] | None = None,
        finite_only: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(
                f"SpikeDetection(mode={mode!r}) is not valid; use 'min' or 'max'."
            )
        if window < 1:
            raise MisconfigurationException(f"SpikeDetection(window={window}) is not valid; use an int >= 1.")
        self.mode = mode
        self.window = window
        self.warmup = warmup
        self.atol = atol
        self.rtol = rtol
        self.exclude_batches_path = exclude_batches_path
        self.finite_only = finite_only
        self.last_val = 0.0
        self.bad_batches: list[int] = []
        self._recent: deque[float] = deque(maxlen=window)

    @property
    def running_mean(self) -> float:
        """The mean of the last `window` accepted losses (NaN before the first)."""
        return sum(self._recent) / len(self._recent) if self._recent else math.nan

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Check this batch's loss; on a spike write the skip file and raise."""
        if isinstance(outputs, torch.Tensor):
            loss = outputs
        elif isinstance(outputs, Mapping) and "loss" in outputs:
            loss = outputs["loss"]
        else:
            raise TypeError(
                f"SpikeDetection reads the loss from training_step's output, a tensor or a dict with 'loss'; "
                f"got {type(outputs).__qualname__}."
            )
        value = float(loss.detach().float().mean())  # one host read per batch: the check needs the number
        spike = batch_idx >= self.warmup and self._is_spike(value)
        spike = trainer.strategy.reduce_boolean_decision(spike, all=False)
        if spike:
            self._handle_spike(trainer, batch_idx)
        if self.finite_only or math.isfinite(value):
            self._recent.append(value)
            self.last_val = value

    def _is_spike(self, value: float) -> bool:
        if not math.isfinite(value):
            return self.finite_only
        change = value - self.last_val
        if (change <= 0.0) if self.mode == "min" else (change >= 0.0):
            return False  # an improvement on the previous loss is never a spike
        mean = self.running_mean
        distance = abs(value - mean)
        # with no history the mean is NaN and a set tolerance never holds (comparisons with NaN are False)
        atol_ok = self.atol is None or distance >= abs(self.atol)
        rtol_ok = self.rtol is None or distance >= abs(self.rtol * mean)
        return atol_ok and rtol_ok

    def _handle_spike(self, trainer: Trainer, batch_idx: int) -> None:
        # the previous batch may have pushed the weights to where this one blew up: skip both
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        path = os.fspath(self.exclude_batches_path or trainer.default_root_dir)
        if not path.endswith(".json"):
            path = os.path.join(path, "skip_batches.json")
        self.exclude_batches_path = path
        if trainer.is_global_zero:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as f:
                json.dump(self.bad_batches, f, indent=4)
        raise TrainingSpikeException(batch_idx=batch_idx)

    def state_dict(self) -> dict[str, Any]:
        """The reference losses and the batches marked so far."""
        return {
            "last_val": self.last_val,
            "recent": list(self._recent),
            "bad_batches": list(self.bad_batches),
            "bad_batches_path": None
            if self.exclude_batches_path is None
            else os.fspath(self.exclude_batches_path),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.last_val = state_dict["last_val"]
        self._recent = deque(state_dict.get("recent", []), maxlen=self.window)
        self.bad_batches = list(state_dict.get("bad_batches", []))
        self.exclude_batches_path = state_dict.get("bad_batches_path", self.exclude_batches_path)

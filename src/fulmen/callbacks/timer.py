"""Timer: measure time spent in each stage and stop training when a time budget is spent."""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

from fulmen.callbacks.callback import Callback
from fulmen.flags import parse_max_time
from fulmen.utilities import MisconfigurationException, rank_zero_info

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

_STAGES = ("train", "validate", "test", "predict")


class Timer(Callback):
    """Track the wall-clock time of train/validate/test/predict and stop fit once `duration` has passed.

    Args:
        duration: the training budget: "DD:HH:MM:SS", a ``datetime.timedelta``, a dict like
            ``{"hours": 2}``, or None to only measure.
        interval: check the budget after every "step" (default) or at every "epoch" end.
        verbose: print a line when the budget stops training.

    The elapsed training time is saved in checkpoints, so a resumed run keeps counting from there.
    """

    def __init__(self, duration: Any = None, interval: str = "step", verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(
                f"Timer(interval={interval!r}) is not valid; use 'step' or 'epoch'."
            )
        budget = parse_max_time(duration)
        self._duration = budget.total_seconds() if budget is not None else None
        self._interval = interval
        self._verbose = verbose
        self._start: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._end: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._offset = 0.0  # training seconds from before a resume

    def start_time(self, stage: str = "train") -> float | None:
        """When `stage` last started (``time.monotonic()`` seconds), or None."""
        return self._start[_check(stage)]

    def end_time(self, stage: str = "train") -> float | None:
        """When `stage` last ended, or None while it runs or before it ran."""
        return self._end[_check(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in `stage` (training time includes time before a resume)."""
        start, end = self._start[_check(stage)], self._end[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + (end if end is not None else time.monotonic()) - start

    def time_remaining(self, stage: str = "train") -> float | None:
        """Seconds left of `duration`, or None without one."""
        if self._duration is None:
            return None
        return self._duration - self.time_elapsed(stage)

    def _begin(self, stage: str) -> None:
        self._start[stage] = time.monotonic()
        self._end[stage] = None

    def _finish(self, stage: str) -> None:
        self._end[stage] = time.monotonic()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop at once when a resumed run's budget is already spent."""
        if self._duration is not None:
            self._check_time(trainer)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._begin("train")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._finish("train")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._begin("validate")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._finish("validate")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._begin("test")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._finish("test")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._begin("predict")

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._finish("predict")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """With interval="step", stop once the budget is spent."""
        if self._interval == "step" and self._duration is not None:
            self._check_time(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """With interval="epoch", stop once the budget is spent."""
        if self._interval == "epoch" and self._duration is not None:
            self._check_time(trainer)

    def _check_time(self, trainer: Trainer) -> None:
        assert self._duration is not None
        over = self.time_elapsed("train") >= self._duration
        over = bool(trainer.strategy.broadcast(over))  # every process stops together
        if over and not trainer.should_stop:
            trainer.should_stop = True
            if self._verbose:
                spent = datetime.timedelta(seconds=round(self.time_elapsed("train")))
                rank_zero_info(f"Timer: the time budget is spent ({spent}); stopping training.")

    def state_dict(self) -> dict[str, Any]:
        """Seconds elapsed per stage, so that a resumed run keeps counting."""
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Carry the saved training time into this run."""
        self._offset = float(state_dict.get("time_elapsed", {}).get("train", 0.0))


def _check(stage: str) -> str:
    if stage not in _STAGES:
        raise MisconfigurationException(f"Timer: unknown stage {stage!r}; use one of {list(_STAGES)}.")
    return stage

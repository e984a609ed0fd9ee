"""GradientAccumulationScheduler: change how many batches are accumulated per optimizer step, by epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    """Set `trainer.accumulate_grad_batches` at the start of each epoch from a schedule.

    Args:
        scheduling: ``{epoch: factor}``, epochs counted from 0. ``{0: 1, 4: 2, 8: 4}`` accumulates
            nothing for epochs 0-3, two batches for epochs 4-7 and four from epoch 8 on. Epochs before the
            first key use 1.
    """

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not scheduling:
            raise MisconfigurationException(
                "GradientAccumulationScheduler needs a non-empty schedule, e.g. {0: 1, 4: 2}."
            )
        for epoch, factor in scheduling.items():
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise MisconfigurationException(
                    f"GradientAccumulationScheduler: epoch key {epoch!r} is not valid; use ints >= 0 "
                    "(epochs count from 0)."
                )
            if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
                raise MisconfigurationException(
                    f"GradientAccumulationScheduler: factor {factor!r} for epoch {epoch} is not valid; use "
                    "an int >= 1."
                )
        self.scheduling = dict(sorted({0: 1, **scheduling}.items()))
        self._last_set: int | None = None

    def going_to_accumulate_grad_batches(self) -> bool:
        """True when some epoch of the schedule accumulates more than one batch."""
        return any(f > 1 for f in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The factor that applies to `epoch`."""
        factor = 1
        for start, value in self.scheduling.items():
            if start <= epoch:
                factor = value
        return factor

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuse manual optimization and a conflicting Trainer(accumulate_grad_batches=...)."""
        if not pl_module.automatic_optimization:
            raise MisconfigurationException(
                "GradientAccumulationScheduler works with automatic optimization only; with "
                "`automatic_optimization = False` accumulate in your training_step instead."
            )
        if trainer.accumulate_grad_batches not in (1, self._last_set):
            raise MisconfigurationException(
                f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) and "
                "GradientAccumulationScheduler both set the accumulation; remove one of them."
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Apply this epoch's factor."""
        self._last_set = self.get_accumulate_grad_batches(trainer.current_epoch)
        trainer.accumulate_grad_batches = self._last_set

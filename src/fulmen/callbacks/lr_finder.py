"""LearningRateFinder: run `Tuner.lr_find` at the start of fit and train with the suggestion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fulmen.callbacks.callback import Callback
from fulmen.tuner import _lr_find
from fulmen.utilities import rank_zero_info

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class LearningRateFinder(Callback):
    """Sweep the learning rate before training, set the suggestion and rebuild the optimizer with it.

    The model must keep its learning rate in ``lr``/``learning_rate`` (or `attr_name`), as an attribute
    or in hparams, and read it in ``configure_optimizers``. The sweep is in ``self.optimal_lr`` (an
    `LRFinder`: ``.results``, ``.suggestion()``, ``.plot()``). It is skipped when fit resumes from a
    checkpoint.

    Args: as `Tuner.lr_find` (``num_training_steps`` is its ``num_training``).
    """

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        self._min_lr = min_lr
        self._max_lr = max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr = update_attr
        self._attr_name = attr_name
        self.optimal_lr: Any = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Sweep (unless resuming), then rebuild the optimizers so that they use the new rate."""
        if trainer.global_step > 0:
            rank_zero_info("LearningRateFinder: fit resumes from a checkpoint; keeping its learning rate.")
            return
        self.lr_find(trainer, pl_module)
        if self._update_attr and self.optimal_lr is not None and self.optimal_lr.suggestion() is not None:
            trainer.strategy.setup_optimizers(trainer)

    def lr_find(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the sweep on this fit's data."""

        self.optimal_lr = _lr_find(
            trainer,
            pl_module,
            trainer.fit_loop.explicit_train,
            trainer.fit_loop.val_loop.explicit,
            trainer.datamodule,
            min_lr=self._min_lr,
            max_lr=self._max_lr,
            num_training=self._num_training_steps,
            mode=self._mode,
            early_stop_threshold=self._early_stop_threshold,
            update_attr=self._update_attr,
            attr_name=self._attr_name,
        )

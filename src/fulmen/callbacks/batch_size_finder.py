"""BatchSizeFinder: scale the batch size at the start of fit, as `Tuner.scale_batch_size` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fulmen.callbacks.callback import Callback
from fulmen.tuner import _scale_batch_size
from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class BatchSizeFinder(Callback):
    """Find the largest batch size that fits before training starts (see `fulmen.tuner.Tuner`).

    The batch size must be read from an attribute (`batch_arg_name`) of the model, its hparams, the
    datamodule or its hparams by the ``*_dataloader()`` methods. The size found is in
    ``self.optimal_batch_size`` and on that attribute, and the fit that follows uses it: its dataloaders
    are reloaded and its optimizers rebuilt (so that a schedule sized with
    ``trainer.estimated_stepping_batches`` matches the new number of steps).

    Args:
        mode: "power" (double until out of memory) or "binsearch" (then bisect).
        steps_per_trial: training steps per tried size.
        init_val: the first size tried.
        max_trials: the most sizes tried.
        batch_arg_name: the attribute that holds the batch size.
        max_val: the largest size tried.
    """

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        max_val: int = 8192,
    ) -> None:
        if mode not in ("power", "binsearch"):
            raise MisconfigurationException(
                f"BatchSizeFinder(mode={mode!r}) is not valid; use 'power' or 'binsearch'."
            )
        self.mode = mode
        self.steps_per_trial = steps_per_trial
        self.init_val = init_val
        self.max_trials = max_trials
        self.batch_arg_name = batch_arg_name
        self.max_val = max_val
        self.optimal_batch_size: int | None = init_val

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Scale, then make the fit reload its dataloaders with the new size."""
        self.scale_batch_size(trainer, pl_module)

    def scale_batch_size(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the search for this fit's model and datamodule."""

        loop = trainer.fit_loop
        if loop.explicit_train is not None or loop.val_loop.explicit is not None:
            raise MisconfigurationException(
                "BatchSizeFinder cannot change the batch size of DataLoaders passed to fit() directly; build "
                f"them in *_dataloader() from `self.{self.batch_arg_name}` instead."
            )
        self.optimal_batch_size = _scale_batch_size(
            trainer,
            pl_module,
            trainer.datamodule,
            method="fit",
            mode=self.mode,
            steps_per_trial=self.steps_per_trial,
            init_val=self.init_val,
            max_trials=self.max_trials,
            batch_arg_name=self.batch_arg_name,
            max_val=self.max_val,
        )
        # configure_optimizers may have loaded the data already (estimated_stepping_batches): reload it,
        # and rebuild the optimizers so that schedulers sized from the number of steps see the new size.
        loop.train_dataloader = None
        if loop.val_loop.dataloaders:
            loop.val_loop.setup_data(reload=True)
        if trainer.global_step == 0:
            trainer.strategy.setup_optimizers(trainer)

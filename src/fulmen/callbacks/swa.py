"""StochasticWeightAveraging: average the weights of the last epochs, on torch.optim.swa_utils."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fulmen.callbacks.callback import Callback
from fulmen.optim import LRSchedulerConfig
from fulmen.utilities import MisconfigurationException, rank_zero_info

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class StochasticWeightAveraging(Callback):
    """Keep a running average of the weights from epoch `swa_epoch_start` on, and end fit with it.

    From `swa_epoch_start` the optimizer's learning rate is annealed to `swa_lrs` by ``SWALR`` (it
    replaces the module's schedulers), the averaged copy is updated at the end of every epoch, and when
    training ends the averaged weights are copied into the module (BatchNorm statistics are recomputed
    with one pass over the train data if the module has BatchNorm layers).

    Args:
        swa_lrs: the SWA learning rate, one float for all param groups or a list with one per group.
        swa_epoch_start: first averaged epoch: an int (epoch index) or a float in (0, 1) (a fraction of
            ``max_epochs``).
        annealing_epochs: epochs SWALR takes to reach `swa_lrs`.
        annealing_strategy: "cos" or "linear".
        avg_fn: ``avg_fn(averaged_param, current_param, num_averaged)``; default: the equal-weight mean.
        device: where the averaged copy lives (default CPU, to spare accelerator memory; None: the
            module's device).
    """

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: str = "cos",
        avg_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | int], torch.Tensor] | None = None,
        device: torch.device | str | None = torch.device("cpu"),
    ) -> None:
        lrs = swa_lrs if isinstance(swa_lrs, (list, tuple)) else [swa_lrs]
        if not lrs or not all(isinstance(lr, (int, float)) and lr > 0 for lr in lrs):
            raise MisconfigurationException(
                f"StochasticWeightAveraging(swa_lrs={swa_lrs!r}) is not valid; use a positive float or a "
                "list of them (one per param group)."
            )
        if isinstance(swa_epoch_start, float) and not 0.0 < swa_epoch_start < 1.0:
            raise MisconfigurationException(
                f"StochasticWeightAveraging(swa_epoch_start={swa_epoch_start}) is not valid: a float must be "
                "a fraction of max_epochs in (0, 1); use an int for an epoch index."
            )
        if isinstance(swa_epoch_start, int) and swa_epoch_start < 0:
            raise MisconfigurationException(
                f"StochasticWeightAveraging(swa_epoch_start={swa_epoch_start}) is not valid; use an int >= 0."
            )
        if annealing_strategy not in ("cos", "linear"):
            raise MisconfigurationException(
                f"StochasticWeightAveraging(annealing_strategy={annealing_strategy!r}) is not valid; use "
                "'cos' or 'linear'."
            )
        self._swa_lrs = [float(lr) for lr in lrs]
        self._swa_epoch_start = swa_epoch_start
        self._annealing_epochs = int(annealing_epochs)
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn
        self._device = device
        self._average_model: torch.optim.swa_utils.AveragedModel | None = None
        self.swa_start = 0
        self.swa_end = 0
        self.n_averaged = 0
        self._restored_average: dict[str, Any] | None = None

    @property
    def average_model(self) -> nn.Module | None:
        """The averaged copy of the module (an ``AveragedModel``), once fit has started."""
        return self._average_model

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Work out the averaged epochs and create the averaged copy."""
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException(
                f"StochasticWeightAveraging supports one optimizer; configure_optimizers returned "
                f"{len(trainer.optimizers)}."
            )
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            raise MisconfigurationException(
                "StochasticWeightAveraging needs a finite Trainer(max_epochs=...) to know which epochs to average."
            )
        start = self._swa_epoch_start
        self.swa_start = int(start * max_epochs) if isinstance(start, float) else int(start)
        self.swa_end = max_epochs - 1
        if self.swa_start > self.swa_end:
            raise MisconfigurationException(
                f"StochasticWeightAveraging would start at epoch {self.swa_start}, after the last epoch "
                f"({self.swa_end}); lower swa_epoch_start or raise max_epochs."
            )
        device = torch.device(self._device) if self._device is not None else pl_module.device
        self._average_model = torch.optim.swa_utils.AveragedModel(
            _copy_without_trainer(pl_module), device=device, avg_fn=self._avg_fn, use_buffers=False
        )
        if self._restored_average is not None:
            self._average_model.load_state_dict(self._restored_average)
            self._restored_average = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """At the first averaged epoch, hand the learning rate over to SWALR."""
        if trainer.current_epoch != self.swa_start:
            return
        optimizer = trainer.optimizers[0]
        groups = optimizer.param_groups
        lrs = self._swa_lrs * len(groups) if len(self._swa_lrs) == 1 else self._swa_lrs
        if len(lrs) != len(groups):
            raise MisconfigurationException(
                f"StochasticWeightAveraging got {len(self._swa_lrs)} swa_lrs for {len(groups)} param groups; "
                "give one value, or one per group."
            )
        for group in groups:
            group.pop("initial_lr", None)  # SWALR starts from the current learning rate
        scheduler = torch.optim.swa_utils.SWALR(
            optimizer,
            swa_lr=lrs,  # type: ignore[arg-type]  # one per param group is accepted
            anneal_epochs=max(1, self._annealing_epochs),
            anneal_strategy=self._annealing_strategy,  # type: ignore[arg-type]
        )

        configs = trainer.lr_scheduler_configs
        if configs:
            rank_zero_info(
                f"StochasticWeightAveraging: SWALR replaces {len(configs)} scheduler(s) from epoch {self.swa_start}."
            )
        configs[:] = [LRSchedulerConfig(scheduler=scheduler, interval="epoch")]

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Add this epoch's weights to the average."""
        if self._average_model is not None and self.swa_start <= trainer.current_epoch <= self.swa_end:
            self._average_model.update_parameters(pl_module)
            self.n_averaged += 1

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Copy the averaged weights into the module (and refresh BatchNorm statistics)."""
        if self._average_model is None or self.n_averaged == 0:
            return
        averaged = self._average_model.module
        with torch.no_grad():
            for target, source in zip(pl_module.parameters(), averaged.parameters()):
                target.copy_(source.to(target.device))
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules()):
            loader = trainer.train_dataloader
            if loader is not None:
                _refresh_batchnorm(trainer, pl_module, loader)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and how many epochs they hold."""
        if self._average_model is None:
            return {}
        return {"n_averaged": self.n_averaged, "average_model_state": self._average_model.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the average (applied when fit starts)."""
        self.n_averaged = int(state_dict.get("n_averaged", 0))
        self._restored_average = state_dict.get("average_model_state")


def _copy_without_trainer(module: LightningModule) -> nn.Module:
    """A deep copy of the module's layers, leaving out its reference to the Trainer."""
    trainer = module._trainer
    module._trainer = None
    try:
        return copy.deepcopy(module)
    finally:
        module._trainer = trainer


def _refresh_batchnorm(trainer: Trainer, module: LightningModule, loader: Any) -> None:
    """Recompute BatchNorm running statistics for the averaged weights with one pass over `loader`."""
    limit = trainer.num_training_batches

    def batches() -> Any:
        for i, batch in enumerate(loader):
            if i >= limit:
                return
            batch = trainer.fit_loop.plan.transfer(batch, 0)
            yield batch[0] if isinstance(batch, (list, tuple)) else batch

    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches(), module, device=None)

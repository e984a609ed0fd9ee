"""WeightAveraging / EMAWeightAveraging: keep an average of the weights (torch.optim.swa_utils.AveragedModel).

The average is updated after optimizer steps (and/or epochs) chosen by `should_update`. Validation
runs with the averaged weights (they are swapped in for the epoch and swapped back after), training
ends with them copied into the module, and checkpoints store the averaged weights under `state_dict`
(so `load_from_checkpoint` gives the averaged model) with the training weights under
`current_model_state`, from which a resumed run continues.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Generator
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from fulmen.callbacks.callback import Callback
from fulmen.module import LightningModule
from fulmen.utilities import is_overridden, rank_zero_info, rank_zero_warn

Trainer = Any
Module = Any


@contextlib.contextmanager
def _detached(pl_module: Module) -> Generator[None, None, None]:
    """The module without its trainer reference, so that AveragedModel's deepcopy copies the model only."""
    trainer = pl_module.__dict__.get("_trainer")
    pl_module.__dict__["_trainer"] = None
    try:
        yield
    finally:
        pl_module.__dict__["_trainer"] = trainer


class WeightAveraging(Callback):
    """Average the module's weights during training with `torch.optim.swa_utils.AveragedModel`.

    The default `should_update` updates after every optimizer step with an equal-weight average (SWA);
    pass `avg_fn` / `multi_avg_fn` (see AveragedModel) or override `should_update` to change that.

    Args:
        device: where the averaged copy lives; defaults to the module's device (use "cpu" to save GPU memory).
        use_buffers: average the buffers too (BatchNorm statistics); unlike AveragedModel, on by default.
        kwargs: passed on to `AveragedModel`, e.g. `avg_fn` or `multi_avg_fn`.
    """

    def __init__(
        self, device: torch.device | str | int | None = None, use_buffers: bool = True, **kwargs: Any
    ) -> None:
        self._device = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        self._latest_update_step = 0
        self._latest_update_epoch = -1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to update the average after optimizer step `step_idx` or epoch `epoch_idx` (0-based).

        Called with one of them set; the default updates after every step and never at epoch end.
        """
        return step_idx is not None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Create the averaged copy of the module when fit begins."""
        if stage != "fit":
            return

        if is_overridden("configure_model", pl_module, LightningModule):
            rank_zero_warn(
                f"{type(self).__name__}: {type(pl_module).__name__} overrides configure_model; it is called now so "
                "that the averaged copy has every layer. Weight averaging does not shard that copy."
            )
            pl_module.configure_model()
        device = self._device if self._device is not None else pl_module.device
        with _detached(pl_module):
            self._average_model = AveragedModel(
                model=pl_module, device=device, use_buffers=self._use_buffers, **self._kwargs
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Update the average after an optimizer step, when `should_update` says so."""
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Update the average at the end of an epoch, when `should_update` says so."""
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Leave the module with the averaged weights."""
        if self._average_model is not None:
            for average, current in _tensors(self._average_model.module, pl_module):
                current.data.copy_(average.data)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Validate with the averaged weights."""
        if self._average_model is not None:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Put the training weights back."""
        if self._average_model is not None:
            self._swap(pl_module)

    def _swap(self, pl_module: Module) -> None:
        assert self._average_model is not None
        for average, current in _tensors(self._average_model.module, pl_module):
            held = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(held)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The step of the last update."""
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None:
        """Save the averaged weights as `state_dict`, the training weights as `current_model_state`."""
        if self._average_model is None:
            rank_zero_info(
                f"{type(self).__name__}: a checkpoint saved outside fit holds the module's weights as they are "
                "(after fit they are the averaged ones); the averaging state is not saved."
            )
            return
        average_state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            k[len("module.") :]: v for k, v in average_state.items() if k.startswith("module.")
        }
        checkpoint["averaging_state"] = {
            k: v for k, v in average_state.items() if not k.startswith("module.")
        }

    def on_load_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None:
        """Restore the average and the training weights (or start both from a plain checkpoint's weights)."""
        if self._average_model is None:
            rank_zero_warn(
                f"{type(self).__name__}: loading a checkpoint outside fit, so the averaging state is not restored "
                "(harmless for validate/test/predict; remove the callback to silence this)."
            )
        elif "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            average_state = {"module." + k: v for k, v in checkpoint["state_dict"].items()}
            average_state.update(checkpoint["averaging_state"])
            self._average_model.load_state_dict(average_state)
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            rank_zero_warn(
                f"The checkpoint was not written with {type(self).__name__}: the average starts from its weights."
            )
            self._average_model.module.load_state_dict(checkpoint["state_dict"], strict=False)


def _tensors(average: torch.nn.Module, current: torch.nn.Module) -> Any:
    """Pairs of (averaged, current) parameters and buffers, in module order."""
    return zip(
        itertools.chain(average.parameters(), average.buffers()),
        itertools.chain(current.parameters(), current.buffers()),
    )


class EMAWeightAveraging(WeightAveraging):
    """An exponential moving average of the weights: `avg = decay * avg + (1 - decay) * weights`.

    Args:
        device: where the averaged copy lives (see WeightAveraging).
        use_buffers: average the buffers too.
        decay: the EMA decay.
        update_every_n_steps: update after every n-th optimizer step (0 or less: never after steps).
        update_starting_at_step: no step updates before this step index.
        update_starting_at_epoch: update at the end of every epoch from this one on (None: never at epoch end).
        kwargs: passed on to `AveragedModel`.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, use_buffers=use_buffers, avg_fn=get_ema_avg_fn(decay=decay), **kwargs)
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Step updates every `update_every_n_steps` from `update_starting_at_step`; epoch updates from
        `update_starting_at_epoch`."""
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            if started and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0:
                return True
        if epoch_idx is not None:
            return self.update_starting_at_epoch is not None and epoch_idx >= self.update_starting_at_epoch
        return False

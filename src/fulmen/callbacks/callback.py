"""Callback: self-contained code that the Trainer calls at each hook, before the module's own hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor
from torch.optim import Optimizer

if TYPE_CHECKING:
    from fulmen.module import LightningModule as Module
    from fulmen.trainer import Trainer


class Callback:
    """Base class: every hook does nothing until overridden. Signatures match Lightning 2.x."""

    # Callbacks that judge the epoch's metrics (checkpointing, early stopping) set this to True: their
    # `on_train_epoch_end` then runs after the module's, so they see what the module logged there.
    runs_after_module_epoch_end: ClassVar[bool] = False

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint; make it unique when several of a type exist."""
        return type(self).__qualname__

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"{type(self).__qualname__}{repr(kwargs)}"

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints under `state_key`."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    # Checkpoint targets: not hooks (no `on_` prefix), asked by the fit loop and by `trainer.fit`.
    def interrupt_checkpoint_path(self, trainer: Trainer) -> str | None:
        """Where to write a checkpoint when SIGTERM arrives during fit; None (the default): nowhere.

        While any callback overrides this, fit catches SIGTERM, writes one checkpoint to every path
        returned at the end of the current training batch, and exits with status 0 (see preemption.py).
        """
        return None

    def interrupt_checkpoint_saved(self, trainer: Trainer, path: str) -> None:
        """Called once the SIGTERM checkpoint was written to `path` (the one `interrupt_checkpoint_path` gave)."""

    def resume_checkpoint_path(self, trainer: Trainer) -> str | None:
        """A checkpoint that `trainer.fit` resumes from when it gets no `ckpt_path`; None (the default): none."""
        return None

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Called when fit, validate, test or predict begins."""

    def teardown(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Called when fit, validate, test or predict ends."""

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when fit begins."""

    def on_fit_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when fit ends."""

    def on_sanity_check_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called before the validation sanity check."""

    def on_sanity_check_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called after the validation sanity check."""

    def on_train_batch_start(self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int) -> None:
        """Called before each training batch."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Called after each training batch."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the start of each training epoch."""

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the end of each training epoch."""

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the start of each validation epoch."""

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the end of each validation epoch."""

    def on_test_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the start of the test epoch."""

    def on_test_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the end of the test epoch."""

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the start of the predict epoch."""

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called at the end of the predict epoch."""

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called before each validation batch."""

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Called after each validation batch."""

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called before each test batch."""

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Called after each test batch."""

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called before each predict batch."""

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Called after each predict batch."""

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called before the first training epoch."""

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called after the last training epoch."""

    def on_validation_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when validation starts."""

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when validation ends."""

    def on_test_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when testing starts."""

    def on_test_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when testing ends."""

    def on_predict_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when prediction starts."""

    def on_predict_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Called when prediction ends."""

    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None:
        """Called when a run raises."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None:
        """Called when a checkpoint is being saved; may add to `checkpoint`."""

    def on_load_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None:
        """Called when a checkpoint is being restored."""

    def on_before_backward(self, trainer: Trainer, pl_module: Module, loss: Tensor) -> None:
        """Called before backward."""

    def on_after_backward(self, trainer: Trainer, pl_module: Module) -> None:
        """Called after backward, before the optimizer step."""

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: Module, optimizer: Optimizer) -> None:
        """Called before the optimizer step, with unscaled gradients."""

    def on_before_zero_grad(self, trainer: Trainer, pl_module: Module, optimizer: Optimizer) -> None:
        """Called before the gradients are reset."""

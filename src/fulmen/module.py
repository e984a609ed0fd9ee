"""LightningModule: a torch.nn.Module that also holds the research code of a training run.

The user writes the model, `training_step`, `validation_step`, `configure_optimizers` and any hooks;
the Trainer calls them in Lightning 2.x's documented order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fulmen import export
from fulmen.checkpoint.state import load_module_from_checkpoint
from fulmen.hparams_mixin import HyperparametersMixin
from fulmen.results import check_hook_may_log, is_metric
from fulmen.utilities import MisconfigurationException, move_data_to_device

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


def _inspected_by_torch_jit() -> bool:
    """True while torch.jit.script looks at the module's attributes (it reads every class attribute)."""
    marker = os.path.join("torch", "jit")
    frame = sys._getframe(2)
    while frame is not None:
        if marker in frame.f_code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class class_only:  # noqa: N801 (used as a decorator, like classmethod)
    """A classmethod that refuses to run on an instance, as Lightning's `load_from_checkpoint` does.

    `model.load_from_checkpoint(path)` returns a new object and leaves `model` untouched; users who call
    it on an instance expect it to load in place, so it raises instead.
    """

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method
        functools.update_wrapper(self, method)  # type: ignore[arg-type]

    def __get__(self, instance: Any, owner: type | None = None) -> Callable[..., Any]:
        cls = owner if owner is not None else type(instance)
        if instance is not None and not _inspected_by_torch_jit():
            raise TypeError(
                f"The classmethod `{cls.__name__}.{self.method.__name__}` cannot be called on an instance. "
                "Please call it on the class type and make sure the return value is used."
            )
        return functools.partial(self.method, cls)


class DataHooks:
    """The data hooks shared by LightningModule and LightningDataModule; all default to doing nothing."""

    #: True: `prepare_data` runs on local rank 0 of every machine; False: on global rank 0 only (set it in
    #: __init__ when the machines share a filesystem).
    prepare_data_per_node: bool = True

    def prepare_data(self) -> None:
        """Download or prepare data once per node, before `setup`."""

    def setup(self, stage: str) -> None:
        """Build datasets or layers for `stage` ("fit", "validate", "test" or "predict")."""

    def teardown(self, stage: str) -> None:
        """Release what `setup` made."""

    def train_dataloader(self) -> Any:
        """Return the training DataLoader."""
        raise MisconfigurationException(
            "No training data: implement `train_dataloader()` in your LightningModule or LightningDataModule, "
            "or pass `train_dataloaders=` / `datamodule=` to `trainer.fit()`."
        )

    def val_dataloader(self) -> Any:
        """Return the validation DataLoader(s)."""
        return []

    def test_dataloader(self) -> Any:
        """Return the test DataLoader(s)."""
        raise MisconfigurationException(
            "No test data: implement `test_dataloader()` or pass `dataloaders=` to `trainer.test()`."
        )

    def predict_dataloader(self) -> Any:
        """Return the predict DataLoader(s)."""
        raise MisconfigurationException(
            "No predict data: implement `predict_dataloader()` or pass `dataloaders=` to `trainer.predict()`."
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move `batch` to `device`; handles tensors in tuples, lists, dicts, namedtuples, dataclasses."""
        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change the batch before it is moved to the device."""
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change the batch after it was moved to the device."""
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add entries to the checkpoint dict before it is written."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read entries from a checkpoint dict being restored."""


_LOG_VALUE_HELP = "a float, an int, a scalar tensor or a torchmetrics Metric"


class LightningModule(HyperparametersMixin, DataHooks, nn.Module):  # type: ignore[misc]
    """A torch.nn.Module with the training, evaluation and optimizer hooks a Trainer drives."""

    # the keys under which a checkpoint holds the hyper-parameters (Lightning's names)
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self._automatic_optimization = True
        self._current_fx_name: str | None = None
        self._device = torch.device("cpu")
        self._param_requires_grad_state: dict[nn.Parameter, bool] = {}
        self._example_input_array: Any = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            # Set around every hook call: skip nn.Module's parameter/buffer bookkeeping (microseconds).
            self.__dict__[name] = value
            return
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ properties
    @property
    def strict_loading(self) -> bool:
        """Whether checkpoint weights load with `load_state_dict(strict=True)` (True unless set to False)."""
        return self.__dict__.get("_strict_loading") in (None, True)

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self.__dict__["_strict_loading"] = value

    @property
    def trainer(self) -> Trainer:
        """The Trainer this module is attached to."""
        if self._trainer is None and not _inspected_by_torch_jit():  # scripting reads every attribute
            raise RuntimeError(f"{type(self).__name__} is not attached to a `Trainer`.")
        return self._trainer  # type: ignore[return-value]

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        self._trainer = trainer

    @property
    def device(self) -> torch.device:
        """The device the module's parameters live on."""
        for p in self.parameters():
            return p.device
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the module's parameters."""
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    @property
    def automatic_optimization(self) -> bool:
        """False when training_step drives the optimizers itself (manual optimization)."""
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    @property
    def current_epoch(self) -> int:
        """The trainer's current epoch (0 when not attached)."""
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (0 when not attached)."""
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes."""
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine."""
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def logger(self) -> Any:
        """The trainer's first logger, or None."""
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        """All of the trainer's loggers."""
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def example_input_array(self) -> Any:
        """An example input, used by the model summary to show output shapes."""
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self._example_input_array = value

    # ------------------------------------------------------------------ steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model; by default the same as nn.Module.forward."""
        return super().forward(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Compute and return the training loss for one batch."""
        raise MisconfigurationException(
            f"`{type(self).__name__}` has no `training_step`: implement `training_step(self, batch, batch_idx)` "
            "returning the loss (a tensor or a dict with 'loss') to train with `trainer.fit()`."
        )

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate one validation batch."""

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate one test batch."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Return the prediction for one batch; by default `self(batch)`."""
        batch = args[0] if args else kwargs.get("batch")
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Return the optimizer(s) and scheduler(s) to train with."""
        raise MisconfigurationException(
            f"`{type(self).__name__}.configure_optimizers` is not implemented: return an optimizer, e.g. "
            "`return torch.optim.Adam(self.parameters(), lr=1e-3)`, or None to train without one."
        )

    def configure_callbacks(self) -> Any:
        """Return callbacks to add to the Trainer's (they replace ones of the same type)."""
        return []

    def configure_model(self) -> None:
        """Create layers lazily, inside the strategy's context (e.g. for sharded init)."""

    # ------------------------------------------------------------------ optimization hooks
    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Compute gradients of `loss`."""
        loss.backward(*args, **kwargs)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step `optimizer`, running `optimizer_closure` (forward and backward) inside it."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        """Reset the gradients before backward."""
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step `scheduler` (with `metric` for ReduceLROnPlateau)."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip gradients before the optimizer step; by default with the Trainer's flags."""
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def clip_gradients(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of `optimizer`'s parameters by norm (default) or by value.

        A value or algorithm left as None is the Trainer's (`gradient_clip_val`, `gradient_clip_algorithm`).
        """
        trainer = self._trainer
        if gradient_clip_val is None and trainer is not None:
            gradient_clip_val = trainer.gradient_clip_val
        if gradient_clip_val is None or gradient_clip_val <= 0:  # as Lightning: no clipping
            return
        algorithm = (
            gradient_clip_algorithm
            or (trainer.gradient_clip_algorithm if trainer is not None else None)
            or "norm"
        )
        if algorithm not in ("norm", "value"):
            raise MisconfigurationException(
                f"gradient_clip_algorithm={algorithm!r} is not valid; use 'norm' or 'value'."
            )
        if self._trainer is not None:
            self._trainer.precision_plugin.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer(s) from `configure_optimizers`: one object, or a list when there are several."""
        opts = self.trainer.strategy.lightning_optimizers if use_pl_optimizer else self.trainer.optimizers
        if len(opts) == 1:
            return opts[0]
        return list(opts)

    def lr_schedulers(self) -> Any:
        """The scheduler(s): None, one object, or a list when there are several."""
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        if len(configs) == 1:
            return configs[0].scheduler
        return [c.scheduler for c in configs]

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward for manual optimization: runs the backward hooks and the precision's scaling."""
        trainer = self.trainer
        if self.automatic_optimization:
            raise MisconfigurationException(
                "`manual_backward` is for manual optimization; set `self.automatic_optimization = False`."
            )
        plan = trainer.fit_loop.plan
        hooks = plan.hooks
        hooks.callbacks("on_before_backward", loss)
        hooks.module("on_before_backward", loss)
        plan.backward(loss, None, *args, **kwargs)
        hooks.callbacks("on_after_backward")
        hooks.module("on_after_backward")

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Freeze every parameter that `optimizer` does not own (undo with `untoggle_optimizer`)."""
        inner = getattr(optimizer, "optimizer", optimizer)
        own = {id(p) for group in inner.param_groups for p in group["params"]}
        state: dict[nn.Parameter, bool] = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in own or p in state:
                        continue
                    state[p] = p.requires_grad
                    p.requires_grad = False
        self._param_requires_grad_state = state

    @contextlib.contextmanager
    def toggled_optimizer(self, optimizer: Any) -> Generator[None, None, None]:
        """`with self.toggled_optimizer(opt):` toggle `opt` for the block, untoggle after (even on error)."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Restore the requires_grad flags that `toggle_optimizer` changed."""
        for p, flag in self._param_requires_grad_state.items():
            p.requires_grad = flag
        self._param_requires_grad_state = {}

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a metric for the progress bar, the loggers and callbacks (see docs/logging.md)."""
        trainer = self._trainer
        if trainer is None:
            return  # not attached to a Trainer: nothing to log to
        if (
            metric_attribute is None
            and not isinstance(value, (torch.Tensor, float, int))
            and is_metric(value)
        ):
            self._metric_attribute_of(name, value)
        store = trainer.fit_loop.results.current
        if store is None:
            check_hook_may_log(self._current_fx_name)
            return
        store.log(
            self._current_fx_name,
            name,
            value,
            prog_bar=prog_bar,
            logger=logger,
            on_step=on_step,
            on_epoch=on_epoch,
            reduce_fx=reduce_fx,
            sync_dist=sync_dist,
            add_dataloader_idx=add_dataloader_idx,
            batch_size=batch_size,
        )

    def _metric_attribute_of(self, name: str, metric: Any) -> str:
        """The attribute holding a logged torchmetrics Metric; a Metric the module does not hold is refused."""
        # looked up once, and again on a miss: a deep copy of the module (EMA, SWA) holds other metric objects
        names: dict[int, str] | None = self.__dict__.get("_logged_metric_names")
        if names is None or id(metric) not in names:
            names = {id(m): n for n, m in self.named_modules() if n and is_metric(m)}
            self.__dict__["_logged_metric_names"] = names
        if not names:
            raise MisconfigurationException(
                f"`self.log({name}, metric)`: could not find the `LightningModule` attribute for the "
                "`torchmetrics.Metric` logged. You can fix this by setting an attribute for the metric in your "
                "`LightningModule` (e.g. `self.acc = Accuracy(...)` in `__init__`) and logging that attribute."
            )
        found = names.get(id(metric))
        if found is None:
            raise MisconfigurationException(
                "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged. You can fix "
                f"this by calling `self.log({name}, ..., metric_attribute=name)` where `name` is one of "
                f"{list(names.values())}"
            )
        return found

    def log_dict(
        self,
        dictionary: Mapping[str, Any] | Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Call `self.log` for every item of `dictionary` (a dict or a torchmetrics MetricCollection)."""
        items: Iterable[tuple[str, Any]] = dictionary.items()
        for key, val in items:
            self.log(
                key,
                val,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                enable_graph=enable_graph,
                sync_dist=sync_dist,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
                rank_zero_only=rank_zero_only,
            )

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` only on the process of global rank 0."""
        if self.global_rank == 0:
            print(*args, **kwargs)

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather tensors from every process (a no-op stack of one on a single device)."""
        strategy = self.trainer.strategy
        return strategy.all_gather(data, group=group, sync_grads=sync_grads)

    # ------------------------------------------------------------------ model hooks (no-ops)
    def on_fit_start(self) -> None:
        """Called at the very beginning of fit."""

    def on_fit_end(self) -> None:
        """Called at the very end of fit."""

    def on_train_start(self) -> None:
        """Called before the first training epoch."""

    def on_train_end(self) -> None:
        """Called after the last training epoch."""

    def on_train_epoch_start(self) -> None:
        """Called at the start of each training epoch."""

    def on_train_epoch_end(self) -> None:
        """Called at the end of each training epoch."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
        """Called before training_step; return -1 to skip the rest of the epoch."""

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Called after the optimizer step of a batch."""

    def on_validation_start(self) -> None:
        """Called when validation starts."""

    def on_validation_end(self) -> None:
        """Called when validation ends."""

    def on_validation_epoch_start(self) -> None:
        """Called at the start of a validation epoch."""

    def on_validation_epoch_end(self) -> None:
        """Called at the end of a validation epoch."""

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before validation_step."""

    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Called after validation_step."""

    def on_validation_model_zero_grad(self) -> None:
        """Called by fit before a validation run: frees the gradients (unless inside an accumulation window)."""
        self.zero_grad()

    def on_validation_model_eval(self) -> None:
        """Puts the model in eval mode for validation."""
        self.eval()

    def on_validation_model_train(self) -> None:
        """Puts the model back in train mode after validation."""
        self.train()

    def on_test_start(self) -> None:
        """Called when testing starts."""

    def on_test_end(self) -> None:
        """Called when testing ends."""

    def on_test_epoch_start(self) -> None:
        """Called at the start of a test epoch."""

    def on_test_epoch_end(self) -> None:
        """Called at the end of a test epoch."""

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before test_step."""

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after test_step."""

    def on_test_model_eval(self) -> None:
        """Puts the model in eval mode for testing."""
        self.eval()

    def on_test_model_train(self) -> None:
        """Puts the model back in train mode after testing."""
        self.train()

    def on_predict_start(self) -> None:
        """Called when prediction starts."""

    def on_predict_end(self) -> None:
        """Called when prediction ends."""

    def on_predict_epoch_start(self) -> None:
        """Called at the start of a predict epoch."""

    def on_predict_epoch_end(self) -> None:
        """Called at the end of a predict epoch."""

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before predict_step."""

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after predict_step."""

    def on_predict_model_eval(self) -> None:
        """Puts the model in eval mode for prediction."""
        self.eval()

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Called before `loss.backward()`."""

    def on_after_backward(self) -> None:
        """Called after backward, before the optimizer step: gradients are available."""

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Called before `optimizer.step()`, with unscaled gradients."""

    def on_before_zero_grad(self, optimizer: Optimizer) -> None:
        """Called before `optimizer.zero_grad()`."""

    def on_exception(self, exception: BaseException) -> None:  # not a Lightning module hook; harmless
        """Called when fit raises."""

    def freeze(self) -> None:
        """Set requires_grad=False on every parameter and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        """Set requires_grad=True on every parameter and switch to train mode."""
        for p in self.parameters():
            p.requires_grad = True
        self.train()

    def to_torchscript(
        self,
        file_path: str | os.PathLike[str] | None = None,
        method: str = "script",
        example_inputs: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Compile the module to TorchScript (in eval mode; the module's own mode is restored).

        Args:
            file_path: also save the result there with `torch.jit.save`.
            method: "script" (`torch.jit.script`, follows control flow) or "trace" (`torch.jit.trace`,
                records one run on `example_inputs`).
            example_inputs: the inputs for "trace"; defaults to `self.example_input_array`, moved to the
                module's device through the batch-transfer hooks.
            kwargs: passed on to `torch.jit.script` / `torch.jit.trace`.
        """
        return export.to_torchscript(self, file_path, method, example_inputs, **kwargs)

    def to_onnx(
        self, file_path: str | os.PathLike[str] | Any, input_sample: Any = None, **kwargs: Any
    ) -> Any:
        """Export the module, in eval mode, to ONNX with `torch.onnx.export` (needs `pip install onnx`, and
        `onnxscript` for torch's default exporter); returns what torch.onnx.export returns.

        Args:
            file_path: where to write the `.onnx` file (or a file object).
            input_sample: the inputs to export with; defaults to `self.example_input_array`, moved to the
                module's device through the batch-transfer hooks.
            kwargs: passed on to `torch.onnx.export` (e.g. `dynamo=False`, `input_names`, `dynamic_axes`).
        """
        return export.to_onnx(self, file_path, input_sample, **kwargs)

    @class_only
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """A new module built from a checkpoint's hyper-parameters (and `kwargs`), with its weights loaded.

        `weights_only=False` trusts the file (it may run code stored in it); True or None reads it safely.
        `strict=None` follows the new module's `strict_loading`. See checkpoint/state.py.
        """

        return load_module_from_checkpoint(
            cls, checkpoint_path, map_location, strict, hparams_file, weights_only, **kwargs
        )


# torch.jit.script compiles every property of a module it scripts and types its annotated attributes;
# the Trainer-facing ones cannot be compiled (nor need to be), so they are listed as unused/ignored.
_FULMEN_CLASSES = [klass for klass in LightningModule.__mro__ if klass.__module__.startswith("fulmen")]
LightningModule.__jit_unused_properties__ = sorted(  # type: ignore[attr-defined]
    {name for klass in _FULMEN_CLASSES for name, value in vars(klass).items() if isinstance(value, property)}
)
LightningModule.__jit_ignored_attributes__ = sorted(  # type: ignore[attr-defined]
    {name for klass in _FULMEN_CLASSES for name in vars(klass).get("__annotations__", {})}
)

"""The run plan: which shortcuts a run may take, decided from who listens, in one place.

The training loop skips work nobody can observe: the batch-transfer hooks when they are the defaults
on a CPU run, the gradient-clipping call when nothing clips, the closure plumbing of the optimizer
step when every piece of it is the default. Each such decision asks one question of one helper,
`utilities.overriding`, which looks a hook up as Python does (the instance first, then its class),
so a hook assigned on an instance or through `unittest.mock.patch.object` counts like an override.

When the plan is made. `Trainer._run` resolves the hook tables after `setup`, makes the plan
after `configure_model` (the final plan of validate/test/predict) and again after `on_fit_start`
(the final plan of fit), so a hook attached in `setup`, `configure_model` or `on_fit_start` runs. A hook attached later in the run (in `on_train_start`, an epoch or a batch hook) is seen
from the next `fit`/`validate`/`test`/`predict` call: Lightning would look it up at call time, but
fixing the plan is what keeps the per-batch cost of a run to the hooks it needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule
from fulmen.optim import LightningOptimizer
from fulmen.precision import Precision, _closure_optional
from fulmen.strategies.strategy import Strategy
from fulmen.utilities import is_overridden, overriding

if TYPE_CHECKING:
    from fulmen.hooks import HookDispatcher
    from fulmen.trainer import Trainer

# the hooks that run between the forward and the optimizer step: any listener needs the full step
STEP_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


@dataclass
class RunPlan:
    """What one run may skip, decided once (see the module docstring for when), and the calls built on it.

    The loops get the plan passed in; `LightningOptimizer.step` hands `before_optimizer_step` to the
    strategy's optimizer step.

    Attributes:
        trainer: the trainer of the run (None before any run).
        hooks: calls hooks on the callbacks and the module, with the listeners resolved.
        active: names of the hooks some callback or the module listens to.
        clip: `configure_gradient_clipping` runs before each optimizer step (a clip value, or overridden).
        fast_transfer: the batch-transfer path would return the batch unchanged: skip `transfer`.
        datamodule_transfer: the datamodule's transfer hooks that are not defaults (None where default).
        direct_optimizer: the raw torch optimizer when the automatic step may skip the closure plumbing.
        progress_bar: the progress bar callback the loops update on each batch, or None.
        profiler: the enabled profiler, or None; the loops time their epochs, batches and data with it.
        training_step, validation_step, test_step, predict_step, backward, optimizer_step: the
            strategy's methods, timed by the profiler when one is enabled (else the methods themselves).
    """

    # None only in the empty plan a loop holds before its first run
    trainer: Trainer = None  # type: ignore[assignment]
    hooks: HookDispatcher = None  # type: ignore[assignment]
    active: frozenset[str] = frozenset()
    clip: bool = True
    fast_transfer: bool = False
    datamodule_transfer: tuple[Callable[..., Any] | None, ...] = (None, None, None)
    direct_optimizer: Any = None
    progress_bar: Any = None
    profiler: Any = None
    training_step: Any = None
    validation_step: Any = None
    test_step: Any = None
    predict_step: Any = None
    backward: Any = None
    optimizer_step: Any = None

    def transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Move a batch to the device through the batch-transfer hooks (datamodule's, then the module's)."""
        trainer = self.trainer
        module, strategy = trainer.lightning_module, trainer.strategy
        dm_before, dm_to_device, dm_after = self.datamodule_transfer
        if dm_before is not None:
            batch = dm_before(batch, dataloader_idx)
        batch = module.on_before_batch_transfer(batch, dataloader_idx)
        if dm_to_device is not None:
            batch = dm_to_device(batch, strategy.root_device, dataloader_idx)
        else:
            batch = strategy.batch_to_device(batch, dataloader_idx)
        batch = trainer.precision_plugin.convert_input(batch)
        if dm_after is not None:
            batch = dm_after(batch, dataloader_idx)
        return module.on_after_batch_transfer(batch, dataloader_idx)

    def before_optimizer_step(self, optimizer: Any) -> None:
        """What runs between the closure and the step: `on_before_optimizer_step`, then clipping."""
        trainer, hooks = self.trainer, self.hooks
        hooks.callbacks("on_before_optimizer_step", optimizer)
        hooks.module("on_before_optimizer_step", optimizer)
        module = trainer.lightning_module
        if self.clip and module.automatic_optimization:
            module._current_fx_name = "configure_gradient_clipping"
            module.configure_gradient_clipping(
                optimizer,
                gradient_clip_val=trainer.gradient_clip_val,
                gradient_clip_algorithm=trainer.gradient_clip_algorithm,
            )


def make_plan(trainer: Trainer, hooks: HookDispatcher, optimizers_ready: bool) -> RunPlan:
    """Resolve the hook tables again and decide this run's shortcuts (`optimizers_ready`: fit, after configure_optimizers)."""
    hooks.resolve()
    module = trainer.lightning_module
    dm = trainer.datamodule
    # the shortcuts below ask `overriding`: whatever a call would run (a wrapper around a default included) is kept
    clip = bool(trainer.gradient_clip_val) or (
        overriding("configure_gradient_clipping", module, LightningModule) is not None
    )
    # as Lightning: the datamodule's hook replaces the module's only when it is an override in
    # `is_overridden`'s sense (a recorder wrapped around the default is not)
    dm_transfer = tuple(
        overriding(n, dm, LightningDataModule) if is_overridden(n, dm, LightningDataModule) else None
        for n in TRANSFER_HOOKS
    )
    fast_transfer = (
        trainer.strategy.root_device.type == "cpu"
        and overriding("convert_input", trainer.precision_plugin, Precision) is None
        and not any(overriding(n, module, LightningModule) for n in TRANSFER_HOOKS)
        and not any(dm_transfer)
    )
    active = hooks.active
    direct = _direct_optimizer(trainer, active, clip) if optimizers_ready else None
    profiler = trainer.profiler if trainer.profiler.enabled else None
    strategy = trainer.strategy
    steps = {
        name: _timed(profiler, name, getattr(strategy, name))
        for name in (
            "training_step",
            "validation_step",
            "test_step",
            "predict_step",
            "backward",
            "optimizer_step",
        )
    }
    for name in ("training_step", "validation_step", "test_step", "predict_step"):
        if not _takes_batch_idx(
            getattr(module, name)
        ):  # `def training_step(self, batch)`: called as it is written
            steps[name] = _without_batch_idx(steps[name])
    plan = RunPlan(
        trainer,
        hooks,
        active,
        clip,
        fast_transfer,
        dm_transfer,
        direct,
        trainer.progress_bar_callback,
        profiler,
        **steps,
    )
    if profiler is not None:
        plan.transfer = _timed(profiler, "transfer_batch_to_device", plan.transfer)  # type: ignore[method-assign]
    return plan


def _takes_batch_idx(step: Callable[..., Any]) -> bool:
    """Whether a step method accepts `batch_idx`, by Lightning's rule: named so, *args, or two parameters."""
    try:
        params = list(inspect.signature(step).parameters.values())
    except (TypeError, ValueError):  # a C function or odd callable: pass everything, as before
        return True
    if any(p.name == "batch_idx" or p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional for p in params) >= 2


def _without_batch_idx(step: Callable[..., Any]) -> Callable[..., Any]:
    """`step` called with the batch (and a dataloader_idx, when several) but not the batch index."""

    def call(batch: Any, batch_idx: int, *rest: Any) -> Any:
        return step(batch, *rest)

    return call


def _timed(profiler: Any, action: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` timed as `action` by the profiler, or `fn` itself without one."""
    if profiler is None:
        return fn

    def timed(*args: Any, **kwargs: Any) -> Any:
        with profiler.profile(action):
            return fn(*args, **kwargs)

    return timed


def _direct_optimizer(trainer: Trainer, active: frozenset[str], clip: bool) -> Any:
    """The raw optimizer if this fit's automatic step may skip the closure plumbing, else None.

    True when the step would only call defaults: the module's `optimizer_step`, `optimizer_zero_grad`
    and `backward`, the base strategy's and fp32-style precision's step methods, no step hook with a
    listener, no clipping, no profiler, and a torch optimizer that does not need its closure.
    """
    module, strategy, precision = trainer.lightning_module, trainer.strategy, trainer.precision_plugin
    if len(strategy.lightning_optimizers) != 1 or clip or trainer.profiler.enabled:
        return None
    if any(name in active for name in STEP_HOOKS):
        return None
    defaults: list[tuple[object, type, tuple[str, ...]]] = [
        (module, LightningModule, ("optimizer_step", "optimizer_zero_grad", "backward")),
        (strategy, Strategy, ("training_step", "backward", "optimizer_step")),
        (precision, Precision, ("backward", "optimizer_step")),
        (strategy.lightning_optimizers[0], LightningOptimizer, ("step", "zero_grad")),
    ]
    for obj, base, names in defaults:
        if any(overriding(name, obj, base) for name in names):
            return None
    optimizer = strategy.optimizers[0]
    return optimizer if _closure_optional(optimizer) else None

"""The run plan: which shortcuts a run may take, decided from who listens, in one place.

The training loop skips work nobody can observe: the batch-transfer hooks when they are the defaults
on a CPU run, the gradient-clipping call when nothing clips, the closure plumbing of the optimizer
step when every piece of it is the default. Each such decision asks one question of one helper,
`utilities.overriding`, which looks a hook up as Python does (the instance first, then its class),
so a hook assigned on an instance or through `unittest.mock.patch.object` counts like an override.

When the plan is made. `Trainer._run` makes it after `configure_model` (the final plan of
validate/test/predict) and again after `on_fit_start` (the final plan of fit), and re-resolves
the hook tables at those points, so a hook attached in `setup`, `configure_model` or `on_fit_start`
runs. A hook attached later in the run (in `on_train_start`, an epoch or a batch hook) is seen
from the next `fit`/`validate`/`test`/`predict` call: Lightning would look it up at call time, but
fixing the plan is what keeps the per-batch cost of a run to the hooks it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule
from fulmen.optim import LightningOptimizer
from fulmen.precision import Precision, _closure_optional
from fulmen.strategies.strategy import Strategy
from fulmen.utilities import is_overridden, overriding

if TYPE_CHECKING:
    from collections.abc import Callable

    from fulmen.hooks import HookDispatcher
    from fulmen.trainer import Trainer

# the hooks that run between the forward and the optimizer step: any listener needs the full step
STEP_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


@dataclass(frozen=True)
class RunPlan:
    """What one run may skip, decided once (see the module docstring for when).

    Attributes:
        active: names of the hooks some callback or the module listens to.
        clip: `configure_gradient_clipping` runs before each optimizer step (a clip value, or overridden).
        fast_transfer: the batch-transfer path would return the batch unchanged: skip it.
        datamodule_transfer: the datamodule's transfer hooks that are not defaults (None where default).
        direct_optimizer: the raw torch optimizer when the automatic step may skip the closure plumbing.
    """

    active: frozenset[str] = frozenset()
    clip: bool = True
    fast_transfer: bool = False
    datamodule_transfer: tuple[Callable[..., Any] | None, ...] = (None, None, None)
    direct_optimizer: Any = None


def make_plan(trainer: Trainer, hooks: HookDispatcher, optimizers_ready: bool) -> RunPlan:
    """Resolve the hook tables again and decide this run's shortcuts (`optimizers_ready`: fit, after configure_optimizers)."""
    hooks.resolve()
    module = trainer.lightning_module
    dm = trainer.datamodule
    clip = bool(trainer.gradient_clip_val) or is_overridden(
        "configure_gradient_clipping", module, LightningModule
    )
    dm_transfer = tuple(
        overriding(n, dm, LightningDataModule) if dm is not None else None for n in TRANSFER_HOOKS
    )
    fast_transfer = (
        trainer.strategy.root_device.type == "cpu"
        and not is_overridden("convert_input", trainer.precision_plugin, Precision)
        and not any(is_overridden(n, module, LightningModule) for n in TRANSFER_HOOKS)
        and not any(dm_transfer)
    )
    active = hooks.active
    direct = _direct_optimizer(trainer, active, clip) if optimizers_ready else None
    return RunPlan(active, clip, fast_transfer, dm_transfer, direct)


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
        if any(is_overridden(name, obj, base) for name in names):
            return None
    optimizer = strategy.optimizers[0]
    return optimizer if _closure_optional(optimizer) else None

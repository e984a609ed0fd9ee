"""What `configure_optimizers` may return, turned into optimizers and scheduler configs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer

from fulmen.utilities import MisconfigurationException, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

_SCHED_KEYS = {
    "scheduler",
    "interval",
    "frequency",
    "monitor",
    "strict",
    "name",
    "reduce_on_plateau",
    "opt_idx",
}


@dataclass
class LRSchedulerConfig:
    """A scheduler and when to step it (Lightning's scheduler config dict, as a dataclass)."""

    scheduler: Any
    name: str | None = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: str | None = None
    strict: bool = True


def _is_plateau(scheduler: Any) -> bool:
    # torch's, or a look-alike that decides by a metric as it does
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or hasattr(
        scheduler, "_is_better"
    )


def _scheduler_config(item: Any, monitor: str | None = None) -> LRSchedulerConfig:
    if isinstance(item, Mapping):
        if "scheduler" not in item:
            raise MisconfigurationException(
                "configure_optimizers: a scheduler config dict needs a 'scheduler' key, e.g. "
                "{'scheduler': StepLR(opt, 1), 'interval': 'epoch'}."
            )
        extra = set(item) - _SCHED_KEYS
        if extra:
            raise MisconfigurationException(
                f"configure_optimizers: unknown scheduler config keys {sorted(extra)}; valid: {sorted(_SCHED_KEYS)}."
            )
        interval = item.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            raise MisconfigurationException(
                f"configure_optimizers: scheduler 'interval' must be 'epoch' or 'step', got {interval!r}."
            )
        config = LRSchedulerConfig(
            scheduler=item["scheduler"],
            name=item.get("name"),
            interval=interval,
            frequency=int(item.get("frequency", 1)),
            monitor=item.get("monitor", monitor),
            strict=bool(item.get("strict", True)),
        )
    else:
        config = LRSchedulerConfig(scheduler=item, monitor=monitor)
    config.reduce_on_plateau = _is_plateau(config.scheduler)
    if config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationException(
            "configure_optimizers: ReduceLROnPlateau needs a metric to watch; return "
            "{'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'monitor': 'val_loss'}}."
        )
    if not hasattr(config.scheduler, "step"):
        raise MisconfigurationException(
            f"configure_optimizers: {type(config.scheduler).__name__} is not a learning-rate scheduler "
            "(it has no `step`)."
        )
    return config


def _from_dict(d: Mapping[str, Any]) -> tuple[Optimizer, list[LRSchedulerConfig]]:
    if "optimizer" not in d:
        raise MisconfigurationException(
            f"configure_optimizers returned a dict without an 'optimizer' key (keys: {sorted(d)})."
        )
    scheds = []
    if d.get("lr_scheduler") is not None:
        scheds.append(_scheduler_config(d["lr_scheduler"], d.get("monitor")))
    return d["optimizer"], scheds


def parse_optimizers(
    out: Any, module_name: str = "LightningModule"
) -> tuple[list[Optimizer], list[LRSchedulerConfig]]:
    """Normalise every documented `configure_optimizers` return form into (optimizers, scheduler configs)."""
    optimizers: list[Any]
    scheds: list[LRSchedulerConfig] = []
    if out is None:
        rank_zero_warn(
            f"`{module_name}.configure_optimizers` returned None: this fit will run without an optimizer."
        )
        return [], []
    if isinstance(out, Optimizer):
        optimizers = [out]
    elif isinstance(out, Mapping):
        opt, scheds = _from_dict(out)
        optimizers = [opt]
    elif (
        isinstance(out, (list, tuple))
        and len(out) == 2
        and isinstance(out[0], (list, tuple))
        and isinstance(out[1], (list, tuple))
    ):
        optimizers = list(out[0])
        scheds = [_scheduler_config(s) for s in out[1]]
    elif isinstance(out, (list, tuple)) and out and all(isinstance(o, Mapping) for o in out):
        optimizers = []
        for d in out:
            opt, s = _from_dict(d)
            optimizers.append(opt)
            scheds.extend(s)
    elif isinstance(out, (list, tuple)) and all(isinstance(o, Optimizer) for o in out):
        optimizers = list(out)
    else:
        raise MisconfigurationException(
            f"`{module_name}.configure_optimizers` returned {type(out).__name__}, which is not one of the "
            "supported forms: an optimizer; a list of optimizers; ([optimizers], [schedulers]); a dict "
            "{'optimizer': ..., 'lr_scheduler': ...}; a tuple of such dicts; or None."
        )
    for opt in optimizers:
        if not isinstance(opt, Optimizer):
            raise MisconfigurationException(
                f"`{module_name}.configure_optimizers` returned {type(opt).__name__} where a "
                "torch.optim.Optimizer was expected."
            )
    for cfg in scheds:
        owner = getattr(cfg.scheduler, "optimizer", None)
        if owner is not None and not any(owner is opt for opt in optimizers):
            raise MisconfigurationException(
                f"`{module_name}.configure_optimizers` returned the scheduler {type(cfg.scheduler).__name__}, "
                "which was built on an optimizer it did not return; build the scheduler on one of the returned "
                "optimizers."
            )
    return optimizers, scheds


class LightningOptimizer:
    """Wraps a torch optimizer so that `step()` runs fulmen's hooks, precision and strategy around it.

    Each wrapper's class also derives from the wrapped optimizer's class (as in Lightning), so
    `isinstance(self.optimizers(), torch.optim.SGD)` holds; everything but the methods below reads
    through to the wrapped optimizer.
    """

    def __init__(self, optimizer: Optimizer, trainer: Trainer) -> None:
        self._optimizer = optimizer
        self._trainer = trainer
        if isinstance(optimizer, Optimizer):
            self.__class__ = _wrapper_class(type(optimizer))

    def __reduce__(self) -> Any:
        # the per-optimizer class is made at run time and cannot be pickled by name
        return (LightningOptimizer, (self._optimizer, self._trainer))

    @property
    def optimizer(self) -> Optimizer:
        """The wrapped torch optimizer."""
        return self._optimizer

    def __getattr__(self, name: str) -> Any:
        if name == "_optimizer":  # not set yet (e.g. during copy/unpickling): no infinite recursion
            raise AttributeError(name)
        return getattr(self._optimizer, name)

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # noqa: D102
        return self._optimizer.param_groups

    @property
    def state(self) -> Any:  # noqa: D102
        return self._optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the wrapped optimizer's gradients."""
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Step through the strategy and precision: runs `closure`, the pre-step hooks, then the step."""
        loop = self._trainer.fit_loop
        plan = loop.plan
        out = plan.optimizer_step(self._optimizer, closure, plan.before_optimizer_step, **kwargs)
        loop.progress.optimizer_stepped()
        return out

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state."""
        return self._optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the wrapped optimizer's state."""
        self._optimizer.load_state_dict(state)

    def __repr__(self) -> str:
        return f"LightningOptimizer({self._optimizer!r})"


_WRAPPER_CLASSES: dict[type, type] = {}


def _wrapper_class(optimizer_class: type) -> type:
    """LightningOptimizer's methods first, then `optimizer_class` for isinstance checks (one class per type)."""
    cls = _WRAPPER_CLASSES.get(optimizer_class)
    if cls is None:
        name = f"Lightning{optimizer_class.__name__}"
        cls = _WRAPPER_CLASSES[optimizer_class] = type(name, (LightningOptimizer, optimizer_class), {})
    return cls


def check_optimization_flags(
    module: LightningModule, n_optimizers: int, gradient_clip_val: Any, accumulate_grad_batches: int
) -> None:
    """Refuse Trainer flags that the module's kind of optimization (automatic or manual) cannot honour."""
    name = type(module).__name__
    if module.automatic_optimization and n_optimizers > 1:
        raise MisconfigurationException(
            f"`{name}.configure_optimizers` returned {n_optimizers} optimizers, which needs manual "
            "optimization: set `self.automatic_optimization = False` in `__init__` and step them in "
            "`training_step` (see docs/optimization.md)."
        )
    if not module.automatic_optimization:
        if gradient_clip_val:
            raise MisconfigurationException(
                f"Trainer(gradient_clip_val=...) does not apply to manual optimization in `{name}`: call "
                "`self.clip_gradients(opt, gradient_clip_val=...)` in training_step instead."
            )
        if accumulate_grad_batches != 1:
            raise MisconfigurationException(
                f"Trainer(accumulate_grad_batches=...) does not apply to manual optimization in `{name}`: "
                "step the optimizer every N batches yourself in training_step."
            )

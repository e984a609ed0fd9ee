"""LearningRateMonitor: send each optimizer's learning rate (and optionally momentum) to the loggers."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

_INTERVALS = (None, "step", "epoch")


class LearningRateMonitor(Callback):
    """Log the learning rate of every param group of every optimizer while training.

    Keys are ``lr-{OptimizerClass}`` (or the scheduler config's ``name``), with ``/pg1``, ``/pg2`` ...
    appended when an optimizer has several param groups, and ``/{name}`` for a group with a ``"name"``
    (even a single one), and ``-1``, ``-2`` ... when two optimizers would share a key. The values also
    go into ``trainer.callback_metrics`` (as tensors), so a callback can monitor them.

    Args:
        logging_interval: "step" or "epoch" to log every optimizer at that interval; None (default) logs
            each scheduler at its own interval, and optimizers without a scheduler at both.
        log_momentum: also log ``{key}-momentum`` (``momentum``, or ``betas[0]`` for Adam-like optimizers).
        log_weight_decay: also log ``{key}-weight_decay``.

    Every learning rate logged is also kept in ``self.lrs[key]`` (a list per key); the latest momentum
    and weight decay in ``self.last_momentum_values`` / ``self.last_weight_decay_values``.
    """

    def __init__(
        self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False
    ) -> None:
        if logging_interval not in _INTERVALS:
            raise MisconfigurationException(
                f"LearningRateMonitor(logging_interval={logging_interval!r}) is not valid; use 'step', "
                "'epoch' or None."
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = defaultdict(list)
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}
        # [optimizer, interval, base name, key per param group], resolved in on_train_start; the keys are
        # worked out again when an optimizer gains param groups (e.g. BaseFinetuning unfreezing a module)
        self._plan: list[list[Any]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check that there is a logger and work out every key."""
        if not trainer.loggers:
            raise MisconfigurationException(
                "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger: the monitor needs a "
                "logger; pass one (e.g. Trainer(logger=True)) or remove the callback."
            )
        configs = list(trainer.lr_scheduler_configs)
        seen: dict[str, int] = {}
        self._plan = []
        for optimizer in trainer.optimizers:
            config = next((c for c in configs if getattr(c.scheduler, "optimizer", None) is optimizer), None)
            interval = config.interval if config is not None else "any"  # no scheduler: log at both
            base = (config.name if config is not None else None) or f"lr-{type(optimizer).__name__}"
            count = seen.get(base, 0)
            seen[base] = count + 1
            name = base if count == 0 else f"{base}-{count}"
            entry: list[Any] = [optimizer, interval, name, []]
            self._plan.append(entry)
            self._update_keys(entry)
            if self.log_momentum and not any("momentum" in g or "betas" in g for g in optimizer.param_groups):
                rank_zero_warn(
                    f"LearningRateMonitor(log_momentum=True), but some optimizers do not have momentum. "
                    f"{type(optimizer).__name__} has none, so 0 is logged for its momentum.",
                    category=RuntimeWarning,
                )

    def _update_keys(self, entry: list[Any]) -> list[str]:
        """The keys of an optimizer's param groups; a single group's history moves to `/pg1` when more appear."""
        optimizer, _, name, old = entry
        groups = optimizer.param_groups
        group_names = [g["name"] for g in groups if "name" in g]
        if len(group_names) != len(set(group_names)):
            raise MisconfigurationException(
                f"A single `Optimizer` cannot have multiple parameter groups with identical `name` values: "
                f"{type(optimizer).__name__} has {group_names}; give each group its own name (they become the "
                "logged keys)."
            )
        if len(groups) == 1:
            keys = [f"{name}/{groups[0]['name']}" if "name" in groups[0] else name]
        else:
            keys = [f"{name}/{g.get('name', f'pg{i + 1}')}" for i, g in enumerate(groups)]
        for key in keys:
            if old == [name] and key == f"{name}/pg1" and name in self.lrs:
                self.lrs[key] = self.lrs.pop(name)
            self.lrs.setdefault(key, [])
            if self.log_momentum:
                self.last_momentum_values.setdefault(f"{key}-momentum", None)
            if self.log_weight_decay:
                self.last_weight_decay_values.setdefault(f"{key}-weight_decay", None)
        entry[3] = keys
        return keys

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Log the step-interval rates (the ones this step uses) at the steps where the trainer logs."""
        if self.logging_interval == "epoch":
            return
        step = (
            trainer.fit_loop.progress.batches_that_stepped
        )  # the step the trainer logs this batch's metrics at
        if (step + 1) % trainer.log_every_n_steps != 0 and not trainer.should_stop:
            return
        self._log(trainer, "any" if self.logging_interval == "step" else "step", step)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the epoch-interval rates as each epoch begins."""
        if self.logging_interval == "step":
            return
        self._log(
            trainer,
            "any" if self.logging_interval == "epoch" else "epoch",
            trainer.fit_loop.progress.batches_that_stepped,
        )

    def _log(self, trainer: Trainer, interval: str, step: int) -> None:
        stats: dict[str, float] = {}
        for entry in self._plan:
            optimizer, opt_interval, _, keys = entry
            if interval != "any" and opt_interval not in (interval, "any"):
                continue
            if len(keys) != len(optimizer.param_groups):
                keys = self._update_keys(entry)
            for key, group in zip(keys, optimizer.param_groups):
                stats[key] = float(group["lr"])
                if self.log_momentum:
                    stats[f"{key}-momentum"] = _momentum(group)
                if self.log_weight_decay:
                    stats[f"{key}-weight_decay"] = float(group.get("weight_decay", 0.0))
        if not stats:
            return
        for key, value in stats.items():
            if key in self.last_momentum_values:
                self.last_momentum_values[key] = value
            elif key in self.last_weight_decay_values:
                self.last_weight_decay_values[key] = value
            else:
                self.lrs[key].append(value)
        device = trainer.strategy.root_device
        trainer.callback_metrics.update({k: torch.tensor(v, device=device) for k, v in stats.items()})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=step)


def _momentum(group: dict[str, Any]) -> float:
    if "betas" in group:
        return float(group["betas"][0])
    return float(group.get("momentum", 0.0))

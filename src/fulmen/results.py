"""What `self.log` records, and how it reaches the progress bar, the loggers and callbacks.

A logged value is kept on its device: step values are referenced as they are, epoch values are
accumulated in a short list that is folded into a running sum now and then. Nothing is read back to
the host until someone looks: the logger on its interval, the progress bar on its refresh, callbacks
at epoch end. That is why per-step logging costs no device synchronisation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from fulmen.utilities import MisconfigurationException, extract_batch_size

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

# hook -> (default on_step, default on_epoch); a hook missing here may not log.
_STEP = (True, False)
_EPOCH = (False, True)
_HOOK_DEFAULTS: dict[str, tuple[bool, bool]] = {
    **dict.fromkeys(
        (
            "training_step",
            "on_train_batch_start",
            "on_train_batch_end",
            "on_before_backward",
            "backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "optimizer_step",
            "configure_gradient_clipping",
            "clip_gradients",
            "on_before_zero_grad",
            "optimizer_zero_grad",
        ),
        _STEP,
    ),
    **dict.fromkeys(
        (
            "on_train_start",
            "on_train_epoch_start",
            "on_train_epoch_end",
            "on_validation_start",
            "on_validation_epoch_start",
            "on_validation_epoch_end",
            "on_validation_batch_start",
            "on_validation_batch_end",
            "validation_step",
            "on_test_start",
            "on_test_epoch_start",
            "on_test_epoch_end",
            "on_test_batch_start",
            "on_test_batch_end",
            "test_step",
        ),
        _EPOCH,
    ),
}


def check_hook_may_log(hook: str | None) -> None:
    """Raise the clear error for `self.log` called from a hook where logging is not allowed."""
    if hook is not None and hook not in _HOOK_DEFAULTS:
        raise MisconfigurationException(
            f"You can't `self.log()` in `{hook}`: logging is allowed in the step methods, the batch and "
            "epoch hooks, on_train_start and the backward/optimizer hooks. Move the call to one of those."
        )


_REDUCE_NAMES = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_REDUCE_FUNCTIONS: dict[Any, str] = {
    torch.mean: "mean",
    torch.sum: "sum",
    torch.max: "max",
    torch.min: "min",
    max: "max",
    min: "min",
    sum: "sum",
}
_FOLD_EVERY = 256  # step values kept before folding them into the running sum


def _invalid_value_message(name: str, value: Any) -> str:
    """The error for a `self.log` value that is not a number, a one-element tensor or a Metric."""
    if isinstance(value, Mapping) and any(isinstance(v, Mapping) for v in value.values()):
        what = "nested dictionaries cannot be logged"
    else:
        what = f"`{type(value).__name__}` values cannot be logged"
    return (
        f"`self.log({name}, {value})` was called, but {what}. Log a float, an int, a one-element tensor or "
        "a torchmetrics Metric (for several values, `self.log_dict` with one such value per key)."
    )


def is_metric(value: Any) -> bool:
    """Whether `value` behaves as a torchmetrics Metric (update/compute/reset)."""
    return hasattr(value, "compute") and hasattr(value, "reset") and hasattr(value, "update")


class _Slot:
    """One logged name: its options, its latest step value and its epoch accumulator."""

    __slots__ = (
        "name",
        "suffix",
        "on_step",
        "on_epoch",
        "prog_bar",
        "logger",
        "reduce",
        "sync_dist",
        "dataloader_idx",
        "metric",
        "last",
        "stepped",
        "pending",
        "weights",
        "total",
        "weight_total",
        "epoch_value",
        "call",
    )

    def __init__(
        self,
        name: str,
        on_step: bool,
        on_epoch: bool,
        prog_bar: bool,
        logger: bool,
        reduce: str,
        sync_dist: bool,
        dataloader_idx: int | None,
        suffix: str = "",
    ) -> None:
        self.name = name
        self.suffix = suffix  # "/dataloader_idx_N": after the _step/_epoch fork, as Lightning names keys
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.prog_bar = prog_bar
        self.logger = logger
        self.reduce = reduce
        self.sync_dist = sync_dist
        self.dataloader_idx = dataloader_idx
        self.metric: Any = None
        # the hook and options of the call that made the slot, kept through the batch that made it only
        self.call: tuple[Any, ...] | None = None
        self.last: Any = None
        self.stepped = False
        self.reset_epoch()

    def key(self, fork: str = "") -> str:
        """The metric's name with "_step"/"_epoch" (`fork`) and the dataloader suffix: `x_epoch/dataloader_idx_0`."""
        return f"{self.name}{fork}{self.suffix}"

    def reset_epoch(self) -> None:
        self.pending: list[torch.Tensor] = []
        self.weights: list[int] = []
        self.total: torch.Tensor | None = None
        self.weight_total = 0
        self.epoch_value: Any = None

    def add(self, value: torch.Tensor, batch_size: int) -> None:
        self.pending.append(value)
        self.weights.append(batch_size)
        if len(self.pending) >= _FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        stacked = torch.stack(
            [v.to(torch.float64 if v.dtype == torch.float64 else torch.float32) for v in self.pending]
        )
        reduce = self.reduce
        if reduce == "mean":
            w = torch.tensor(self.weights, dtype=stacked.dtype, device=stacked.device)
            part = (stacked * w).sum()
        elif reduce == "sum":
            part = stacked.sum()
        elif reduce == "max":
            part = stacked.max()
        else:
            part = stacked.min()
        if self.total is None:
            self.total = part
        elif reduce == "mean" or reduce == "sum":
            self.total = self.total + part
        elif reduce == "max":
            self.total = torch.maximum(self.total, part)
        else:
            self.total = torch.minimum(self.total, part)
        self.weight_total += sum(self.weights)
        self.pending = []
        self.weights = []

    def compute_epoch(self, reduce_across: Callable[[torch.Tensor, str], torch.Tensor] | None) -> Any:
        if self.metric is not None:
            self.epoch_value = self.metric.compute()
            return self.epoch_value
        self._fold()
        if self.total is None:
            return self.epoch_value
        reduce = self.reduce
        total = self.total
        if reduce == "mean":
            weight = torch.tensor(float(self.weight_total), dtype=total.dtype, device=total.device)
            if self.sync_dist and reduce_across is not None:
                total = reduce_across(total, "sum")
                weight = reduce_across(weight, "sum")
            value = total / weight
        else:
            value = reduce_across(total, reduce) if self.sync_dist and reduce_across is not None else total
        self.epoch_value = value
        return value


class ResultStore:
    """The logged values of one stage ("train", "validate", "test"), with Lightning's naming rules."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.slots: dict[str, _Slot] = {}
        self.batch: Any = None
        self._batch_size: int | None = None
        self.dataloader_idx: int | None = None
        self.epoch_metrics: dict[str, Any] = {}
        self.epoch_ending = False  # between an epoch end's first compute_epoch and finish_epoch
        # reduces a sync_dist step value across processes at once (set by the Trainer; None: one process)
        self.reduce_step: Callable[[torch.Tensor, str], torch.Tensor] | None = None
        self._fresh: list[_Slot] = []  # slots made in this batch: a repeated call must match their options

    def new_batch(self, batch: Any, dataloader_idx: int | None = None) -> None:
        """Point batch-size inference at `batch`; the size is only computed if a mean needs it."""
        if self._fresh:  # the repeated-call check runs in a slot's first batch only, off the per-step path
            for slot in self._fresh:
                slot.call = None
            self._fresh = []
        self.batch = batch
        self._batch_size = None
        self.dataloader_idx = dataloader_idx

    def _current_batch_size(self) -> int:
        if self._batch_size is None:
            size = extract_batch_size(self.batch) if self.batch is not None else None
            self._batch_size = size if size is not None else 1
        return self._batch_size

    def reset_epoch(self) -> None:
        """Forget the epoch accumulators (keeps the last epoch's computed values for callbacks)."""
        for slot in self.slots.values():
            slot.reset_epoch()
            slot.stepped = False

    def _compute_local_epoch_values(self) -> None:
        """Epoch values of the slots that need no other process (no sync_dist, no torchmetrics object)."""
        self._compute_epoch_values(None, lambda s: s.metric is None and not s.sync_dist and bool(s.pending))

    def finish_epoch(self) -> None:
        """Reset logged torchmetrics objects once their epoch value is final (as Lightning does)."""
        self.epoch_ending = False
        for slot in self.slots.values():
            if slot.metric is not None and slot.epoch_value is not None:
                slot.metric.reset()

    def clear(self) -> None:
        """Forget everything (a new run, or the end of the sanity check)."""
        self.slots = {}
        self.epoch_metrics = {}
        self.epoch_ending = False

    def log(
        self,
        hook: str | None,
        name: str,
        value: Any,
        prog_bar: bool,
        logger: bool | None,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: str | Callable[..., Any],
        sync_dist: bool,
        add_dataloader_idx: bool,
        batch_size: int | None,
    ) -> None:
        """Record `value` under `name` for the current hook (see `self.log`)."""
        suffix = ""
        if add_dataloader_idx and self.dataloader_idx is not None:
            suffix = f"/dataloader_idx_{self.dataloader_idx}"
        key = name + suffix
        slot = self.slots.get(key)
        if slot is None:
            slot = self._new_slot(
                hook,
                name,
                suffix,
                value,
                prog_bar,
                logger,
                on_step,
                on_epoch,
                reduce_fx,
                sync_dist,
                add_dataloader_idx,
            )
            slot.call = (hook, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist)
            self._fresh.append(slot)
        elif slot.call is not None and slot.call[0] == hook:
            if slot.call != (hook, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist):
                raise MisconfigurationException(
                    f"You called `self.log({name}, ...)` twice in `{hook}` with different arguments. This is not "
                    "allowed: log it once per call of the hook, or under two names."
                )
        if slot.metric is not None:
            slot.metric = value
            if slot.on_step:
                slot.last = getattr(value, "_forward_cache", None)
                slot.stepped = slot.last is not None
            return
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.dim():  # a loss is already 0-dim: reshape costs a microsecond, twice the rest of this
                if value.numel() != 1:
                    raise ValueError(
                        f"`self.log({name}, {value})` was called, but the tensor must have a single element (it has "
                        f"{value.numel()}); log a scalar (e.g. `self.log({name}, value.mean())`) or each element "
                        "under its own name."
                    )
                value = value.reshape(())
        elif isinstance(value, (int, float, bool)):
            value = torch.tensor(float(value))
        else:
            raise ValueError(_invalid_value_message(name, value))
        if slot.on_step:
            if slot.sync_dist and self.reduce_step is not None and isinstance(slot.reduce, str):
                slot.last = self.reduce_step(value, slot.reduce)  # epoch totals stay local until epoch end
            else:
                slot.last = value
            slot.stepped = True
        if slot.on_epoch:
            if batch_size is None:
                batch_size = self._current_batch_size() if slot.reduce == "mean" else 1
            slot.add(value, batch_size)

    def _new_slot(
        self,
        hook: str | None,
        name: str,
        suffix: str,
        value: Any,
        prog_bar: bool,
        logger: bool | None,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: str | Callable[..., Any],
        sync_dist: bool,
        add_dataloader_idx: bool,
    ) -> _Slot:
        if add_dataloader_idx and "/dataloader_idx_" in name:
            raise MisconfigurationException(
                f"You called `self.log` with the key `{name}` but it should not contain information about "
                "`dataloader_idx` when `add_dataloader_idx=True`: fulmen appends it. Drop it from the name, or "
                "pass `add_dataloader_idx=False`."
            )
        defaults = _HOOK_DEFAULTS.get(hook or "")
        if defaults is None:
            check_hook_may_log(hook or "this place")
            raise AssertionError("unreachable")
        step = defaults[0] if on_step is None else on_step
        epoch = defaults[1] if on_epoch is None else on_epoch
        if not step and not epoch:
            raise MisconfigurationException(
                f"`self.log({name}, ..., on_step=False, on_epoch=False)` is not useful: the value would be "
                "recorded nowhere. Set `on_step=True` and/or `on_epoch=True`."
            )
        reduce = (
            _REDUCE_NAMES.get(reduce_fx.lower())
            if isinstance(reduce_fx, str)
            else _REDUCE_FUNCTIONS.get(reduce_fx)
        )
        if reduce is None:
            raise MisconfigurationException(
                f"`self.log({name}, ..., reduce_fx={reduce_fx})`: only `self.log(..., reduce_fx={{min,max,mean,sum}})` "
                "are supported (as strings, the torch functions or Python's min/max/sum). For a custom reduction, log a "
                "`torchmetrics.Metric` instead."
            )
        slot = _Slot(
            name,
            step,
            epoch,
            prog_bar,
            True if logger is None else logger,
            reduce,
            sync_dist,
            self.dataloader_idx,
            suffix,
        )
        if is_metric(value):
            slot.metric = value
        self.slots[name + suffix] = slot
        return slot

    # ------------------------------------------------------------------ views
    def step_metrics(self, for_logger: bool) -> dict[str, Any]:
        """The step values logged since the last call to `mark_step_logged` (suffixed `_step` if forked)."""
        out: dict[str, Any] = {}
        for slot in self.slots.values():
            if not (slot.on_step and slot.stepped) or (for_logger and not slot.logger):
                continue
            out[slot.key("_step" if slot.on_epoch else "")] = slot.last
        return out

    def mark_step_logged(self) -> None:
        """Forget which slots were updated since the logger last saw them."""
        for slot in self.slots.values():
            slot.stepped = False

    def compute_epoch(self, reduce_across: Callable[[torch.Tensor, str], torch.Tensor] | None) -> None:
        """Reduce the epoch accumulators into `epoch_metrics` (names suffixed `_epoch` if forked).

        Between the first call at an epoch's end and `finish_epoch`, reads of the callback view also
        compute the values logged since (so a callback sees what an earlier callback logged in the same
        epoch-end hook, as in Lightning); values that need other processes wait for the next call here.
        """
        self.epoch_ending = True
        self._compute_epoch_values(reduce_across, lambda s: True)

    def _compute_epoch_values(
        self,
        reduce_across: Callable[[torch.Tensor, str], torch.Tensor] | None,
        wanted: Callable[[_Slot], bool],
    ) -> None:
        for slot in self.slots.values():
            if slot.on_epoch and wanted(slot):
                value = slot.compute_epoch(reduce_across)
                if value is not None:
                    self.epoch_metrics[slot.key("_epoch" if slot.on_step else "")] = value

    def epoch_metrics_for(
        self, for_logger: bool = False, prog_bar: bool = False, dataloader_idx: int | None = None
    ) -> dict[str, Any]:
        """Computed epoch values filtered for the logger, the progress bar or one dataloader."""
        out: dict[str, Any] = {}
        for slot in self.slots.values():
            if not slot.on_epoch or slot.epoch_value is None:
                continue
            if dataloader_idx is not None and slot.dataloader_idx not in (None, dataloader_idx):
                continue
            if (for_logger and not slot.logger) or (prog_bar and not slot.prog_bar):
                continue
            out[slot.key("_epoch" if slot.on_step else "")] = slot.epoch_value
        return out

    def callback_view(self, prog_bar_only: bool = False) -> dict[str, Any]:
        """What callbacks (or, filtered, the progress bar) see: epoch values, then the latest step values.

        As in Lightning, callbacks never see the step values of validation and test (only the bar does).
        """
        out: dict[str, Any] = {}
        if self.epoch_ending:
            self._compute_local_epoch_values()
        if not prog_bar_only:
            out.update(self.epoch_metrics)
        steps_visible = prog_bar_only or self.stage == "train"
        for slot in self.slots.values():
            if prog_bar_only and not slot.prog_bar:
                continue
            forked = slot.on_step and slot.on_epoch
            if slot.on_epoch and slot.epoch_value is not None:
                out[slot.key("_epoch" if forked else "")] = slot.epoch_value
                if forked and not prog_bar_only:
                    out[slot.key()] = slot.epoch_value
            if slot.on_step and slot.last is not None and steps_visible:
                if forked:
                    out[slot.key("_step")] = slot.last
                if not forked or not (prog_bar_only or slot.epoch_value is not None):
                    out[slot.key()] = slot.last
        return out


class RunResults:
    """The ResultStore of each stage, the one `self.log` writes to now, and what last went to the loggers.

    The Trainer owns one and passes it to its loops; `LightningModule.log` reaches it as
    `trainer.fit_loop.results`.
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.train = ResultStore("train")
        self.validate = ResultStore("validate")
        self.test = ResultStore("test")
        self.current: ResultStore | None = None  # None: the running hook may not log
        self.logged: dict[str, Any] = {}  # tensors, as Lightning keeps them
        # `trainer.callback_metrics`: one dict for the run, refreshed from the stores when read, so that values
        # written into it by users or integrations stay (as in Lightning)
        self.callback_metrics: dict[str, Any] = {}
        # `trainer.progress_bar_metrics`: the same, for prog_bar values as numbers; a key logged in an earlier
        # epoch (e.g. f"acc_{epoch}") stays shown, as in Lightning
        self.progress_bar_metrics: dict[str, Any] = {}
        # evaluation batches sent to the loggers so far in this run, per (stage, dataloader): their logging step
        self.eval_steps: dict[tuple[str, int], int] = {}
        if trainer.strategy.world_size > 1:
            # training only: every rank runs as many train batches, while evaluation shards may differ by one
            self.train.reduce_step = self.reduce

    def for_stage(self, stage: str) -> ResultStore:
        """The store of "train", "validate" or "test"."""
        return {"train": self.train, "validate": self.validate, "test": self.test}[stage]

    def clear(self) -> None:
        """Forget every stage's values and what went to the loggers (a new run)."""
        for store in (self.train, self.validate, self.test):
            store.clear()
        self.logged = {}
        self.eval_steps = {}
        self.forget_metrics()

    def forget_metrics(self) -> None:
        """Empty `trainer.callback_metrics` and `trainer.progress_bar_metrics` (a run, or training after the sanity check, starts so)."""
        self.callback_metrics = {}
        self.progress_bar_metrics = {}

    def refreshed_callback_metrics(self) -> dict[str, Any]:
        """The run's callback-metrics dict, updated with the latest logged values."""
        self.callback_metrics.update(self.callback_view())
        return self.callback_metrics

    def refreshed_progress_bar_metrics(self) -> dict[str, Any]:
        """The run's progress-bar dict, updated with the latest prog_bar values (one-element tensors as numbers)."""
        shown = self.progress_bar_metrics
        for key, value in self.callback_view(prog_bar_only=True).items():
            shown[key] = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        return shown

    def callback_view(self, prog_bar_only: bool = False) -> dict[str, Any]:
        """`trainer.callback_metrics` (or, filtered, what the progress bar shows) over all stages."""
        out: dict[str, Any] = {}
        for store in (self.train, self.validate, self.test):
            out.update(store.callback_view(prog_bar_only))
        return out

    def reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        """Reduce a logged value across processes (the identity on one process)."""
        strategy = self._trainer.strategy
        if strategy.world_size == 1:
            return tensor
        return strategy.reduce(tensor, op)

    def log_step(self, store: ResultStore, step: int, epoch: int) -> None:
        """Send the step values logged since the last call to the loggers, at `step`."""
        metrics = store.step_metrics(for_logger=True)
        store.mark_step_logged()
        if metrics:
            self._send(metrics, step, epoch)

    def log_eval_step(self, store: ResultStore, dataloader_idx: int) -> None:
        """Send an evaluation batch's step values to the loggers, at that dataloader's batch count in this run.

        As in Lightning, they carry no `epoch` key, and each dataloader counts its own steps.
        """
        key = (store.stage, dataloader_idx)
        step = self.eval_steps.get(key, 0)
        self.eval_steps[key] = step + 1  # every batch counts, logged or not
        metrics = store.step_metrics(for_logger=True)
        store.mark_step_logged()
        if not metrics or not self._trainer.loggers:
            return
        self.logged.update(metrics)
        if self._trainer.is_global_zero:
            scalars = {
                k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
                for k, v in metrics.items()
            }
            for lg in self._trainer.loggers:
                lg.log_metrics(metrics=scalars, step=step)

    def log_epoch(self, store: ResultStore, step: int, epoch: int) -> None:
        """Send the epoch values of `store` to the loggers, at `step` (and keep its prog_bar ones shown)."""
        self.refreshed_progress_bar_metrics()  # the next epoch's reset must not take this epoch's keys along
        metrics = store.epoch_metrics_for(for_logger=True)
        if metrics and self._trainer.loggers:
            self._send(metrics, step, epoch)

    def _send(self, metrics: dict[str, Any], step: int, epoch: int) -> None:
        scalars: dict[str, Any] = {}
        for key, value in metrics.items():
            scalars[key] = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        scalars.setdefault("epoch", epoch)
        self.logged.update(metrics)
        trainer = self._trainer
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                lg.log_metrics(metrics=scalars, step=step)


def print_results(stage: str, results: list[dict[str, float]]) -> None:
    """The results table Lightning prints after validate()/test(): one row per metric, one column per dataloader."""
    names = sorted({re.sub(r"/dataloader_idx_\d+$", "", k) for d in results for k in d})
    if not names:
        return
    header = [f"{stage.capitalize()} metric"] + [f"DataLoader {i}" for i in range(len(results))]
    rows = [header]
    for name in names:
        cells = [name]
        for i, d in enumerate(results):
            value = d.get(f"{name}/dataloader_idx_{i}", d.get(name))
            cells.append("" if value is None else str(value))
        rows.append(cells)
    widths = [max(len(row[c]) for row in rows) + 6 for c in range(len(header))]
    rule = "\u2500" * sum(widths)
    print(rule)
    for i, row in enumerate(rows):
        print("".join(cell.center(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print(rule)
    print(rule)

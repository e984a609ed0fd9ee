"""ThroughputMonitor: training speed in batches, samples and FLOPs per second, sent to the loggers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException, extract_batch_size

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


def measure_flops(
    model: torch.nn.Module,
    forward_fn: Callable[[], torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """FLOPs of one call of `forward_fn` (plus the backward of `loss_fn(output)` when given).

    Use a model on the "meta" device to count without computing:
    ``with torch.device("meta"): model = MyModel(); x = torch.randn(8, 32)``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        output = forward_fn()
        if loss_fn is not None:
            loss_fn(output).backward()
    return int(counter.get_total_flops())


class ThroughputMonitor(Callback):
    """Log training throughput every `log_every_n_steps` batches.

    Keys: ``train/batches``, ``train/samples``, ``train/lengths`` (with `length_fn`), ``train/time``
    (totals, validation time excluded),
    ``train/batches_per_sec``, ``train/samples_per_sec``, ``train/items_per_sec`` (with `length_fn`),
    ``train/flops_per_sec`` (with FLOPs per batch) and ``train/mfu`` (FLOP/s over `available_flops`).
    Rates cover the batches since the previous report; the device is synchronised only at reports.

    Args:
        batch_size_fn: samples in a batch; default: the first dimension of the first tensor.
        length_fn: items in a batch (e.g. tokens), for ``items_per_sec``.
        flops_per_batch: FLOPs of one training batch (forward and backward); default: the module's
            ``flops_per_batch`` attribute if it sets one (see ``measure_flops``).
        available_flops: the device's peak FLOP/s, for the utilisation ``train/mfu``.
        log_every_n_steps: report interval in batches; default: the Trainer's ``log_every_n_steps``.

    The latest report is also kept in ``self.metrics``.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int] | None = None,
        length_fn: Callable[[Any], int] | None = None,
        flops_per_batch: float | None = None,
        available_flops: float | None = None,
        log_every_n_steps: int | None = None,
    ) -> None:
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise MisconfigurationException(
                f"ThroughputMonitor(log_every_n_steps={log_every_n_steps}) is not valid; use an int >= 1."
            )
        if available_flops is not None and available_flops <= 0:
            raise MisconfigurationException(
                f"ThroughputMonitor(available_flops={available_flops}) is not valid; give the device's peak "
                "FLOP/s (> 0)."
            )
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.flops_per_batch = flops_per_batch
        self.available_flops = available_flops
        self.log_every_n_steps = log_every_n_steps
        self.metrics: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._batches = self._samples = self._items = 0
        self._train_time = 0.0
        self._last = (0.0, 0, 0, 0)  # (train time, batches, samples, items) at the previous report
        self._resumed_at: float | None = None  # perf_counter when timing (re)started; None while paused

    def _now(self, trainer: Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock."""
        self._reset()
        self._resumed_at = self._now(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pause the clock while validation runs inside fit."""
        if trainer.state.fn == "fit" and self._resumed_at is not None:
            self._train_time += self._now(trainer) - self._resumed_at
            self._resumed_at = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restart the clock after validation."""
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._resumed_at is None:
            self._resumed_at = self._now(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count the batch; report when due."""
        self._batches += 1
        size = self.batch_size_fn(batch) if self.batch_size_fn is not None else extract_batch_size(batch)
        self._samples += int(size or 0)
        if self.length_fn is not None:
            self._items += int(self.length_fn(batch))
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if self._batches % every == 0:
            self._report(trainer, pl_module)

    def _report(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._resumed_at is None:
            return
        now = self._now(trainer)
        total_time = self._train_time + now - self._resumed_at
        last_time, last_batches, last_samples, last_items = self._last
        window = total_time - last_time
        if window <= 0:
            return
        batches = self._batches - last_batches
        metrics = {
            "train/batches": float(self._batches),
            "train/samples": float(self._samples),
            "train/time": total_time,
            "train/batches_per_sec": batches / window,
            "train/samples_per_sec": (self._samples - last_samples) / window,
        }
        if self.length_fn is not None:
            metrics["train/lengths"] = float(self._items)
            metrics["train/items_per_sec"] = (self._items - last_items) / window
        flops = self.flops_per_batch
        if flops is None:
            flops = getattr(pl_module, "flops_per_batch", None)
        if flops is not None:
            metrics["train/flops_per_sec"] = flops * batches / window
            if self.available_flops is not None:
                metrics["train/mfu"] = metrics["train/flops_per_sec"] / self.available_flops
        self._last = (total_time, self._batches, self._samples, self._items)
        self.metrics = metrics
        if trainer.is_global_zero:
            step = trainer.fit_loop.progress.batches_that_stepped  # the trainer's logging step for this batch
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

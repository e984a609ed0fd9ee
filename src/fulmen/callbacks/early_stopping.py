"""EarlyStopping: stop training when a monitored metric stops improving (or crosses a threshold)."""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException, rank_zero_info, rank_zero_warn

Trainer = Any
Module = Any


class EarlyStoppingReason(Enum):
    """Why EarlyStopping stopped the run (`EarlyStopping.stopping_reason`); values as in Lightning 2.6."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    """Set `trainer.should_stop` once `monitor` has not improved for `patience` checks.

    Args:
        monitor: the logged metric to watch.
        min_delta: the smallest change that counts as an improvement.
        patience: checks without improvement before stopping (a check is one validation run, or one
            training epoch end when `check_on_train_epoch_end`).
        verbose: print why training stops or what improved.
        mode: "min" (smaller is better) or "max".
        strict: raise when `monitor` was never logged (else warn and skip the check).
        check_finite: stop as soon as the metric is NaN or infinite.
        stopping_threshold: stop as soon as the metric is better than this.
        divergence_threshold: stop as soon as the metric is worse than this.
        check_on_train_epoch_end: check at the end of the training epoch instead of after validation;
            None decides as Lightning does (at epoch end when validation runs once per epoch).
        log_rank_zero_only: print the messages on rank 0 only.

    After the run, `stopping_reason` (an `EarlyStoppingReason`) says why it stopped the run and
    `stopping_reason_message` gives the sentence it printed with `verbose` (None while not stopped).
    """

    runs_after_module_epoch_end = True

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        """Configure what to watch and when to stop; see the class docstring."""
        if mode not in ("min", "max"):
            # Lightning's wording first (users match on it), then which argument to fix
            raise MisconfigurationException(
                f"`mode` can be min, max, got {mode}: EarlyStopping(mode={mode!r}) is not valid; use 'min' or 'max'."
            )
        if patience < 0:
            raise MisconfigurationException(
                f"EarlyStopping(patience={patience}) is not valid; use an int >= 0."
            )
        self.monitor = monitor
        self.min_delta = float(min_delta) * (1 if mode == "max" else -1)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.wait_count = 0
        self.stopped_epoch = 0
        self.log_rank_zero_only = log_rank_zero_only
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.best_score = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None

    @property
    def monitor_op(self) -> Any:
        """`torch.lt` for mode "min", `torch.gt` for "max"."""
        return torch.lt if self.mode == "min" else torch.gt

    @property
    def state_key(self) -> str:
        """Unique per (monitor, mode)."""
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def state_dict(self) -> dict[str, Any]:
        """Patience bookkeeping, restored on resume."""
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.wait_count = state_dict["wait_count"]
        self.stopped_epoch = state_dict["stopped_epoch"]
        self.best_score = state_dict["best_score"]
        self.patience = state_dict["patience"]
        # checkpoints written before the reason was recorded load as "not stopped"
        self.stopping_reason = EarlyStoppingReason(state_dict.get("stopping_reason", 0))
        self.stopping_reason_message = state_dict.get("stopping_reason_message")

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Decide once whether to check at the training epoch end or after validation."""
        if self._check_on_train_epoch_end is None:
            self._check_on_train_epoch_end = (
                trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Check here when validation runs once per epoch (or not at all)."""
        if not self._check_on_train_epoch_end or self._should_skip(trainer):
            return
        self._run_check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Check after each validation run when validation runs several times per epoch."""
        if self._check_on_train_epoch_end or self._should_skip(trainer):
            return
        self._run_check(trainer)

    # ------------------------------------------------------------------ the check
    @staticmethod
    def _should_skip(trainer: Trainer) -> bool:
        return bool(trainer.state.fn != "fit" or trainer.sanity_checking)

    def _run_check(self, trainer: Trainer) -> None:
        metrics = trainer.callback_metrics
        if trainer.fast_dev_run or not self._metric_available(metrics):
            return
        current = torch.as_tensor(metrics[self.monitor]).detach().float().squeeze().cpu()
        should_stop, reason = self._evaluate_stopping_criteria(current)
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log(trainer, reason)

    def _metric_available(self, metrics: dict[str, Any]) -> bool:
        if self.monitor in metrics:
            return True
        message = (
            f"EarlyStopping(monitor={self.monitor!r}): that metric was never logged. Log it with "
            f"`self.log({self.monitor!r}, value)`, or monitor one of the logged metrics: {sorted(metrics)}."
        )
        if self.strict:
            raise RuntimeError(message + " (Pass strict=False to skip the check instead.)")
        if self.verbose:
            rank_zero_warn(message, category=RuntimeWarning)
        return False

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        best = self.best_score.to(current.device)
        if self.check_finite and not torch.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (
                f"Monitored metric {self.monitor} = {float(current)} is not finite. Previous best value was "
                f"{float(best):.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and self.monitor_op(current, self.stopping_threshold):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (
                f"Stopping threshold reached: {self.monitor} = {float(current)} "
                f"{'<' if self.mode == 'min' else '>'} {self.stopping_threshold}. Signaling Trainer to stop."
            )
        if self.divergence_threshold is not None and self.monitor_op(-current, -self.divergence_threshold):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (
                f"Divergence threshold reached: {self.monitor} = {float(current)} "
                f"{'>' if self.mode == 'min' else '<'} {self.divergence_threshold}. Signaling Trainer to stop."
            )
        if self.monitor_op(current - self.min_delta, best):
            reason = self._improvement_message(current)
            self.best_score = current
            self.wait_count = 0
            return False, reason
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (
                f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. "
                f"Best score: {float(best):.3f}. Signaling Trainer to stop."
            )
        return False, None

    def _improvement_message(self, current: torch.Tensor) -> str:
        best = float(self.best_score)
        if torch.isfinite(self.best_score):
            return (
                f"Metric {self.monitor} improved by {abs(best - float(current)):.3f} >= min_delta = "
                f"{abs(self.min_delta)}. New best score: {float(current):.3f}"
            )
        return f"Metric {self.monitor} improved. New best score: {float(current):.3f}"

    def _log(self, trainer: Trainer, message: str) -> None:
        if trainer.world_size > 1:
            message = f"[rank: {trainer.global_rank}] {message}"
        if self.log_rank_zero_only:
            rank_zero_info(message)
        else:
            print(message, flush=True)

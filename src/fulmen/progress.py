"""Loop progress: the counters a run advances and a resume restores, in one dataclass.

The loops record each event when it happens, through the methods of `Progress`, the one place where
each counter changes. A checkpoint therefore never has to guess where the loop stood: while a
batch's end hooks run, the batch is recorded as trained but not yet counted (`batch_end_pending`);
while an epoch's end hooks run, `epoch_end_pending` says that the epoch's batches are done but its
epoch-interval schedulers have not stepped. `state_dict` counts such a pending end as done, which is
the position a resume continues from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Progress:
    """Where a fit stands (the counters a checkpoint stores; what the trainer is doing is `trainer.state`).

    Attributes:
        epoch: the current epoch (`trainer.current_epoch`).
        epoch_batches: training batches of the current epoch already processed.
        global_step: optimizer steps taken (`trainer.global_step`).
        batches_that_stepped: training batches that ended an accumulation window (the logger's step).
        total_batches: training batches processed over the whole fit.
        val_checks: validation runs completed during this fit.
        batch_end_pending: a batch is trained and its end hooks run; it is counted after them.
        batch_stepped: the last trained batch ended an accumulation window (always, in manual
            optimization); when False, gradients are being accumulated.
        epoch_end_pending: the epoch's batches are done and its end hooks run; the epoch is counted
            and its ReduceLROnPlateau epoch-interval schedulers step after them.
        epoch_schedulers_stepped: the epoch's other epoch-interval schedulers stepped, after its last
            batch (before that batch's end hooks and the epoch-end validation, as in Lightning).
    """

    epoch: int = 0
    epoch_batches: int = 0
    global_step: int = 0
    batches_that_stepped: int = 0
    total_batches: int = 0
    val_checks: int = 0
    batch_end_pending: bool = False
    batch_stepped: bool = True
    epoch_end_pending: bool = False
    epoch_schedulers_stepped: bool = False

    def epoch_log_step(self) -> int:
        """The logger step of epoch-level values: that of the epoch's last logged batch."""
        return max(0, self.batches_that_stepped - 1)

    # ------------------------------------------------------------------ events, recorded as they happen
    def clear_pending(self) -> None:
        """Nothing is pending: a fit begins, or a resume finished the end its checkpoint had pending."""
        self.batch_end_pending = self.epoch_end_pending = False

    def optimizer_stepped(self) -> None:
        """An optimizer took a step."""
        self.global_step += 1

    def batch_trained(self, stepped: bool) -> None:
        """A training batch is done (`stepped`: it ended an accumulation window); its end hooks come next."""
        self.batch_end_pending = True
        self.batch_stepped = stepped

    def batch_finished(self) -> None:
        """The trained batch's end hooks ran: count it."""
        self.epoch_batches += 1
        self.total_batches += 1
        if self.batch_stepped:
            self.batches_that_stepped += 1
        self.batch_end_pending = False

    def epoch_ending(self) -> None:
        """The epoch's batches are done; its end hooks come next."""
        self.epoch_end_pending = True

    def epoch_schedulers_done(self) -> None:
        """The epoch's epoch-interval schedulers (all but ReduceLROnPlateau) stepped after its last batch."""
        self.epoch_schedulers_stepped = True

    def epoch_finished(self) -> None:
        """The epoch's end hooks and schedulers ran: count it."""
        self.epoch += 1
        self.epoch_batches = 0
        self.epoch_end_pending = self.epoch_schedulers_stepped = False

    def validation_finished(self) -> None:
        """A validation run inside fit completed."""
        self.val_checks += 1

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The counters as a resume continues from them, as a plain dict (safe for `weights_only=True`).

        A pending batch end is counted as done. A pending epoch end is counted too, and stays marked
        (`epoch_end_pending`), so that the resume steps the epoch-interval schedulers it had not stepped.
        """
        state = asdict(self)
        if self.batch_end_pending:
            state["epoch_batches"] += 1
            state["total_batches"] += 1
            state["batches_that_stepped"] += int(self.batch_stepped)
            state["batch_end_pending"] = False
        if self.epoch_end_pending:
            state["epoch"] += 1
            state["epoch_batches"] = 0
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters saved by `state_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, value)

"""Loop progress: the counters a run advances and a resume restores, in one dataclass."""

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
    """

    epoch: int = 0
    epoch_batches: int = 0
    global_step: int = 0
    batches_that_stepped: int = 0
    total_batches: int = 0
    val_checks: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (safe for `torch.load(weights_only=True)`)."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters saved by `state_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, value)

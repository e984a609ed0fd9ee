"""What a Trainer is doing: the function it runs, the stage inside it, and whether it has finished.

`trainer.state` is a `TrainerState`. Its enums are `str` subclasses that compare equal to their values,
case-insensitively, so `trainer.state.fn == "fit"` and `trainer.state.stage == "validate"` work as in
Lightning (`lightning.pytorch.trainer.states`).

Over a run the fields move like this:

- before any run: status INITIALIZING, fn None, stage None;
- `fit`: fn FITTING; stage TRAINING from setup on, SANITY_CHECKING during the sanity check and VALIDATING
  during each validation, back to TRAINING after them;
- `validate`/`test`/`predict`: fn and stage VALIDATING/TESTING/PREDICTING from setup to teardown;
- status RUNNING while a run is in progress; at its end FINISHED with stage None (`finished` is True);
  after an exception INTERRUPTED with stage None (`stopped` is True).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["LightningEnum", "RunningStage", "TrainerFn", "TrainerState", "TrainerStatus"]


class LightningEnum(str, Enum):
    """A `str` enum that compares equal to its value, ignoring case ("fit" == TrainerFn.FITTING)."""

    @classmethod
    def from_str(cls, value: str, source: str = "key") -> Any:
        """The member whose name (source="key"), value (source="value") or either (source="any") is `value`."""
        for member in cls:
            if source in ("key", "any") and member.name.lower() == value.lower():
                return member
            if source in ("value", "any") and member.value.lower() == value.lower():
                return member
        raise ValueError(f"{value!r} is not a {cls.__name__}; choose from {[m.value for m in cls]}.")

    def __eq__(self, other: object) -> bool:
        other_value = other.value if isinstance(other, Enum) else other
        if not isinstance(other_value, str):
            return NotImplemented
        return self.value.lower() == other_value.lower()

    def __hash__(self) -> int:
        # equal members and strings must hash alike, so a member finds a plain-string dict key
        return hash(self.value.lower())

    def __str__(self) -> str:
        # "TrainerFn.FITTING", as Lightning prints it, on every Python version
        return f"{type(self).__name__}.{self.name}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class TrainerStatus(LightningEnum):
    """Whether a run is in progress, done, or was interrupted."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    @property
    def stopped(self) -> bool:
        """True once the run has ended, normally or not."""
        return self in (TrainerStatus.FINISHED, TrainerStatus.INTERRUPTED)


class TrainerFn(LightningEnum):
    """The user-facing Trainer method being run."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(LightningEnum):
    """Which loop is running; during `fit` it changes between training, sanity checking and validating."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        """True for the stages that run validation or test steps."""
        return self in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def dataloader_prefix(self) -> str | None:
        """The prefix of this stage's dataloader hook: "val" (`val_dataloader`) while validating or sanity checking."""
        if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            return "val"
        return str(self.value)


@dataclass
class TrainerState:
    """The status, function and stage of a Trainer (see the module docstring for how they move)."""

    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        """True when the last run ended normally."""
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        """True when the last run was interrupted (by an exception or Ctrl-C)."""
        return self.status == TrainerStatus.INTERRUPTED


def stage_flag(stage: RunningStage, doc: str) -> Any:
    """A Trainer property that is True in `stage`; setting it True enters the stage, False leaves it."""

    def get(trainer: Any) -> bool:
        return trainer.state.stage == stage

    def set_(trainer: Any, value: bool) -> None:
        if value:
            trainer.state.stage = stage
        elif trainer.state.stage == stage:
            trainer.state.stage = None

    return property(get, set_, doc=doc)

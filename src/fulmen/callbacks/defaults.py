"""The callbacks a run gets: the user's, the defaults its flags switch on, and the module's own.

The Trainer calls `trainer_callbacks` once when it is built and `with_module_callbacks` at the start of
each run (`LightningModule.configure_callbacks`). Checkpointing callbacks always come last, so that they
see every metric the other callbacks and the module logged before them.
"""

from __future__ import annotations

import datetime
import importlib.util

from fulmen.callbacks.callback import Callback
from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar
from fulmen.callbacks.timer import Timer
from fulmen.utilities import MisconfigurationException, rank_zero_info


def trainer_callbacks(
    user: list[Callback],
    *,
    progress_bar: bool,
    model_summary: bool,
    max_time: datetime.timedelta | None,
    checkpointing: bool,
    checkpointing_refused: bool,
) -> list[Callback]:
    """The user's callbacks plus the defaults the Trainer's flags switch on, checkpointing last."""
    # as Lightning 2.6: the Rich bar and summary when the `rich` package is installed, else TQDM and text
    rich = importlib.util.find_spec("rich") is not None
    callbacks = list(user)
    if progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        if rich:
            from fulmen.callbacks.rich_progress import RichProgressBar

            callbacks.append(RichProgressBar())
        else:
            callbacks.append(TQDMProgressBar())
    if not progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if model_summary and not any(isinstance(c, ModelSummary) for c in callbacks):
        if rich:
            from fulmen.callbacks.rich_progress import RichModelSummary

            callbacks.append(RichModelSummary())
        else:
            callbacks.append(ModelSummary())
    if max_time is not None:
        callbacks = _with_timer(callbacks, max_time)
    if checkpointing:
        # as in Lightning, any Checkpoint callback (even OnExceptionCheckpoint alone) replaces the default one
        if not any(isinstance(c, Checkpoint) for c in callbacks):
            callbacks.append(ModelCheckpoint())
        return monitoring_last(callbacks)
    if checkpointing_refused and any(isinstance(c, Checkpoint) for c in callbacks):
        # as Lightning: a checkpoint callback would silently never run
        raise MisconfigurationException(
            "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in "
            "callbacks list. Remove the checkpoint callback, or set enable_checkpointing=True."
        )
    return callbacks


def with_module_callbacks(
    callbacks: list[Callback], extra: Callback | list[Callback] | None
) -> list[Callback]:
    """Add what `configure_callbacks` returned; each of its types replaces the Trainer's callbacks of that type."""
    if not extra:
        return callbacks
    extra = [extra] if isinstance(extra, Callback) else list(extra)
    types = {type(c) for c in extra}
    kept = [c for c in callbacks if type(c) not in types]
    return monitoring_last(kept + extra)


def monitoring_last(callbacks: list[Callback]) -> list[Callback]:
    """Checkpointing callbacks run last so that they see every metric logged before them."""
    plain = [c for c in callbacks if not isinstance(c, Checkpoint)]
    return plain + [c for c in callbacks if isinstance(c, Checkpoint)]


def _with_timer(callbacks: list[Callback], max_time: datetime.timedelta) -> list[Callback]:
    """`max_time` is kept by a Timer callback (in `trainer.callbacks`), as in Lightning; a user's Timer wins."""
    if any(isinstance(c, Timer) for c in callbacks):
        rank_zero_info("Ignoring `Trainer(max_time=...)`: the callbacks already contain a Timer.")
        return callbacks
    return [*callbacks, Timer(duration=max_time, interval="step")]

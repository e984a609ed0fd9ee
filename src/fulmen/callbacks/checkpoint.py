"""Checkpoint: the base class of every checkpoint-saving callback (ModelCheckpoint, OnExceptionCheckpoint).

Subclass it for a custom saving callback so the Trainer treats yours as one: it is listed in
`trainer.checkpoint_callbacks`, runs after the other callbacks, and its epoch-end hooks run after the
module's, so it sees every metric logged there.
"""

from __future__ import annotations

from fulmen.callbacks.callback import Callback


class Checkpoint(Callback):
    """Marks a callback as one that saves checkpoints; it adds no hooks of its own."""

    runs_after_module_epoch_end = True

"""Checkpoint: the base class of every checkpoint-saving callback (ModelCheckpoint, OnExceptionCheckpoint).

Subclass it for a custom saving callback so the Trainer treats yours as one: it is listed in
`trainer.checkpoint_callbacks`, runs after the other callbacks, and its epoch-end hooks run after the
module's, so it sees every metric logged there.
"""

from __future__ import annotations

from typing import Any

from fulmen.callbacks.callback import Callback


class Checkpoint(Callback):
    """Marks a callback as one that saves checkpoints; it adds no hooks of its own."""

    runs_after_module_epoch_end = True

    def last_checkpoint_candidates(self, trainer: Any) -> list[str]:
        """Files `ckpt_path="last"` may pick when this process has saved no last checkpoint yet (default: none).

        `trainer.fit(ckpt_path="last")` takes this callback's `last_model_path` when it exists, else the
        newest of these candidates (see checkpoint/paths.py).
        """
        return []

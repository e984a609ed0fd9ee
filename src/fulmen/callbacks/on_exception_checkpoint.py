"""OnExceptionCheckpoint: save a checkpoint when a run raises, so that it can be resumed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.utilities import rank_zero_info

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Write ``{dirpath}/{filename}.ckpt`` when fit raises (including KeyboardInterrupt).

    Resume with ``trainer.fit(model, ckpt_path=callback.ckpt_path)``.

    Args:
        dirpath: the folder for the checkpoint.
        filename: the file name, without the ``.ckpt`` extension.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "on_exception") -> None:
        self.dirpath = os.fspath(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        """Where the checkpoint goes."""
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Save the current state (only while fitting: there is nothing to resume otherwise)."""
        if trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.ckpt_path)
        rank_zero_info(f"OnExceptionCheckpoint: {type(exception).__name__} raised; saved {self.ckpt_path}.")

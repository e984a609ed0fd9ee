"""BackupAndRestore: rerun the same script after a crash and training continues where it stopped.

The callback keeps one backup checkpoint (`<backup_dir>/backup.ckpt`), rewritten atomically at the
start of every epoch, every `every_n_train_steps` optimizer steps, and when SIGTERM arrives. When
`trainer.fit` is called without `ckpt_path` and a backup exists, fit resumes from it exactly. After a
fit that ends normally the backup is deleted, so the next run of the script starts afresh.
"""

from __future__ import annotations

import os
from typing import Any

from fulmen.callbacks.callback import Callback
from fulmen.checkpoint import files as _files
from fulmen.utilities import MisconfigurationException, rank_zero_info

Trainer = Any
Module = Any


class BackupAndRestore(Callback):
    """Automatic resume after a crash, a pre-emption or a SIGTERM, without passing `ckpt_path`.

    Args:
        backup_dir: folder of the backup file; default `<default_root_dir>/backup`. A local path or an
            fsspec URL. Use one folder per experiment: two runs sharing it would resume each other.
        every_n_train_steps: also back up every this many optimizer steps (None: only at epoch starts
            and on SIGTERM).
        delete_on_success: remove the backup once fit finishes normally.
    """

    FILE_NAME = "backup.ckpt"

    def __init__(
        self,
        backup_dir: str | os.PathLike[str] | None = None,
        every_n_train_steps: int | None = None,
        delete_on_success: bool = True,
    ) -> None:
        """Configure where and how often to back up; see the class docstring."""
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise MisconfigurationException(
                f"BackupAndRestore(every_n_train_steps={every_n_train_steps}) is not valid; use an int >= 1 or None."
            )
        self.backup_dir = os.fspath(backup_dir) if backup_dir is not None else None
        self.every_n_train_steps = every_n_train_steps
        self.delete_on_success = delete_on_success
        self._last_step_saved = -1

    @property
    def backup_path(self) -> str:
        """The backup file (known once fit has set the callback up)."""
        if self.backup_dir is None:
            raise MisconfigurationException(
                "BackupAndRestore.backup_path is known only once trainer.fit started."
            )
        return os.path.join(self.backup_dir, self.FILE_NAME)

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Choose the folder."""
        if self.backup_dir is None:
            self.backup_dir = os.path.join(trainer.default_root_dir, "backup")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Back up the state between two epochs (nothing to back up before the first batch ever)."""
        if trainer.fit_loop.progress.total_batches > 0 and trainer.fit_loop.progress.epoch_batches == 0:
            self._backup(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Back up every `every_n_train_steps` steps."""
        n = self.every_n_train_steps
        if n is not None and trainer.global_step % n == 0 and trainer.global_step != self._last_step_saved:
            self._backup(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Training finished: the backup is no longer needed."""
        if self.delete_on_success and trainer.is_global_zero and self.backup_dir is not None:
            _files.remove(self.backup_path)

    def _backup(self, trainer: Trainer) -> None:
        trainer.save_checkpoint(self.backup_path)
        self._last_step_saved = trainer.global_step

    # ------------------------------------------------------------------ checkpoint targets (see Callback)
    def resume_checkpoint_path(self, trainer: Trainer) -> str | None:
        """The backup, when one exists: fit without `ckpt_path` resumes from it."""
        if self.backup_dir is None or not _files.exists(self.backup_path):
            return None
        rank_zero_info(f"BackupAndRestore: resuming from {self.backup_path!r}")
        return self.backup_path

    def interrupt_checkpoint_path(self, trainer: Trainer) -> str | None:
        """On SIGTERM the state goes into the backup."""
        return self.backup_path if self.backup_dir is not None else None

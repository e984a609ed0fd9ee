"""BackupAndRestore: rerun the same script after a crash and training continues where it stopped.

The callback keeps one backup checkpoint (`<backup_dir>/backup.ckpt`), rewritten atomically at the
start of every epoch, every `every_n_train_steps` optimizer steps, and when SIGTERM arrives. When
`trainer.fit` is called without `ckpt_path` and a backup exists, fit resumes from it exactly. After a
fit that ends normally the backup is deleted, so the next run of the script starts afresh.
"""

from __future__ import annotations

import os
from typing import Any

from fulmen import preemption
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
        self._installed = False
        self._sigterm_sync = False

    @property
    def backup_path(self) -> str:
        """The backup file (known once fit has set the callback up)."""
        if self.backup_dir is None:
            raise MisconfigurationException(
                "BackupAndRestore.backup_path is known only once trainer.fit started."
            )
        return os.path.join(self.backup_dir, self.FILE_NAME)

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Choose the folder and catch SIGTERM during fit."""
        if self.backup_dir is None:
            self.backup_dir = os.path.join(trainer.default_root_dir, "backup")
        self._sigterm_sync = trainer.world_size > 1
        if stage == "fit" and not self._installed:
            preemption.install_sigterm_handler()
            self._installed = True

    def teardown(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Give SIGTERM back to the previous handler."""
        if self._installed:
            preemption.uninstall_sigterm_handler()
            self._installed = False

    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None:
        """Keep the backup (that is the point) and release SIGTERM."""
        self.teardown(trainer, pl_module, "fit")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Back up the state between two epochs (nothing to back up before the first batch ever)."""
        if trainer._progress.total_batches > 0 and trainer._progress.epoch_batches == 0:
            self._backup(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Back up every `every_n_train_steps` steps; honour a pending SIGTERM."""
        preemption.poll_sigterm(trainer, batch_idx, self._sigterm_sync)
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

    # ------------------------------------------------------------------ used by checkpoint/paths.py and preemption.py
    def _backup_to_resume(self, trainer: Trainer) -> str | None:
        if self.backup_dir is None or not _files.exists(self.backup_path):
            return None
        rank_zero_info(f"BackupAndRestore: resuming from {self.backup_path!r}")
        return self.backup_path

    def _interrupt_path(self, trainer: Trainer) -> str | None:
        return self.backup_path if self.backup_dir is not None else None

"""Which checkpoint a run starts from: `ckpt_path` ("last", "best" or a path), else an autoresume backup."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fulmen.checkpoint.files import _WRITER, CheckpointError, _is_url, exists
from fulmen.checkpoint.state import restore_callbacks, restore_datamodule, restore_module
from fulmen.epoch_replay import ResumeState
from fulmen.utilities import is_overridden, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


def resolve_ckpt_path(trainer: Trainer, ckpt_path: Any, fn: str) -> str | None:
    """Turn `ckpt_path` ("last", "best", "auto" or a path) into a file path; fail early when it does not exist."""
    if ckpt_path == "best":
        cb = trainer.checkpoint_callback
        path = getattr(cb, "best_model_path", None) if cb is not None else None
        if not path:
            raise CheckpointError(
                f'trainer.{fn}(ckpt_path="best") but no best checkpoint was saved yet in this process; '
                "pass the checkpoint's path instead."
            )
        return str(path)
    if ckpt_path == "last":
        path = _find_last(trainer)
        if path is None:
            rank_zero_warn(
                f'trainer.{fn}(ckpt_path="last") found no last checkpoint; starting from scratch. Set '
                "ModelCheckpoint(save_last=True, dirpath=...) so that a rerun finds it."
            )
        return path
    path = os.fspath(ckpt_path)
    if not exists(path):
        raise CheckpointError(f"ckpt_path={path!r} does not exist; nothing was trained. Check the path.")
    return path


def check_ckpt_path(ckpt_path: Any) -> None:
    """Fail before anything runs when an explicit checkpoint path does not exist."""
    if ckpt_path is None or ckpt_path in ("last", "best"):
        return
    path = os.fspath(ckpt_path)
    if not exists(path):
        raise CheckpointError(f"ckpt_path={path!r} does not exist; nothing was trained. Check the path.")


def _find_last(trainer: Trainer) -> str | None:
    """The newest `last*.ckpt` of the checkpoint callbacks (this process's, else on disk)."""
    _WRITER.flush()  # the candidates below are read with os.path, not `exists`
    candidates: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", "") and exists(cb.last_model_path):
            return str(cb.last_model_path)
        candidates.extend(cb.last_checkpoint_candidates(trainer))
    local = [c for c in candidates if not _is_url(c) and os.path.exists(c)]
    if local:
        return max(local, key=os.path.getmtime)
    return candidates[0] if candidates else None


def load_for_run(
    trainer: Trainer, ckpt_path: Any, fn: str, weights_only: bool | None = None
) -> dict[str, Any] | None:
    """The checkpoint a run starts from (`ckpt_path`, else a callback's `resume_checkpoint_path`), weights restored.

    `weights_only` is passed to `torch.load` (None: fulmen's safe default).
    """
    trainer.fit_loop.resume_state = ResumeState()
    if ckpt_path is None:
        ckpt_path = auto_resume_path(trainer, fn)
        if ckpt_path is None:
            return None
    path = resolve_ckpt_path(trainer, ckpt_path, fn)
    if path is None:
        return None
    trainer.ckpt_path = path
    ckpt = trainer.strategy.load_checkpoint(path, weights_only=weights_only)
    restore_module(trainer, ckpt)
    restore_datamodule(trainer, ckpt)
    if fn == "fit":
        restore_callbacks(trainer, ckpt)
    return ckpt


def auto_resume_path(trainer: Trainer, fn: str) -> str | None:
    """The first `Callback.resume_checkpoint_path` (e.g. a `BackupAndRestore` backup), when `fit` gets no `ckpt_path`."""
    if fn != "fit":
        return None
    # fulmen's own hook, so only asked of callbacks that define it: code that wraps every Callback
    # method (as Lightning's recorded-hook tests do) sees no call Lightning would not make
    for cb in trainer.callbacks:
        if not is_overridden("resume_checkpoint_path", cb):
            continue
        path = cb.resume_checkpoint_path(trainer)
        if path is not None:
            return str(path)
    from fulmen.environments import hpc_checkpoint_path, requeue_environment

    if requeue_environment(trainer) is not None:  # a requeued SLURM job continues from its hpc checkpoint
        return hpc_checkpoint_path(trainer.default_root_dir)
    return None

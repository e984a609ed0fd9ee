"""Checkpoints: what a run's state looks like as one dict, how it is written and how it is restored.

`dump` gathers every piece of resumable state into one named dict and `restore_*` is its mirror.
Files are written atomically and always read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

FORMAT_VERSION = "2.5.0"  # the Lightning checkpoint layout these files follow


def _version() -> str:
    from fulmen import __version__

    return __version__


def dump(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Everything needed to rebuild the module and, unless `weights_only`, resume the run."""
    module = trainer.lightning_module
    progress = trainer._progress
    ckpt: dict[str, Any] = {
        "epoch": progress.epoch,
        "global_step": progress.global_step,
        "pytorch-lightning_version": FORMAT_VERSION,
        "fulmen_version": _version(),
        "state_dict": trainer.strategy.lightning_module_state_dict(),
        "loops": {"fit_loop": progress.state_dict()},
    }
    if not weights_only:
        ckpt["callbacks"] = {cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()}
        ckpt["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
        ckpt["lr_schedulers"] = [cfg.scheduler.state_dict() for cfg in trainer.lr_scheduler_configs]
        precision_state = trainer.precision_plugin.state_dict()
        if precision_state:
            ckpt[type(trainer.precision_plugin).__name__] = precision_state
    if module.hparams:
        ckpt["hparams_name"] = "kwargs"
        ckpt["hyper_parameters"] = dict(module.hparams)
    dm = trainer.datamodule
    if dm is not None:
        if dm.hparams:
            ckpt["datamodule_hparams_name"] = "kwargs"
            ckpt["datamodule_hyper_parameters"] = dict(dm.hparams)
        ckpt[type(dm).__qualname__] = dm.state_dict()
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, ckpt)
    if dm is not None:
        dm.on_save_checkpoint(ckpt)
    module.on_save_checkpoint(ckpt)
    return ckpt


def save(trainer: Trainer, path: str | os.PathLike[str], weights_only: bool = False) -> None:
    """Write the checkpoint of `trainer` to `path` on rank 0."""
    ckpt = dump(trainer, weights_only)
    if trainer.is_global_zero:
        atomic_save(ckpt, os.fspath(path))
    trainer.strategy.barrier("save_checkpoint")


def atomic_save(obj: dict[str, Any], path: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".ckpt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (`weights_only=True`), with errors that name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise MisconfigurationException(f"Could not load checkpoint {path!r}: {err}") from err


def resolve_ckpt_path(trainer: Trainer, ckpt_path: Any, fn: str) -> str | None:
    """Turn `ckpt_path` ("last", "best" or a path) into a file path; fail early when it does not exist."""
    if ckpt_path in ("last", "best"):
        cb = trainer.checkpoint_callback
        attr = "last_model_path" if ckpt_path == "last" else "best_model_path"
        path = getattr(cb, attr, None) if cb is not None else None
        if not path:
            raise MisconfigurationException(f'ckpt_path="{ckpt_path}" but no such checkpoint was saved yet.')
        return str(path)
    path = os.fspath(ckpt_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"ckpt_path={path!r} does not exist; nothing was trained. Check the path.")
    return path


def restore_module(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Load the weights (and the module's own on_load_checkpoint) from `ckpt`."""
    module = trainer.lightning_module
    module.on_load_checkpoint(ckpt)
    trainer.strategy.load_model_state_dict(ckpt["state_dict"])


def restore_training_state(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Restore optimizers, schedulers, callbacks and loop progress from `ckpt`."""
    module = trainer.lightning_module
    for cb in trainer.callbacks:
        cb.on_load_checkpoint(trainer, module, ckpt)
        state = ckpt.get("callbacks", {}).get(cb.state_key)
        if state is not None:
            cb.load_state_dict(state)
    for opt, state in zip(trainer.optimizers, ckpt.get("optimizer_states", [])):
        opt.load_state_dict(state)
    for cfg, state in zip(trainer.lr_scheduler_configs, ckpt.get("lr_schedulers", [])):
        cfg.scheduler.load_state_dict(state)
    loops = ckpt.get("loops", {}).get("fit_loop")
    if loops:
        trainer._progress.load_state_dict(loops)


def resume_batches(trainer: Trainer, loader: Any, start: int) -> Iterable[tuple[int, Any]]:
    """Enumerate `loader` from batch `start` (skipping the batches of the interrupted epoch)."""
    for i, batch in enumerate(loader):
        if i >= start:
            yield i, batch


def load_module_from_checkpoint(
    cls: Any, path: Any, map_location: Any = None, strict: bool | None = None, **overrides: Any
) -> Any:
    """Build `cls` from the checkpoint's hyper-parameters (updated by `overrides`) and load its weights."""
    ckpt = load(path, map_location=map_location or "cpu")
    hparams = dict(ckpt.get("hyper_parameters", {}))
    hparams.update(overrides)
    module = cls(**hparams)
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=True if strict is None else strict)
    return module


def load_datamodule_from_checkpoint(cls: Any, path: Any, map_location: Any = None, **overrides: Any) -> Any:
    """Build a datamodule from the hyper-parameters stored in a checkpoint."""
    ckpt = load(path, map_location=map_location or "cpu")
    hparams = dict(ckpt.get("datamodule_hyper_parameters", {}))
    hparams.update(overrides)
    dm = cls(**hparams)
    state = ckpt.get(cls.__qualname__)
    if state:
        dm.load_state_dict(state)
    return dm

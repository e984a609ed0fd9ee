"""Upgrading checkpoints written by older Lightning versions, and loading pickles that name Lightning.

`migrate_checkpoint` rewrites, in place, the parts of an old checkpoint dict whose layout changed
(the version each change arrived in is the key of `MIGRATIONS`). `pl_legacy_patch` lets `torch.load`
unpickle objects that old checkpoints reference by their Lightning module path
(`pytorch_lightning.utilities.parsing.AttributeDict`, ...): inside it those paths import from fulmen.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["MIGRATIONS", "migrate_checkpoint", "pl_legacy_patch"]

VERSION_KEY = "pytorch-lightning_version"
FORMAT_VERSION = "2.5.0"  # the Lightning checkpoint layout fulmen writes (re-exported by fulmen.checkpoint)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _legacy_callback_keys(checkpoint: dict[str, Any]) -> None:
    # before 0.10 ModelCheckpoint and EarlyStopping kept their state as top-level keys
    callbacks = checkpoint.setdefault("callbacks", {})
    moves = {
        "checkpoint_callback_best_model_score": ("ModelCheckpoint", "best_model_score"),
        "checkpoint_callback_best_model_path": ("ModelCheckpoint", "best_model_path"),
        "checkpoint_callback_best": ("ModelCheckpoint", "best_model_score"),
        "early_stop_callback_wait": ("EarlyStopping", "wait_count"),
        "early_stop_callback_patience": ("EarlyStopping", "patience"),
    }
    for old, (owner, key) in moves.items():
        if old in checkpoint:
            callbacks.setdefault(owner, {})[key] = checkpoint.pop(old)


def _callback_class_keys(checkpoint: dict[str, Any]) -> None:
    # until 1.9 the callback states were keyed by the callback's class itself, not by a string
    callbacks = checkpoint.get("callbacks")
    if isinstance(callbacks, dict):
        for key in [k for k in callbacks if isinstance(k, type)]:
            callbacks[key.__qualname__] = callbacks.pop(key)


def _drop_apex_amp_state(checkpoint: dict[str, Any]) -> None:
    # NVIDIA apex support was removed in 2.0; its scaler state cannot be restored into anything
    checkpoint.pop("amp_scaling_state", None)


# version -> the changes that turn a checkpoint older than that version into that version's layout
MIGRATIONS: dict[str, list[Callable[[dict[str, Any]], None]]] = {
    "0.10.0": [_legacy_callback_keys],
    "1.9.0": [_callback_class_keys],
    "2.0.0": [_drop_apex_amp_state],
}


def migrate_checkpoint(
    checkpoint: dict[str, Any], target_version: str | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Apply, in place, every migration newer than the checkpoint's version (up to `target_version`).

    Returns the checkpoint and, per version, the names of the migrations that were applied. The
    checkpoint's version key is set to `target_version` (default: the layout fulmen writes).
    """
    target = _version_tuple(target_version or FORMAT_VERSION)
    have = _version_tuple(str(checkpoint.get(VERSION_KEY, "0.0.0")))
    applied: dict[str, list[str]] = {}
    for version, functions in sorted(MIGRATIONS.items(), key=lambda item: _version_tuple(item[0])):
        if have < _version_tuple(version) <= target:
            for fn in functions:
                fn(checkpoint)
            applied[version] = [fn.__name__ for fn in functions]
    if have < target:
        checkpoint[VERSION_KEY] = target_version or FORMAT_VERSION
    return checkpoint, applied


@contextlib.contextmanager
def pl_legacy_patch() -> Iterator[None]:
    """Inside this block, `lightning.*` and `pytorch_lightning.*` module paths import from fulmen.

    Meant around `torch.load(..., weights_only=False)` of a checkpoint that pickled Lightning objects.
    Modules imported under those names inside the block are removed again at its end, unless the
    zero-change mode (fulmen.compat) was already on.
    """
    from fulmen import compat

    if compat.is_installed():
        yield
        return
    before = set(sys.modules)
    compat.install()
    try:
        yield
    finally:
        compat.uninstall()
        for name in set(sys.modules) - before:
            if name.partition(".")[0] in compat.ROOTS:
                del sys.modules[name]

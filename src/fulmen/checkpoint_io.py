"""Checkpoint I/O plugins: how a checkpoint dict becomes a file and back (Lightning's `plugins.io`).

fulmen writes checkpoints itself: atomically, fsync'd, honouring the umask, loaded weights-only, and
ModelCheckpoint's files finished on a background thread whose announced paths wait for the write
(see docs/checkpoints.md). These classes let code written for Lightning choose or replace that step:

- `CheckpointIO`: the interface (`save_checkpoint`, `load_checkpoint`, `remove_checkpoint`, `teardown`).
- `TorchCheckpointIO`: the default, fulmen's own safe writer and loader.
- `AsyncCheckpointIO(checkpoint_io=None)`: Lightning's opt-in for writing on a thread. `save_checkpoint`
  returns at once and the file appears later, so a path announced meanwhile may not exist yet; an
  error surfaces at the next save or at the end of the run.
- `XLACheckpointIO`: TPUs are out of scope for fulmen; constructing it says so.

Pass one in `Trainer(plugins=[...])`; it becomes `trainer.strategy.checkpoint_io`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import torch

from fulmen.checkpoint import files as _ckpt
from fulmen.writer import BackgroundWriter

PathLike = str | os.PathLike[str]


class CheckpointIO(ABC):
    """The interface for writing, reading and deleting checkpoint files."""

    @abstractmethod
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any = None
    ) -> None:
        """Write `checkpoint` to `path`."""

    @abstractmethod
    def load_checkpoint(
        self, path: PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read the checkpoint at `path` (`weights_only=False` may run code stored in the file)."""

    @abstractmethod
    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint at `path`."""

    def teardown(self) -> None:
        """Called when the run ends (nothing to release by default)."""
        return None


class TorchCheckpointIO(CheckpointIO):
    """fulmen's writer and loader: atomic durable files, read with `torch.load(weights_only=True)`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any = None
    ) -> None:
        """Write `checkpoint` to `path` atomically (a killed process leaves the old file or the new one)."""
        if storage_options is not None:
            raise TypeError(
                f"TorchCheckpointIO.save_checkpoint(storage_options={storage_options!r}) is not supported; pass "
                "a custom CheckpointIO in Trainer(plugins=[...]) that understands them, or drop the argument."
            )
        _ckpt.atomic_save(checkpoint, os.fspath(path))

    def load_checkpoint(
        self, path: PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read `path` weights-only (safe) unless `weights_only=False` says the file is trusted."""
        return _ckpt.load(path, map_location=map_location or "cpu", trusted=weights_only is False)

    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete `path` (after the background writes in flight, one of which may be replacing it)."""
        _ckpt.remove(path)


class AsyncCheckpointIO(CheckpointIO):
    """Save on a background thread through another CheckpointIO (default `TorchCheckpointIO`).

    The tensors are copied on the calling thread, so training may change them right after; the
    wrapped plugin then writes on one thread, in order. A failed save raises at the next
    `save_checkpoint`, `load_checkpoint` or at `teardown`.
    """

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        """Wrap `checkpoint_io` (default: `TorchCheckpointIO()`)."""
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self._writer = BackgroundWriter("fulmen-async-checkpoint-io")

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any = None
    ) -> None:
        """Copy the tensors now and hand the write to the background thread."""
        snapshot = _clone_tensors(checkpoint)
        inner, target = self.checkpoint_io, os.fspath(path)
        self._writer.submit(
            lambda: inner.save_checkpoint(snapshot, target, storage_options=storage_options),
            f"checkpoint {target!r}",
        )

    def load_checkpoint(
        self, path: PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Wait for the saves in flight, then read through the wrapped plugin."""
        self._writer.flush()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete `path` once the saves queued before have run."""
        inner, target = self.checkpoint_io, os.fspath(path)
        self._writer.submit(lambda: inner.remove_checkpoint(target), f"the removal of {target!r}")

    def teardown(self) -> None:
        """Wait for every queued save (raising if one failed), then tear the wrapped plugin down."""
        self._writer.flush()
        self.checkpoint_io.teardown()


class XLACheckpointIO(CheckpointIO):
    """TPU checkpoint I/O: out of scope for fulmen (there is no XLA support to save from)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Refuse clearly: fulmen does not run on TPUs."""
        raise NotImplementedError(
            "XLACheckpointIO is out of scope for fulmen: TPU/XLA training is not supported (see docs/migrating.md). "
            "Remove it from Trainer(plugins=[...]); on GPUs and CPUs the default TorchCheckpointIO is used."
        )

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any = None
    ) -> None:
        """Unreachable: construction already refused."""
        raise NotImplementedError

    def load_checkpoint(
        self, path: PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Unreachable: construction already refused."""
        raise NotImplementedError

    def remove_checkpoint(self, path: PathLike) -> None:
        """Unreachable: construction already refused."""
        raise NotImplementedError


def writes_like_fulmen(io: CheckpointIO) -> bool:
    """True for a plain `TorchCheckpointIO`: then fulmen may finish ModelCheckpoint's writes in the background."""
    return type(io).save_checkpoint is TorchCheckpointIO.save_checkpoint and "save_checkpoint" not in vars(io)


def _clone_tensors(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):  # OrderedDict (state dicts) keeps its type
        return type(obj)((k, _clone_tensors(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_clone_tensors(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone_tensors(v) for v in obj)
    return obj

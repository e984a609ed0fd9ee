"""Preemption: SIGTERM during fit becomes "write a checkpoint at the next batch boundary, then exit 0"."""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from fulmen.checkpoint.files import atomic_save
from fulmen.checkpoint.state import dump
from fulmen.utilities import SIGTERMException

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


class _Sigterm:
    """Turns SIGTERM into "write a checkpoint at the next batch boundary, then exit with status 0"."""

    received = False
    _installed = 0
    _previous: Any = None

    @classmethod
    def install(cls) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if cls._installed == 0:
            try:
                cls._previous = signal.signal(signal.SIGTERM, cls._handler)
            except (ValueError, OSError):  # not allowed here (e.g. some embedded interpreters)
                return
            cls.received = False
        cls._installed += 1

    @classmethod
    def uninstall(cls) -> None:
        if cls._installed == 0 or threading.current_thread() is not threading.main_thread():
            return
        cls._installed -= 1
        if cls._installed == 0:
            signal.signal(signal.SIGTERM, cls._previous if cls._previous is not None else signal.SIG_DFL)
            cls._previous = None

    @classmethod
    def _handler(cls, signum: int, frame: Any) -> None:
        cls.received = True


def install_sigterm_handler() -> None:
    """Catch SIGTERM during fit (nested calls are counted); see `handle_sigterm`."""
    _Sigterm.install()


def uninstall_sigterm_handler() -> None:
    """Undo one `install_sigterm_handler`; the previous handler returns with the last one."""
    _Sigterm.uninstall()


def sigterm_received() -> bool:
    """True once SIGTERM arrived during fit."""
    return _Sigterm.received


SIGTERM_SYNC_EVERY = 8  # with several processes, ranks agree on a SIGTERM every this many batches


def sync_sigterm(trainer: Trainer, batch_idx: int) -> None:
    """Several processes: every `SIGTERM_SYNC_EVERY` batches, all ranks agree whether any got SIGTERM.

    A signal reaches the ranks at slightly different batches; acting on it alone would make one rank
    gather the checkpoint while the others are in the next step's collectives (a hang).
    """
    if batch_idx % SIGTERM_SYNC_EVERY == 0 and trainer.strategy.reduce_boolean_decision(
        _Sigterm.received, all=False
    ):
        handle_sigterm(trainer, agreed=True)


def poll_sigterm(trainer: Trainer, batch_idx: int, synced: bool) -> None:
    """At a train batch's end: act on a pending SIGTERM (agreed across ranks when `synced`)."""
    if synced:
        sync_sigterm(trainer, batch_idx)
    elif _Sigterm.received:
        handle_sigterm(trainer)


def handle_sigterm(trainer: Trainer, agreed: bool = False) -> None:
    """If SIGTERM arrived: write one checkpoint to every checkpointing callback's interrupt path, then exit.

    Called at a batch boundary (a train batch's end), where the state is consistent; `agreed` when
    the ranks decided together (`sync_sigterm`).
    """
    if not (_Sigterm.received or agreed):
        return
    _Sigterm.received = False
    paths = []
    for cb in trainer.callbacks:
        target = getattr(cb, "_interrupt_path", None)
        if target is not None:
            path = target(trainer)
            if path:
                paths.append(path)
    if paths:
        ckpt = dump(trainer)
        if trainer.is_global_zero:
            for path in paths:
                atomic_save(ckpt, path)
        for cb in trainer.callbacks:
            after = getattr(cb, "_after_interrupt_save", None)
            if after is not None:
                after(trainer)
    message = (
        f"SIGTERM received: checkpoint written to {paths}; exiting."
        if paths
        else "SIGTERM received; exiting."
    )
    if trainer.is_global_zero:
        print(message, file=sys.stderr, flush=True)
    raise SIGTERMException(0)

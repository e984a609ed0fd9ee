"""Preemption: SIGTERM during fit becomes "write a checkpoint at the next batch boundary, then exit 0".

SLURM and Kubernetes send SIGTERM before they kill a job. The fit loop owns the handling: it starts a
`Preemption` when fit begins, polls it at the end of every training batch (after that batch's
`on_train_batch_end` hooks, where the state is consistent) and stops it when fit ends. Callbacks
take part only by declaring where the checkpoint goes: `Callback.interrupt_checkpoint_path` (and
`Callback.interrupt_checkpoint_saved` to hear that it was written). Without such a callback fit
leaves SIGTERM alone.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from fulmen.callbacks.callback import Callback
from fulmen.checkpoint.files import atomic_save
from fulmen.checkpoint.state import dump
from fulmen.utilities import SIGTERMException, overriding

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

SIGTERM_SYNC_EVERY = 8  # with several processes, ranks agree on a SIGTERM every this many batches


class _Sigterm:
    """The process-wide SIGTERM handler: it only records that the signal arrived."""

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


def sigterm_received() -> bool:
    """True once SIGTERM arrived during fit (and was not acted on yet)."""
    return _Sigterm.received


class Preemption:
    """SIGTERM handling for one fit: `start` (or `with`), `poll` at each train batch's end, `stop`."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.active = False
        self._synced = False

    def start(self) -> None:
        """Catch SIGTERM from now on, if a callback declares where the checkpoint goes (nested fits count)."""
        if any(overriding("interrupt_checkpoint_path", cb, Callback) for cb in self.trainer.callbacks):
            _Sigterm.install()
            self.active = True
            self._synced = self.trainer.world_size > 1  # read once: `poll` runs at every train batch

    def stop(self) -> None:
        """Give SIGTERM back to the handler that was there before `start`."""
        if self.active:
            _Sigterm.uninstall()
            self.active = False

    def __enter__(self) -> Preemption:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def poll(self, batch_idx: int) -> None:
        """At a train batch's end: act on a pending SIGTERM.

        With several processes the ranks agree every `SIGTERM_SYNC_EVERY` batches: a signal reaches
        them at slightly different batches, and acting on it alone would make one rank gather the
        checkpoint while the others are in the next step's collectives (a hang).
        """
        if self._synced:
            if batch_idx % SIGTERM_SYNC_EVERY == 0 and self.trainer.strategy.reduce_boolean_decision(
                _Sigterm.received, all=False
            ):
                self._checkpoint_and_exit()
        elif _Sigterm.received:
            self._checkpoint_and_exit()

    def _checkpoint_and_exit(self) -> None:
        """Write one checkpoint to every declared interrupt path, then raise `SIGTERMException` (status 0)."""
        trainer = self.trainer
        _Sigterm.received = False
        targets = []
        for cb in trainer.callbacks:
            path = cb.interrupt_checkpoint_path(trainer)
            if path:
                targets.append((cb, path))
        paths = [path for _, path in targets]
        if targets:
            ckpt = dump(trainer)
            if trainer.is_global_zero:
                for path in dict.fromkeys(paths):
                    atomic_save(ckpt, path)
            for cb, path in targets:
                cb.interrupt_checkpoint_saved(trainer, path)
        message = (
            f"SIGTERM received: checkpoint written to {paths}; exiting."
            if paths
            else "SIGTERM received; exiting."
        )
        if trainer.is_global_zero:
            print(message, file=sys.stderr, flush=True)
        raise SIGTERMException(0)

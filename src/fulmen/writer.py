"""One background thread that finishes file writes in the order they were handed over.

`ModelCheckpoint` saves during training. Serializing the state has to happen on the training thread
(it is the snapshot), but the rest of a durable save is waiting on the disk: writing the bytes, fsync,
rename, fsync of the folder, deleting the checkpoint it replaces. Those waits release the GIL, so a
thread can do them while training goes on. Tasks run strictly in order, and after a task fails the
ones behind it are dropped, so a deletion queued after a write never runs unless that write landed:
the newest complete checkpoint is always on disk, whenever the process dies.

Whoever reads what was written calls `flush` first (fulmen does before loading a checkpoint, at the
end of fit and at exit). `expected` answers "will this path exist once the queue has run?" without
waiting, so that naming the next file does not block training on the previous write.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable


class BackgroundWriteError(RuntimeError):
    """A background write failed; raised on the training thread at the next submit or flush."""


class BackgroundWriter:
    """Runs submitted callables one by one on a daemon thread; `flush` waits for all of them."""

    def __init__(self, name: str = "fulmen-writer") -> None:
        self._name = name
        self._pid = -1
        self._queue: queue.Queue[tuple[Callable[[], None], str, str | None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # set by the worker thread; a plain read is safe
        self._atexit = False
        self._lock = threading.Lock()
        # path -> (tasks queued for it, whether it exists after the last of them)
        self._outcomes: dict[str, tuple[int, bool]] = {}

    def submit(
        self, task: Callable[[], None], what: str, path: str | None = None, creates: bool = True
    ) -> None:
        """Queue `task` (described by `what` in error messages) behind everything submitted before.

        `path`: the file the task writes (`creates=True`) or deletes (`creates=False`), for `expected`.
        """
        self._raise_error()
        if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
            self._pid = os.getpid()
            self._queue = queue.Queue()
            self._thread = None
            self._outcomes = {}
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
            if not self._atexit:
                atexit.register(self.flush)
                self._atexit = True
        if path is not None:
            with self._lock:
                count, _ = self._outcomes.get(path, (0, creates))
                self._outcomes[path] = (count + 1, creates)
        self._queue.put((task, what, path))

    def expected(self, path: str) -> bool | None:
        """Whether `path` exists once the queued tasks have run; None when no queued task touches it."""
        with self._lock:
            outcome = self._outcomes.get(path)
        return None if outcome is None else outcome[1]

    def raise_if_failed(self) -> None:
        """Raise the error of a failed background task now, without waiting for the others (cheap)."""
        if self.error is not None:
            self._raise_error()

    def pending(self) -> bool:
        """True while a submitted task has not finished."""
        return self._pid == os.getpid() and self._queue.unfinished_tasks > 0

    def flush(self) -> None:
        """Wait until every submitted task has run; raise if one failed."""
        if self._pid == os.getpid() and self._thread is not None:
            self._queue.join()
        self._raise_error()

    def _work(self) -> None:
        while True:
            task, what, path = self._queue.get()
            try:
                if self.error is None:  # after a failure, drop what follows (e.g. deleting the older file)
                    task()
            except BaseException as err:  # handed to the training thread, which raises it
                self.error = BackgroundWriteError(f"Writing {what} failed: {type(err).__name__}: {err}")
                self.error.__cause__ = err
            finally:
                if path is not None:
                    self._forget(path)
                self._queue.task_done()

    def _forget(self, path: str) -> None:
        with self._lock:
            count, creates = self._outcomes[path]
            if count <= 1:
                del self._outcomes[path]
            else:
                self._outcomes[path] = (count - 1, creates)

    def _raise_error(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error

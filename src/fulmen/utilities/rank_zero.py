"""What the processes say: rank-zero printing and warnings, and the warning classes users filter.

In a run of many processes, only global rank 0 prints and warns, unless a message is prefixed with its
rank. `rank_zero_only.rank` is the process's global rank: read from the launcher's environment at
import, and set again by the distributed strategies once ranks are known.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("fulmen")


class PossibleUserWarning(UserWarning):
    """A warning about something in the user's code that is likely, but not surely, a mistake."""


class LightningDeprecationWarning(DeprecationWarning):
    """A fulmen (Lightning) API the user called is deprecated."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Silence PossibleUserWarning (from every module, or the modules whose name matches `module`)."""
    warnings.filterwarnings("ignore", module=module, category=PossibleUserWarning)


def _env_rank() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def rank_zero_only(fn: F) -> F:
    """Decorate `fn` so that it runs only on the process of global rank 0."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return fn(*args, **kwargs)
        return None

    return wrapped  # type: ignore[return-value]


rank_zero_only.rank = _env_rank()  # type: ignore[attr-defined]


def set_global_rank(rank: int) -> None:
    """This process's global rank, for fulmen's and lightning_utilities' `rank_zero_only`."""
    from fulmen.utilities.shared_rank import sync

    rank_zero_only.rank = rank  # type: ignore[attr-defined]
    sync(rank)


@rank_zero_only
def rank_zero_warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 3) -> None:
    """Warn once per process group: only rank 0 speaks."""
    warnings.warn(message, category, stacklevel=stacklevel)


@rank_zero_only
def rank_zero_info(message: str) -> None:
    """Print an informational line on rank 0."""
    print(message, flush=True)


def rank_zero_deprecation(message: str) -> None:
    """Emit a DeprecationWarning on rank 0 pointing at the user's call site."""
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        warnings.warn(message, DeprecationWarning, stacklevel=4)


@rank_zero_only
def rank_zero_debug(message: str, *args: Any, **kwargs: Any) -> None:
    """Log a debug line on rank 0 (through the `fulmen` logger)."""
    log.debug(message, *args, **kwargs)


def rank_prefixed_message(message: str, rank: int | None) -> str:
    """`message` prefixed with "[rank: N] " when a rank is given."""
    return f"[rank: {rank}] {message}" if rank is not None else message


class WarningCache(set):  # type: ignore[type-arg]
    """Remembers messages already shown, so each warning or info line appears once per process."""

    def warn(self, message: str, stacklevel: int = 5, **kwargs: Any) -> None:
        """Warn with `message` the first time only."""
        if message not in self:
            self.add(message)
            rank_zero_warn(message, stacklevel=stacklevel, **kwargs)

    def info(self, message: str) -> None:
        """Print `message` the first time only."""
        if message not in self:
            self.add(message)
            rank_zero_info(message)


def _share_rank() -> None:
    from fulmen.utilities.shared_rank import install

    install()


_share_rank()

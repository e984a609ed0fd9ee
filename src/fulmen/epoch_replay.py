"""Epoch replay: where the train loader resumes mid-epoch, and how the epoch's batch order is replayed.

The fit loop takes each epoch's batches from `train_batches`. At an epoch's start it records the RNG,
generator and sampler states before the DataLoader iterator is made (they go into the checkpoint).
After a mid-epoch resume the same permutation is replayed from those states and the batches already
trained are skipped at the sampler, without reading their data (for a map-style DataLoader).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fulmen.seed import rng_states, set_rng_states
from fulmen.utilities import rank_zero_warn

_KNOWN_SAMPLERS = (
    "SequentialSampler",
    "RandomSampler",
    "DistributedSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
    "_EvenShard",  # fulmen's distributed wrappers: deterministic given the sampler they wrap
    "_UnevenShard",
)


@dataclass
class ResumeState:
    """What the fit loop keeps between epochs for an exact resume (`trainer.fit_loop.resume_state`)."""

    epoch_start: dict[str, Any] | None = None  # this epoch's start: RNG, generators, sampler states
    pending_rng: dict[str, Any] | None = None  # restored RNG, applied right before the next batch
    pending_epoch_start: dict[str, Any] | None = None  # the interrupted epoch's start, from a checkpoint
    # the run that wrote the restored checkpoint had the train loader's workers running: with persistent
    # workers its next epoch drew no worker seed (until the first epoch after the restore has started)
    continues_workers: bool = False
    warned: set[str] = field(default_factory=set)


def _generators(loader: Any) -> list[torch.Generator | None]:
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    return [getattr(obj, "generator", None) for obj in (loader, sampler, inner)]


def _stateful(loader: Any) -> list[Any]:
    """The sampler and batch sampler of `loader`, where they have `state_dict`/`load_state_dict`."""
    objs = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    return [
        o if o is not None and hasattr(o, "state_dict") and hasattr(o, "load_state_dict") else None
        for o in objs
    ]


def _capture_epoch_start(loader: Any) -> dict[str, Any]:
    gens = _generators(loader)
    stateful = _stateful(loader)
    draws_base_seed = not (
        getattr(loader, "persistent_workers", False)
        and getattr(loader, "num_workers", 0) > 0
        and getattr(loader, "_iterator", None) is not None
    )
    return {
        "rng": rng_states(),
        "generators": [g.get_state() if isinstance(g, torch.Generator) else None for g in gens],
        "samplers": [o.state_dict() if o is not None else None for o in stateful],
        "draws_base_seed": draws_base_seed,
    }


def _apply_epoch_start(loader: Any, start: dict[str, Any], rng: bool = True) -> None:
    if rng:
        set_rng_states(start["rng"])
    for gen, state in zip(_generators(loader), start["generators"]):
        if isinstance(gen, torch.Generator) and state is not None:
            gen.set_state(state)
    for obj, state in zip(_stateful(loader), start["samplers"]):
        if obj is not None and state is not None:
            obj.load_state_dict(state)


def train_batches(rs: ResumeState, loader: Any, start: int, num_batches: float) -> Iterable[tuple[int, Any]]:
    """Enumerate the train `loader` for one epoch, from batch `start`; records the epoch's starting state.

    `start > 0` only after a mid-epoch resume: the epoch's permutation is replayed from the states saved
    in the checkpoint and the first `start` batches are skipped (at the sampler, without reading them,
    for a map-style DataLoader). `num_batches` is the epoch's length under `limit_train_batches`.
    """
    if start == 0:
        if rs.pending_rng is not None:
            set_rng_states(rs.pending_rng)
            rs.pending_rng = None
        rs.pending_epoch_start = None
        rs.epoch_start = _capture_epoch_start(loader)
        continues, rs.continues_workers = rs.continues_workers, False
        if continues and _fresh_persistent_iterator(loader):
            # The interrupted run's loader kept its workers into this epoch, so its iterator drew no worker
            # seed from the global RNG here; ours is new and draws one. Put the RNG back before the sampler
            # runs, and record that this epoch starts without a draw (for a later mid-epoch resume).
            rs.epoch_start["draws_base_seed"] = False
            return _skip_at_sampler(loader, 0, _nothing, rs.epoch_start)
        return enumerate(loader)
    # saved after an epoch's last batch: this epoch reads nothing, the next one makes the first iterator
    rs.continues_workers = rs.continues_workers and start >= num_batches
    return resume_batches(rs, loader, start, num_batches)


def _fresh_persistent_iterator(loader: Any) -> bool:
    """True when iterating `loader` now starts persistent workers (and so draws a worker seed)."""
    return bool(
        getattr(loader, "persistent_workers", False)
        and getattr(loader, "num_workers", 0) > 0
        and getattr(loader, "_iterator", None) is None
        and _skippable(loader)
    )


def _nothing() -> None:
    return None


def resume_batches(rs: ResumeState, loader: Any, start: int, num_batches: float) -> Iterable[tuple[int, Any]]:
    """Enumerate `loader` from batch `start`, replaying the interrupted epoch's order (see `train_batches`)."""
    epoch_start = rs.pending_epoch_start
    rs.pending_epoch_start = None
    after_skip = rs.pending_rng
    rs.pending_rng = None

    def restore_checkpoint_rng() -> None:
        if after_skip is not None:
            set_rng_states(after_skip)

    if start >= num_batches:  # saved after the epoch's last batch: nothing left to read
        if epoch_start is not None:
            rs.epoch_start = epoch_start
        restore_checkpoint_rng()
        return iter(())
    if epoch_start is None:
        _warn_once(
            rs,
            "no-epoch-start",
            "The checkpoint does not record where the interrupted epoch started, so fulmen cannot replay its "
            f"batch order; the first {start} batches of this epoch are read and skipped in the loader's current "
            "order. Save checkpoints with fulmen to get an exact resume.",
        )
        restore_checkpoint_rng()
        return _read_through(loader, start, None)
    _apply_epoch_start(loader, epoch_start)
    rs.epoch_start = epoch_start
    if not _skippable(loader):
        what = _describe_unskippable(loader)
        _warn_once(
            rs,
            "read-through",
            f"Resuming mid-epoch with {what}: fulmen replays the epoch from its saved RNG state and reads and "
            f"discards the {start} batches already trained. The resume is exact only if iterating the data is "
            "reproducible from the RNG state; give a custom sampler `state_dict`/`load_state_dict` to make it so.",
        )
        return _read_through(loader, start, restore_checkpoint_rng)
    sampler_name = type(getattr(loader, "sampler", None)).__name__
    batch_sampler = getattr(loader, "batch_sampler", None)
    batch_sampler_name = type(batch_sampler).__name__ if batch_sampler is not None else "BatchSampler"
    for name, obj in ((sampler_name, loader.sampler), (batch_sampler_name, batch_sampler)):
        if obj is None or name in _KNOWN_SAMPLERS or hasattr(obj, "load_state_dict"):
            continue
        _warn_once(
            rs,
            f"sampler-{name}",
            f"The train sampler {name} has no `state_dict`/`load_state_dict`, so fulmen cannot be sure that it "
            "replays the interrupted epoch's order on resume. Implement both (returning the state from before "
            "the epoch's `__iter__`) for an exact resume.",
        )
    reset_before_sampler = None if epoch_start["draws_base_seed"] else epoch_start
    return _skip_at_sampler(loader, start, restore_checkpoint_rng, reset_before_sampler)


def _skippable(loader: Any) -> bool:
    from torch.utils.data import DataLoader, IterableDataset

    return isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)


def _describe_unskippable(loader: Any) -> str:
    from torch.utils.data import DataLoader

    if isinstance(loader, DataLoader):
        return f"an IterableDataset ({type(loader.dataset).__name__})"
    return f"a train loader that is not a DataLoader ({type(loader).__name__})"


def _warn_once(rs: ResumeState, key: str, message: str) -> None:
    if key not in rs.warned:
        rs.warned.add(key)
        rank_zero_warn(message)


def _read_through(loader: Any, start: int, after_skip: Any) -> Iterator[tuple[int, Any]]:
    iterator = iter(loader)
    for _ in range(start):
        try:
            next(iterator)
        except StopIteration:
            return
    if after_skip is not None:
        after_skip()
    yield from enumerate(iterator, start)


class _SkipOnce:
    """Wraps an index sampler: its first iteration drops `skip` items, later ones pass everything through."""

    def __init__(self, inner: Any, skip: int, after_skip: Any, reset: Any, loader: Any) -> None:
        self.inner = inner
        self.skip = skip
        self.after_skip = after_skip
        self.reset = reset
        self.loader = loader

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __iter__(self) -> Iterator[Any]:
        if self.skip < 0:
            yield from self.inner
            return
        skip, self.skip = self.skip, -1
        if self.reset is not None:  # the original epoch drew no worker seed before the sampler ran
            _apply_epoch_start(self.loader, self.reset)
        iterator = iter(self.inner)
        for _ in range(skip):
            try:
                next(iterator)
            except StopIteration:
                break
        self.after_skip()
        yield from iterator


def _skip_at_sampler(loader: Any, start: int, after_skip: Any, reset: Any) -> Iterator[tuple[int, Any]]:
    attr = "batch_sampler" if loader.batch_sampler is not None else "sampler"
    original = getattr(loader, attr)
    # DataLoader forbids re-assigning its sampler after construction; the swap lasts only while the
    # iterator is made (a persistent-workers iterator keeps the wrapper, which then passes through).
    object.__setattr__(loader, attr, _SkipOnce(original, start, after_skip, reset, loader))
    try:
        iterator = iter(loader)
    finally:
        object.__setattr__(loader, attr, original)
    yield from enumerate(iterator, start)

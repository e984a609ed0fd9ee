"""CombinedLoader: several dataloaders read together (one batch from each per step) or one after another.

The loaders come in any nesting of dicts, lists and tuples; each step's batch has the same structure,
with every loader's batch in its place. The mode decides when an epoch ends:

| mode               | batches per epoch     | a loader that runs out ...                          |
|--------------------|-----------------------|-----------------------------------------------------|
| `"max_size_cycle"` | the longest loader's  | starts over, until the longest one is done          |
| `"max_size"`       | the longest loader's  | gives `None` in its place                           |
| `"min_size"`       | the shortest loader's | ends the epoch                                      |
| `"sequential"`     | the sum of all        | hands over to the next (one loader's batch a step)  |

Iterating yields `(batch, batch_idx, dataloader_idx)` as in Lightning; `dataloader_idx` is always 0
except in `"sequential"` mode, where `batch_idx` restarts at 0 for each loader.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["CombinedLoader"]

_MODES = ("min_size", "max_size_cycle", "max_size", "sequential")
_DONE: Any = object()  # what `_take` returns for a loader that has run out


def _is_node(tree: Any) -> bool:
    """Dicts are always containers of loaders; a list or tuple only when every item is itself iterable.

    So `[loader_a, loader_b]` holds two loaders, while `[1, 2, 3]` is one iterable of three batches.
    """
    if isinstance(tree, Mapping):
        return True
    if isinstance(tree, (list, tuple)):
        return all(isinstance(item, Iterable) and not isinstance(item, str) for item in tree)
    return False


def _flatten(tree: Any) -> list[Any]:
    if not _is_node(tree):
        return [tree]
    children = tree.values() if isinstance(tree, Mapping) else tree
    return [leaf for child in children for leaf in _flatten(child)]


def _unflatten(tree: Any, leaves: Iterator[Any]) -> Any:
    """`tree`'s structure with its leaves replaced, in order, by `leaves`."""
    if not _is_node(tree):
        return next(leaves)
    if isinstance(tree, Mapping):
        return {key: _unflatten(child, leaves) for key, child in tree.items()}
    items = [_unflatten(child, leaves) for child in tree]
    if isinstance(tree, tuple):
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return items


def _length(iterable: Any) -> float:
    """Batches in `iterable`, or inf when it has no length (an IterableDataset)."""
    try:
        return float(len(iterable))
    except (TypeError, NotImplementedError):
        return math.inf


def steps_per_epoch(lengths: list[float], mode: str) -> float:
    """Steps of an epoch in `mode` when the loaders give `lengths` batches (inf: no length)."""
    if not lengths:
        return 0.0
    if mode == "sequential":
        return sum(lengths)
    return min(lengths) if mode == "min_size" else max(lengths)


class CombinedLoader(Iterable[Any]):
    """Iterate several dataloaders (a dict, list or tuple of them, nested as you like) in one of four modes.

    Args:
        iterables: the dataloaders (any iterables), in a dict/list/tuple structure.
        mode: "min_size" (default), "max_size_cycle", "max_size" or "sequential"; see the module docstring.

    Example:
        >>> combined = CombinedLoader({"a": range(3), "b": range(10, 12)}, "max_size_cycle")
        >>> [batch for batch, _, _ in combined]
        [{'a': 0, 'b': 10}, {'a': 1, 'b': 11}, {'a': 2, 'b': 10}]
    """

    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in _MODES:
            raise ValueError(f"Unsupported mode {mode!r}, please select one of: {list(_MODES)}.")
        self._iterables = iterables
        self._flattened = _flatten(iterables)
        self._mode = mode
        self._limits: list[float] | None = None

    @property
    def iterables(self) -> Any:
        """The dataloaders, in the structure they were given."""
        return self._iterables

    @property
    def flattened(self) -> list[Any]:
        """The dataloaders as a flat list, in structure order."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: list[Any]) -> None:
        """Replace every dataloader (e.g. with one that has a DistributedSampler), keeping the structure."""
        if len(flattened) != len(self._flattened):
            raise ValueError(
                f"Mismatch in flattened length ({len(flattened)}) and existing length ({len(self._flattened)}): "
                "give one replacement per iterable."
            )
        self._iterables = _unflatten(self._iterables, iter(flattened))
        self._flattened = list(flattened)

    @property
    def mode(self) -> str:
        """How the dataloaders are combined: "min_size", "max_size_cycle", "max_size" or "sequential"."""
        return self._mode

    @property
    def limits(self) -> list[float] | None:
        """The most batches read from each dataloader per epoch (None: no limit)."""
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list[int | float] | None) -> None:
        if limits is None:
            self._limits = None
            return
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self._flattened)
        if len(limits) != len(self._flattened):
            raise ValueError(
                f"Mismatch in number of limits ({len(limits)}) and number of iterables ({len(self._flattened)})"
            )
        self._limits = [float(limit) for limit in limits]

    @property
    def sampler(self) -> Any:
        """Each dataloader's sampler (None where it has none), in the structure of the dataloaders."""
        return _unflatten(self._iterables, (getattr(it, "sampler", None) for it in self._flattened))

    @property
    def batch_sampler(self) -> Any:
        """Each dataloader's batch sampler (None where it has none), in the structure of the dataloaders."""
        return _unflatten(self._iterables, (getattr(it, "batch_sampler", None) for it in self._flattened))

    def _lengths(self) -> list[float]:
        """Batches each dataloader contributes per epoch, after the limits."""
        lengths = [_length(it) for it in self._flattened]
        if self._limits is not None:
            lengths = [min(n, limit) for n, limit in zip(lengths, self._limits)]
        return lengths

    def _total(self) -> float:
        """Steps per epoch in this mode (inf when it depends on a dataloader without a length)."""
        return steps_per_epoch(self._lengths(), self._mode)

    def __len__(self) -> int:
        """Steps per epoch: see the table in the module docstring."""
        total = self._total()
        if math.isinf(total):
            raise TypeError(
                f"CombinedLoader(mode={self._mode!r}) has no length: a dataloader in it has none (an IterableDataset)."
            )
        return int(total)

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        """Yield `(batch, batch_idx, dataloader_idx)` per step; see the module docstring."""
        if self._mode == "sequential":
            return self._sequential()
        return ((batch, batch_idx, 0) for batch_idx, batch in enumerate(self._batches()))

    def reset(self) -> None:
        """Forget any iteration in progress (each `iter()` starts afresh anyway)."""

    def _batches(self) -> Iterator[Any]:
        """The structured batches of a non-sequential mode, without the indices (what the loops feed the steps)."""
        n = len(self._flattened)
        total = self._total()  # finite: stop before asking any loader for a batch past the epoch's end
        lengths = self._lengths()
        iterators = [iter(it) for it in self._flattened]
        taken = [0] * n
        ran_out = [False] * n
        step = 0
        while n and step < total:
            leaves = [self._take(i, iterators, taken, lengths) for i in range(n)]
            done = [i for i, leaf in enumerate(leaves) if leaf is _DONE]
            if done:
                if self._mode == "min_size":
                    return
                for i in done:
                    ran_out[i] = True
                if all(ran_out):
                    return  # only loaders without a length get here: each has run out once
                for i in done:
                    if self._mode == "max_size_cycle":
                        iterators[i], taken[i] = iter(self._flattened[i]), 0
                        leaves[i] = self._take(i, iterators, taken, lengths)
                    if leaves[i] is _DONE:
                        leaves[i] = None
            yield _unflatten(self._iterables, iter(leaves))
            step += 1

    @staticmethod
    def _take(i: int, iterators: list[Iterator[Any]], taken: list[int], lengths: list[float]) -> Any:
        """The next batch of loader `i`, or `_DONE` when it has run out (or reached its limit)."""
        if taken[i] >= lengths[i]:
            return _DONE
        try:
            value = next(iterators[i])
        except StopIteration:
            return _DONE
        taken[i] += 1
        return value

    def _sequential(self) -> Iterator[tuple[Any, int, int]]:
        lengths = self._lengths()
        for dataloader_idx, iterable in enumerate(self._flattened):
            limit = lengths[dataloader_idx]
            # a limit stops before the next batch is fetched, not after
            batches = iterable if math.isinf(limit) else itertools.islice(iterable, int(limit))
            for batch_idx, batch in enumerate(batches):
                yield batch, batch_idx, dataloader_idx


class CombinedBatches:
    """The structured batches of a non-sequential CombinedLoader as a sized iterable (what the loops read)."""

    def __init__(self, combined: CombinedLoader) -> None:
        self.combined = combined

    def __iter__(self) -> Iterator[Any]:
        return self.combined._batches()

    def __len__(self) -> int:
        return len(self.combined)

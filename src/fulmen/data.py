"""Where dataloaders come from (arguments, datamodule, module) and how many batches each run uses."""

from __future__ import annotations

import itertools
import math
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Sampler, SequentialSampler

from fulmen.combined_loader import CombinedBatches, CombinedLoader, steps_per_epoch
from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule
from fulmen.seed import worker_init_fn
from fulmen.utilities import MisconfigurationException, overriding, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

_HOOK = {
    "train": "train_dataloader",
    "validate": "val_dataloader",
    "test": "test_dataloader",
    "predict": "predict_dataloader",
}


def request_dataloaders(trainer: Trainer, stage: str, explicit: Any) -> Any:
    """Return the dataloader(s) for `stage`: the explicit argument, else the datamodule's, else the module's."""
    hook = _HOOK[stage]
    if explicit is not None:
        fn = trainer.state.fn
        _warn_if_dataset(explicit, f"the dataloaders passed to trainer.{fn.value if fn else stage}()")
        return explicit

    dm = trainer.datamodule
    module = trainer.lightning_module
    if dm is not None and overriding(hook, dm, LightningDataModule) is not None:
        source: Any = dm
    elif overriding(hook, module, LightningModule) is not None:
        source = module
    elif stage == "validate":
        return []
    elif dm is not None:
        source = dm  # its default raises the clear "no data" error
    else:
        source = module
    prev = module._current_fx_name
    module._current_fx_name = hook
    try:
        loaders = getattr(source, hook)()
    finally:
        module._current_fx_name = prev
    _warn_if_dataset(loaders, f"{type(source).__name__}.{hook}()")
    return loaders


def _warn_if_dataset(loaders: Any, source: str) -> None:
    """A Dataset where a DataLoader belongs runs one unbatched sample per step: say so (Lightning is silent)."""
    for loader in as_list(loaders):
        if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset):
            rank_zero_warn(
                f"{source} gave a {type(loader).__name__}, a Dataset, where a DataLoader belongs: each step "
                "gets one sample, unbatched. Wrap it: DataLoader(dataset, batch_size=...)."
            )


def evaluation_loaders(raw: Any, process: Callable[..., Any]) -> tuple[CombinedLoader, list[Any]]:
    """The loaders of validate/test/predict, each passed through `process` (the strategy's sharding).

    Returns:
        The loaders in the structure they were given (a CombinedLoader; "sequential" unless the user
        chose another mode), and what the loop runs one after another: each loader in sequential
        mode, else the CombinedLoader itself, whose steps get a batch of every loader.
    """
    if isinstance(raw, CombinedLoader):
        combined = raw
    else:
        combined = CombinedLoader([] if raw is None else raw, "sequential")
    combined.flattened = [process(dl, shuffle=False) for dl in combined.flattened]
    return combined, (list(combined.flattened) if combined.mode == "sequential" else [combined])


def as_list(loaders: Any) -> list[Any]:
    """One dataloader, a list/tuple or dict of them, as a list."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, Sequence) and not isinstance(loaders, (str, bytes)):
        return list(loaders)
    return [loaders]


def length(loader: Any) -> float:
    """Batches per epoch, or inf for a loader without `__len__` (an IterableDataset)."""
    try:
        return float(len(loader))
    except (TypeError, NotImplementedError):
        return math.inf


def combine_train_loaders(loaders: Any) -> CombinedLoader | None:
    """Several train loaders (a list/dict, or a CombinedLoader) as one CombinedLoader; None for a single loader.

    A list or dict is read in "max_size_cycle" mode, as in Lightning: each step gets one batch of every
    loader, in the same structure, and shorter loaders start over until the longest is done.
    """
    if isinstance(loaders, CombinedLoader):
        if loaders.mode == "sequential":
            raise ValueError(  # ValueError, as Lightning raises
                'trainer.fit() cannot train on CombinedLoader(mode="sequential"); use "max_size_cycle", '
                '"max_size" or "min_size" (sequential is for validate/test/predict).'
            )
        return loaders
    if isinstance(loaders, (Mapping, list, tuple)):
        return CombinedLoader(loaders, "max_size_cycle")
    return None


def batches_of(loader: Any) -> Any:
    """What a loop iterates to get the step's batches: the loader, or a CombinedLoader's structured batches."""
    return CombinedBatches(loader) if isinstance(loader, CombinedLoader) else loader


def limit_batches(loader: Any, limit: int | float, flag: str) -> float:
    """Apply a `limit_*_batches` flag (an int count or a float fraction) to a loader's length.

    For a CombinedLoader the limit applies to each of its loaders, and the mode combines the results.
    """
    if isinstance(loader, CombinedLoader):
        return steps_per_epoch([limit_batches(dl, limit, flag) for dl in loader.flattened], loader.mode)
    n = length(loader)
    if isinstance(limit, bool):
        raise MisconfigurationException(f"{flag}={limit!r} is not valid; use an int or a float in [0, 1].")
    if isinstance(limit, int):
        return min(n, float(limit))
    if not 0.0 <= limit <= 1.0:
        raise MisconfigurationException(f"{flag}={limit} is not valid: a float must be in [0.0, 1.0].")
    if limit == 1.0:
        return n
    if math.isinf(n):
        raise MisconfigurationException(
            f"{flag}={limit} is a fraction, but the dataloader has no length (an IterableDataset); "
            f"give {flag} as an int number of batches."
        )
    batches = int(n * limit)
    if limit > 0 and batches == 0:
        batches = 1
    return float(batches)


def sampler_shuffles(loader: Any) -> bool:
    """True when the loader draws its batches in random order."""
    sampler = getattr(loader, "sampler", None)
    return isinstance(sampler, RandomSampler)


def rebuild_dataloader(loader: DataLoader, sampler: Sampler[Any]) -> DataLoader:
    """A copy of `loader` that draws indices from `sampler` (every other setting kept)."""
    if isinstance(loader.dataset, IterableDataset):
        return loader
    batch_sampler = loader.batch_sampler
    batch_size = loader.batch_size
    drop_last = loader.drop_last
    if batch_size is None and batch_sampler is not None:
        batch_size = getattr(batch_sampler, "batch_size", 1)
        drop_last = getattr(batch_sampler, "drop_last", False)
    kwargs: dict[str, Any] = dict(
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)


def seed_workers(loader: Any) -> None:
    """After `seed_everything(workers=True)`, give each worker its own python/numpy seed (as Lightning does)."""
    if os.environ.get("PL_SEED_WORKERS") != "1" or not isinstance(loader, DataLoader):
        return
    current = loader.worker_init_fn
    if isinstance(current, _IgnoreSigterm):  # shielded by an earlier run: look at the user's own function
        current = current.user_fn
    if loader.num_workers > 0 and current is None:
        loader.worker_init_fn = worker_init_fn


class _IgnoreSigterm:
    """A DataLoader `worker_init_fn`: the worker ignores SIGTERM until the main process exits, then runs the user's own.

    Ignoring it for good would hang the main process at exit: multiprocessing ends the workers that are
    still running (persistent ones) with SIGTERM and waits for them. The main process sets `exiting`
    first (an atexit function), and the worker then ends on that SIGTERM as before.
    """

    def __init__(self, user_fn: Any, exiting: Any) -> None:
        self.user_fn = user_fn
        self.exiting = exiting

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.user_fn is not None:
            self.user_fn(worker_id)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.exiting.value:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


_EXITING: Any = None  # a byte in shared memory, set once the main process exits


def _exiting_flag() -> Any:
    global _EXITING
    if _EXITING is None:
        import atexit
        import multiprocessing

        _EXITING = multiprocessing.RawValue("b", 0)
        # registered after multiprocessing's own exit function, so it runs before that one stops the workers
        atexit.register(_mark_exiting)
    return _EXITING


def _mark_exiting() -> None:
    _EXITING.value = 1


def shield_workers_from_sigterm(loader: Any) -> Any:
    """Let `loader`'s worker processes ignore SIGTERM while the main process runs; returns the loader.

    SLURM and Kubernetes signal the whole process group. Torch's workers die on SIGTERM, and the main
    process then fails with "DataLoader worker killed" in the middle of its preemption save. Ignoring
    it, they keep serving until the main process has saved; they end when it exits.
    """
    if isinstance(loader, DataLoader) and loader.num_workers > 0:
        if not isinstance(loader.worker_init_fn, _IgnoreSigterm):
            loader.worker_init_fn = _IgnoreSigterm(loader.worker_init_fn, _exiting_flag())
    return loader


def without_shuffle(loader: Any) -> Any:
    """The same loader reading in order (for overfit_batches)."""
    if isinstance(loader, DataLoader) and sampler_shuffles(loader):
        return rebuild_dataloader(loader, SequentialSampler(loader.dataset))  # type: ignore[arg-type]
    return loader


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's sampler (and batch sampler) which epoch starts, so shuffling differs per epoch."""
    if isinstance(loader, CombinedLoader):
        for inner in loader.flattened:
            set_sampler_epoch(inner, epoch)
        return
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def first_batches(items: Iterable[Any], count: float, loader: Any, start: int = 0) -> Iterable[Any]:
    """The first `count` items, without fetching one more (a limit never costs an extra batch).

    A loader read to its end is left to end by itself: a sampler draws its next permutation as it
    finishes, and a plain loop's RNG stream (hence bit-identical weights) depends on that draw.
    """
    if math.isinf(count) or count + start >= length(loader):
        return items
    return itertools.islice(items, max(0, int(count)))

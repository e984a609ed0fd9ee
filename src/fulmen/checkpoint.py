"""Checkpoints: what a run's state looks like as one dict, how it is written and how it is restored.

`dump` gathers every piece of resumable state into one named dict and `restore_module` /
`restore_training_state` are its mirror. The dict holds only plain containers, numbers, strings and
tensors, so that it is always read back with `torch.load(weights_only=True)`: loading a checkpoint
never runs code. Files are written atomically (temporary file in the same folder, fsync, rename).

Exact resume. Besides the counters of `progress.py`, a checkpoint holds, per rank:
  * the RNG states (python, numpy, torch CPU and CUDA) at the moment of saving;
  * the RNG and sampler states at the start of the current epoch, captured by `train_batches`
    before the epoch's DataLoader iterator was made. On resume the same permutation is replayed
    and the batches already trained are skipped at the sampler, without reading their data;
  * the gradients accumulated so far when the checkpoint falls inside an accumulation window.
A checkpoint written in `on_train_batch_end` or `on_train_epoch_end` describes the state once that
batch (epoch) is complete; the hook name the dispatcher records says which case applies.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import random
import signal
import socket
import sys
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from fulmen.utilities import MisconfigurationException, rank_zero_warn
from fulmen.writer import BackgroundWriter

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

FORMAT_VERSION = "2.5.0"  # the Lightning checkpoint layout these files follow

# finishes the checkpoints ModelCheckpoint writes during training (see writer.py and `atomic_save`)
_WRITER = BackgroundWriter("fulmen-checkpoint-writer")


class CheckpointError(MisconfigurationException):
    """A checkpoint file that cannot be used (missing, damaged, or unsafe to load)."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled objects that could run code; it is refused unless trusted explicitly."""


class SIGTERMException(SystemExit):
    """Raised (exit status 0) after the checkpoint that a SIGTERM asked for was written."""


def _version() -> str:
    from fulmen import __version__

    return __version__


# ---------------------------------------------------------------------------------------- RNG states
def rng_states() -> dict[str, Any]:
    """The python, numpy (if imported), torch CPU and CUDA (if initialized) RNG states, as plain data."""
    version, internal, gauss = random.getstate()
    # the 625 words of Python's Mersenne Twister as one tensor: pickling 625 ints costs a millisecond
    words = torch.tensor(internal, dtype=torch.int64)
    state: dict[str, Any] = {"python": [version, words, gauss], "torch": torch.get_rng_state()}
    np = sys.modules.get("numpy")
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    version, internal, gauss = state["python"]
    # a tensor since the words are stored as one; older fulmen files hold a list
    words = internal.tolist() if isinstance(internal, torch.Tensor) else internal
    random.setstate((version, tuple(words), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------- data position
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
    """What the trainer keeps between epochs for an exact resume (see the module docstring)."""

    epoch_start: dict[str, Any] | None = None  # this epoch's start: RNG, generators, sampler states
    pending_rng: dict[str, Any] | None = None  # restored RNG, applied right before the next batch
    pending_epoch_start: dict[str, Any] | None = None  # the interrupted epoch's start, from a checkpoint
    warned: set[str] = field(default_factory=set)


def _resume_state(trainer: Trainer) -> ResumeState:
    state = getattr(trainer, "_resume_state", None)
    if state is None:
        state = trainer._resume_state = ResumeState()  # type: ignore[attr-defined]
    return state


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


def train_batches(trainer: Trainer, loader: Any, start: int) -> Iterable[tuple[int, Any]]:
    """Enumerate the train `loader` for one epoch, from batch `start`; records the epoch's starting state.

    `start > 0` only after a mid-epoch resume: the epoch's permutation is replayed from the states saved
    in the checkpoint and the first `start` batches are skipped (at the sampler, without reading them,
    for a map-style DataLoader).
    """
    rs = _resume_state(trainer)
    if start == 0:
        if rs.pending_rng is not None:
            set_rng_states(rs.pending_rng)
            rs.pending_rng = None
        rs.pending_epoch_start = None
        rs.epoch_start = _capture_epoch_start(loader)
        return enumerate(loader)
    return resume_batches(trainer, loader, start)


def resume_batches(trainer: Trainer, loader: Any, start: int) -> Iterable[tuple[int, Any]]:
    """Enumerate `loader` from batch `start`, replaying the interrupted epoch's order (see `train_batches`)."""
    rs = _resume_state(trainer)
    epoch_start = rs.pending_epoch_start
    rs.pending_epoch_start = None
    after_skip = rs.pending_rng
    rs.pending_rng = None

    def restore_checkpoint_rng() -> None:
        if after_skip is not None:
            set_rng_states(after_skip)

    if start >= trainer.num_training_batches:  # saved after the epoch's last batch: nothing left to read
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


# ---------------------------------------------------------------------------------------- dump
def dump(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Everything needed to rebuild the module and, unless `weights_only`, resume the run exactly."""
    module = trainer.lightning_module
    progress = _resume_progress(trainer)
    ckpt: dict[str, Any] = {
        "epoch": trainer._progress.epoch,
        "global_step": progress["global_step"],
        "pytorch-lightning_version": FORMAT_VERSION,
        "fulmen_version": _version(),
        "state_dict": trainer.strategy.lightning_module_state_dict(),
        "loops": {"fit_loop": progress},
    }
    if not weights_only:
        ckpt["callbacks"] = {cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()}
        ckpt["optimizer_states"] = [trainer.strategy.optimizer_state(opt) for opt in trainer.optimizers]
        ckpt["lr_schedulers"] = [cfg.scheduler.state_dict() for cfg in trainer.lr_scheduler_configs]
        precision_state = trainer.precision_plugin.state_dict()
        if precision_state:
            ckpt[type(trainer.precision_plugin).__name__] = precision_state
        rs = _resume_state(trainer)
        ckpt["rng_states"] = _per_rank(trainer, rng_states())
        epoch_start = rs.pending_epoch_start if rs.pending_epoch_start is not None else rs.epoch_start
        if progress["epoch_batches"] > 0 and epoch_start is not None:
            progress["epoch_start"] = _per_rank(trainer, epoch_start)
        grads = _accumulated_grads(trainer, progress["epoch_batches"])
        if grads:
            ckpt["accumulated_grads"] = grads
        if progress.pop("_epoch_end_pending", False):
            progress["pending_epoch_schedulers"] = _plateau_metrics(trainer)
    if module.hparams:
        ckpt["hparams_name"] = "kwargs"
        ckpt["hyper_parameters"] = _plain_hparams(module.hparams, "hyper_parameters", type(module).__name__)
    dm = trainer.datamodule
    if dm is not None:
        if dm.hparams:
            ckpt["datamodule_hparams_name"] = "kwargs"
            ckpt["datamodule_hyper_parameters"] = _plain_hparams(
                dm.hparams, "datamodule_hyper_parameters", type(dm).__name__
            )
        ckpt[type(dm).__qualname__] = dm.state_dict()
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, ckpt)
    if dm is not None:
        dm.on_save_checkpoint(ckpt)
    module.on_save_checkpoint(ckpt)
    check_plain(ckpt)
    return ckpt


def _resume_progress(trainer: Trainer) -> dict[str, Any]:
    """The loop counters as a resume should see them.

    Inside `on_train_batch_end` the batch is trained but the loop has not counted it yet; inside
    `on_train_epoch_end` the epoch is done but not counted and its epoch-interval schedulers have not
    stepped. The dispatcher records which hook runs (`_current_fx_name`), so the saved counters say
    "this batch (epoch) is complete" explicitly.
    """
    state = trainer._progress.state_dict()
    module = trainer.lightning_module
    hook = getattr(module, "_current_fx_name", None)
    if hook == "on_train_batch_end":
        state["epoch_batches"] += 1
        state["total_batches"] += 1
        automatic = module.automatic_optimization
        batch_idx = state["epoch_batches"] - 1
        steps = (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or state[
            "epoch_batches"
        ] == trainer.num_training_batches
        if not automatic or (trainer.optimizers and steps):
            state["batches_that_stepped"] += 1
    elif hook == "on_train_epoch_end":
        state["epoch"] += 1
        state["epoch_batches"] = 0
        state["_epoch_end_pending"] = True
    return state


def _accumulated_grads(trainer: Trainer, epoch_batches: int) -> dict[str, torch.Tensor]:
    """Gradients summed so far when the checkpoint falls inside an accumulation window."""
    module = trainer.lightning_module
    accumulate = trainer.accumulate_grad_batches
    if accumulate == 1 or not module.automatic_optimization or epoch_batches % accumulate == 0:
        return {}
    return {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}


def _plateau_metrics(trainer: Trainer) -> dict[str, float]:
    metrics = trainer.callback_metrics
    out: dict[str, float] = {}
    for cfg in trainer.lr_scheduler_configs:
        if cfg.interval == "epoch" and cfg.reduce_on_plateau and cfg.monitor in metrics:
            out[cfg.monitor] = float(metrics[cfg.monitor])
    return out


def _per_rank(trainer: Trainer, obj: Any) -> list[Any]:
    """`obj` from every rank, indexed by global rank (a one-item list in a single process)."""
    if trainer.world_size == 1 or not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    ):
        return [obj]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _for_rank(trainer: Trainer, per_rank: list[Any] | None) -> Any:
    if not per_rank:
        return None
    rank = trainer.global_rank
    if len(per_rank) != trainer.world_size:
        rank_zero_warn(
            f"The checkpoint was saved by {len(per_rank)} processes and is resumed by {trainer.world_size}; "
            "random states and data positions are restored from rank 0's, so the resume is not exact."
        )
        rank = 0
    return per_rank[min(rank, len(per_rank) - 1)]


# ---------------------------------------------------------------------------------------- plain values
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device)
_PLAIN_MAPPINGS = (dict, OrderedDict, Counter)
_PLAIN_SEQUENCES = (list, tuple, torch.Size, set)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise when `obj` holds anything `torch.load(weights_only=True)` would refuse (naming the key)."""
    kind = type(obj)
    if kind in _PLAIN_LEAVES or isinstance(obj, torch.Tensor):
        return
    if kind in _PLAIN_MAPPINGS:
        for key, value in obj.items():
            if type(key) not in _PLAIN_LEAVES:
                raise MisconfigurationException(
                    f"{where} has a key of type {type(key).__name__} ({key!r}); checkpoints only hold plain "
                    "keys (str, int, float, bool) so that they load safely. Convert the key, e.g. to str."
                )
            check_plain(value, f"{where}[{key!r}]")
        return
    if kind in _PLAIN_SEQUENCES:
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise MisconfigurationException(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which a checkpoint cannot hold: files are loaded "
        "with torch.load(weights_only=True), which refuses arbitrary objects because unpickling them can run "
        "code. Store plain values instead (numbers, strings, tensors, lists, dicts) and rebuild the object from "
        "them when loading."
    )


def _plain_hparams(hparams: Any, key: str, owner: str) -> dict[str, Any]:
    out = _to_plain_dicts(hparams)
    for name, value in out.items():
        try:
            check_plain(value, f"{key}[{name!r}]")
        except MisconfigurationException as err:
            raise MisconfigurationException(
                f"{owner}'s hyper-parameter {name!r} is a {type(value).__qualname__}, which cannot be saved in a "
                "safe checkpoint (they load with torch.load(weights_only=True)). Pass plain values (numbers, "
                f"strings, lists, dicts) to __init__ and build the object there, or leave it out with "
                f"`self.save_hyperparameters(ignore=[{name!r}])`. Details: {err}"
            ) from None
    return out


def _to_plain_dicts(obj: Any) -> Any:
    if isinstance(obj, dict) and not isinstance(obj, OrderedDict):
        return {k: _to_plain_dicts(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_plain_dicts(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------- files
def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _fs_for(path: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as err:
        raise MisconfigurationException(
            f"{path!r} is a URL; reading and writing URLs needs fsspec: `pip install fsspec` (plus the "
            "filesystem's package, e.g. s3fs)."
        ) from err
    fs, inner = fsspec.core.url_to_fs(path)
    return fs, inner


def exists(path: str | os.PathLike[str]) -> bool:
    """True when the local path or fsspec URL exists (once the writes in flight have landed)."""
    _WRITER.flush()
    path = os.fspath(path)
    if _is_url(path):
        fs, inner = _fs_for(path)
        return bool(fs.exists(inner))
    return os.path.exists(path.removeprefix("file://"))


# the folder beside a checkpoint file where a sharded strategy (FSDP) puts its shards
SHARDS_SUFFIX = ".shards"


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint file (local or fsspec URL) if it exists; after the writes in flight, if any."""
    path = os.fspath(path)
    if _WRITER.pending():  # it may be the file a queued write replaces: delete it only once that write landed
        _WRITER.submit(lambda: _remove_now(path), f"the removal of {path!r}")
    else:
        _WRITER.flush()  # raises if the last background write failed: then the file it replaces must stay
        _remove_now(path)


def _remove_now(path: str) -> None:
    if _is_url(path):
        fs, inner = _fs_for(path)
        if fs.exists(inner):
            fs.rm(inner)
    elif os.path.exists(path):
        os.unlink(path)
    if not _is_url(path) and os.path.isdir(path + SHARDS_SUFFIX):
        import shutil

        shutil.rmtree(path + SHARDS_SUFFIX, ignore_errors=True)


def save(
    trainer: Trainer, path: str | os.PathLike[str], weights_only: bool = False, wait: bool = True
) -> None:
    """Write the checkpoint of `trainer` to `path` on rank 0 (`wait=False`: finish the file in the background)."""
    ckpt = dump(trainer, weights_only)
    strategy = trainer.strategy  # rank 0 writes; sharded strategies add shards
    if wait or not _takes_wait(
        type(strategy).save_checkpoint
    ):  # a user's strategy with Lightning's signature writes at once
        strategy.save_checkpoint(ckpt, os.fspath(path))
    else:
        strategy.save_checkpoint(ckpt, os.fspath(path), wait=False)
    strategy.barrier("save_checkpoint")


@functools.cache
def _takes_wait(save_checkpoint: Any) -> bool:
    import inspect

    return "wait" in inspect.signature(save_checkpoint).parameters


def finish_writes() -> None:
    """Wait for the checkpoint files still being written in the background (raises if one failed)."""
    _WRITER.flush()


def atomic_save(obj: dict[str, Any], path: str, wait: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A process killed at any moment leaves either the previous file or the new one, never a partial one.
    With `wait=False` (local paths) `obj` is serialized now, and the write, fsyncs and rename happen on
    the background writer, in order with the other writes and removals handed to it.
    """
    if _is_url(path):
        _WRITER.flush()
        fs, inner = _fs_for(path)
        parent = inner.rsplit("/", 1)[0] if "/" in inner else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{os.getpid()}-{threading.get_ident()}.ckpt" if parent else ".tmp.ckpt"
        with fs.open(tmp, "wb") as f:
            torch.save(obj, f)
        fs.mv(tmp, inner)
        return
    path = path.removeprefix("file://")
    if wait:
        _WRITER.flush()  # a queued write of the same path must not land after this newer one
        _write_atomically(path, lambda f: torch.save(obj, f))
        return
    # the snapshot is taken here, on the calling thread: training changes the tensors right after
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    _WRITER.submit(lambda: _write_atomically(path, lambda f: f.write(data)), f"checkpoint {path!r}")


def _write_atomically(path: str, write: Any) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_tmp_prefix()}{os.getpid()}-", suffix=".ckpt")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    _remove_stale_temporaries(folder)


def _tmp_prefix() -> str:
    return f".tmp-{socket.gethostname()}-"


def _remove_stale_temporaries(folder: str) -> None:
    """Delete half-written files left by processes of this host that were killed while saving."""
    prefix = _tmp_prefix()
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(".ckpt")):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike[str], map_location: Any = "cpu", trusted: bool = False) -> dict[str, Any]:
    """Read a checkpoint safely with `torch.load(weights_only=True)`; errors name the file.

    Args:
        path: a local path or an fsspec URL.
        map_location: as for `torch.load`.
        trusted: load with `weights_only=False`, which can run code stored in the file. Only for files
            you made yourself or trust completely.
    """
    path = os.fspath(path)
    if not exists(path):
        raise CheckpointError(f"Checkpoint file not found: {path!r}. Check the path.")
    try:
        if _is_url(path):
            fs, inner = _fs_for(path)
            with fs.open(inner, "rb") as f:
                ckpt = torch.load(f, map_location=map_location, weights_only=not trusted)
        else:
            ckpt = torch.load(
                path.removeprefix("file://"), map_location=map_location, weights_only=not trusted
            )
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise UnsafeCheckpointError(
                f"Refusing to load checkpoint {path!r}: it holds pickled Python objects, and unpickling them can "
                f"run arbitrary code ({_first_line(err)}). If you made this file yourself or trust its source, "
                "either allow the named class with `torch.serialization.add_safe_globals([TheClass])`, or load it "
                "with `fulmen.checkpoint.load(path, trusted=True)`."
            ) from err
        raise _damaged(path, err) from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise _damaged(path, err) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path!r} is not a fulmen/Lightning checkpoint: it has no 'state_dict' entry. For a bare state dict "
            "use `module.load_state_dict(torch.load(path, weights_only=True))`."
        )
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    for line in text:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()
    return text[0] if text else type(err).__name__


def _damaged(path: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {path!r} is damaged or truncated and cannot be read ({type(err).__name__}: "
        f"{_first_line(err)}). Resume from an earlier checkpoint."
    )


def resolve_ckpt_path(trainer: Trainer, ckpt_path: Any, fn: str) -> str | None:
    """Turn `ckpt_path` ("last", "best", "auto" or a path) into a file path; fail early when it does not exist."""
    if ckpt_path == "best":
        cb = trainer.checkpoint_callback
        path = getattr(cb, "best_model_path", None) if cb is not None else None
        if not path:
            raise CheckpointError(
                f'trainer.{fn}(ckpt_path="best") but no best checkpoint was saved yet in this process; '
                "pass the checkpoint's path instead."
            )
        return str(path)
    if ckpt_path == "last":
        path = _find_last(trainer)
        if path is None:
            rank_zero_warn(
                f'trainer.{fn}(ckpt_path="last") found no last checkpoint; starting from scratch. Set '
                "ModelCheckpoint(save_last=True, dirpath=...) so that a rerun finds it."
            )
        return path
    path = os.fspath(ckpt_path)
    if not exists(path):
        raise CheckpointError(f"ckpt_path={path!r} does not exist; nothing was trained. Check the path.")
    return path


def check_ckpt_path(ckpt_path: Any) -> None:
    """Fail before anything runs when an explicit checkpoint path does not exist."""
    if ckpt_path is None or ckpt_path in ("last", "best"):
        return
    path = os.fspath(ckpt_path)
    if not exists(path):
        raise CheckpointError(f"ckpt_path={path!r} does not exist; nothing was trained. Check the path.")


def _find_last(trainer: Trainer) -> str | None:
    """The newest `last*.ckpt` of the checkpoint callbacks (this process's, else on disk)."""
    _WRITER.flush()  # the candidates below are read with os.path, not `exists`
    candidates: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", "") and exists(cb.last_model_path):
            return str(cb.last_model_path)
        find = getattr(cb, "_last_candidates", None)
        if find is not None:
            candidates.extend(find(trainer))
    local = [c for c in candidates if not _is_url(c) and os.path.exists(c)]
    if local:
        return max(local, key=os.path.getmtime)
    return candidates[0] if candidates else None


def load_for_run(trainer: Trainer, ckpt_path: Any, fn: str) -> dict[str, Any] | None:
    """The checkpoint a run starts from (`ckpt_path`, else a `BackupAndRestore` backup), weights restored."""
    trainer._resume_state = ResumeState()  # type: ignore[attr-defined]
    if ckpt_path is None:
        ckpt_path = auto_resume_path(trainer, fn)
        if ckpt_path is None:
            return None
    path = resolve_ckpt_path(trainer, ckpt_path, fn)
    if path is None:
        return None
    trainer.ckpt_path = path
    ckpt = load(path)
    restore_module(trainer, ckpt)
    restore_datamodule(trainer, ckpt)
    if fn == "fit":
        restore_callbacks(trainer, ckpt)
    return ckpt


def auto_resume_path(trainer: Trainer, fn: str) -> str | None:
    """The backup a `BackupAndRestore` callback left behind, used when `fit` gets no `ckpt_path`."""
    if fn != "fit":
        return None
    for cb in trainer.callbacks:
        find = getattr(cb, "_backup_to_resume", None)
        if find is not None:
            path = find(trainer)
            if path is not None:
                return str(path)
    return None


# ---------------------------------------------------------------------------------------- restore
def restore_module(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Load the weights (and the module's own on_load_checkpoint) from `ckpt`."""
    module = trainer.lightning_module
    module.on_load_checkpoint(ckpt)
    trainer.strategy.load_model_state_dict(ckpt["state_dict"])


def restore_datamodule(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """The datamodule's on_load_checkpoint and saved state."""
    dm = trainer.datamodule
    if dm is not None:
        dm.on_load_checkpoint(ckpt)
        state = ckpt.get(type(dm).__qualname__)
        if state:
            dm.load_state_dict(state)


def restore_callbacks(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Each callback's on_load_checkpoint, then its state (found by `state_key`)."""
    module = trainer.lightning_module
    states = ckpt.get("callbacks", {})
    for cb in trainer.callbacks:
        cb.on_load_checkpoint(trainer, module, ckpt)
        state = states.get(cb.state_key)
        if state is not None:
            cb.load_state_dict(state)


def restore_training_state(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Restore optimizers, schedulers, precision, loop progress, RNG and data position from `ckpt`.

    Runs after configure_optimizers; the module, datamodule and callbacks were restored before it.
    """
    module = trainer.lightning_module
    if "optimizer_states" not in ckpt and ckpt.get("loops"):
        rank_zero_warn(
            f"{trainer.ckpt_path!r} was saved with weights_only=True: only the weights are restored; optimizer, "
            "scheduler and loop state start fresh."
        )
        return
    optimizer_states = ckpt.get("optimizer_states", [])
    if optimizer_states and len(optimizer_states) != len(trainer.optimizers):
        raise CheckpointError(
            f"{trainer.ckpt_path!r} holds {len(optimizer_states)} optimizer states but configure_optimizers "
            f"returned {len(trainer.optimizers)}; resume with the same optimizer setup."
        )
    for opt, state in zip(trainer.optimizers, optimizer_states):
        trainer.strategy.load_optimizer_state_dict(opt, state)
    for cfg, state in zip(trainer.lr_scheduler_configs, ckpt.get("lr_schedulers", [])):
        cfg.scheduler.load_state_dict(state)
    if ckpt.get("global_step", 0) > 0:
        for opt in trainer.optimizers:  # it has stepped before: no "scheduler before optimizer" warning
            opt._opt_called = True  # type: ignore[attr-defined]
    precision_state = ckpt.get(type(trainer.precision_plugin).__name__)
    if precision_state:
        trainer.precision_plugin.load_state_dict(precision_state)
    loops = dict(ckpt.get("loops", {}).get("fit_loop") or {})
    if "epoch_progress" in loops:  # written by Lightning
        loops = _progress_from_lightning(ckpt, loops)
    epoch_start = loops.pop("epoch_start", None)
    pending_schedulers = loops.pop("pending_epoch_schedulers", None)
    loops.pop("stage", None)  # where the saved run was; this run's loop sets its own stage as it goes
    if loops:
        trainer._progress.load_state_dict(loops)
    if pending_schedulers is not None and module.automatic_optimization:
        _finish_epoch_schedulers(trainer, pending_schedulers)
    grads = ckpt.get("accumulated_grads")
    if grads:
        params = dict(module.named_parameters())
        for name, grad in grads.items():
            if name in params:
                params[name].grad = grad.to(device=params[name].device, dtype=params[name].dtype)
    rs = _resume_state(trainer)
    rs.pending_rng = _for_rank(trainer, ckpt.get("rng_states"))
    rs.pending_epoch_start = _for_rank(trainer, epoch_start)


def _progress_from_lightning(ckpt: dict[str, Any], fit_loop: dict[str, Any]) -> dict[str, Any]:
    """fulmen's counters from a Lightning 2.x checkpoint's loop progress (so its runs resume here too).

    Lightning counts a batch (an epoch) as "processed" once trained and "completed" after its end
    hooks; a checkpoint written inside those hooks has processed > completed, which still means done.
    """
    epochs = fit_loop["epoch_progress"]["current"]
    batches = fit_loop.get("epoch_loop.batch_progress", {})
    in_epoch = epochs.get("started", 0) > epochs.get("processed", 0)  # saved before the epoch's end
    stepped = fit_loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped", 0)
    current, total = batches.get("current", {}), batches.get("total", {})
    return {
        "stage": "train",
        "epoch": epochs.get("processed", ckpt.get("epoch", 0)),
        "epoch_batches": current.get("processed", 0) if in_epoch else 0,
        "global_step": ckpt.get("global_step", 0),
        "batches_that_stepped": stepped + current.get("processed", 0) - current.get("completed", 0),
        "total_batches": total.get("processed", 0),
    }


def _finish_epoch_schedulers(trainer: Trainer, metrics: dict[str, float]) -> None:
    """Step the epoch-interval schedulers that the interrupted epoch end had not stepped yet."""
    module = trainer.lightning_module
    finished_epoch = trainer._progress.epoch  # already counted as complete
    for cfg in trainer.lr_scheduler_configs:
        if cfg.interval != "epoch" or finished_epoch % cfg.frequency != 0:
            continue
        metric = None
        if cfg.reduce_on_plateau:
            if cfg.monitor not in metrics:
                continue
            metric = torch.tensor(metrics[cfg.monitor])
        module.lr_scheduler_step(cfg.scheduler, metric)


def load_module_from_checkpoint(
    cls: Any,
    path: Any,
    map_location: Any = None,
    strict: bool | None = None,
    hparams_file: Any = None,
    **overrides: Any,
) -> Any:
    """Build `cls` from the checkpoint's hyper-parameters (then `hparams_file`'s, then `overrides`) and load its weights.

    Args:
        hparams_file: a YAML file of hyper-parameters (e.g. the loggers' `hparams.yaml`) that replace
            the checkpoint's.
    """
    ckpt = load(path, map_location=map_location or "cpu")
    hparams = dict(ckpt.get("hyper_parameters", {}))
    if hparams_file is not None:
        hparams.update(_read_hparams_file(hparams_file))
    hparams.update(overrides)
    try:
        module = cls(**hparams)
    except TypeError as err:
        raise CheckpointError(
            f"{cls.__name__}(**hyper_parameters) failed for {os.fspath(path)!r}: {err}. The checkpoint holds "
            f"{sorted(hparams)}; call `self.save_hyperparameters()` in __init__, or pass the missing arguments to "
            "load_from_checkpoint(path, name=value)."
        ) from err
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=True if strict is None else strict)
    return module


def _read_hparams_file(path: Any) -> dict[str, Any]:
    import yaml

    with open(os.fspath(path)) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise CheckpointError(f"hparams_file={os.fspath(path)!r} must hold a YAML mapping of name: value.")
    return data


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


# ---------------------------------------------------------------------------------------- SIGTERM
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

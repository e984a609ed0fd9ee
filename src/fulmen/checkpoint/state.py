"""The checkpoint dict: every piece of state a resume needs, gathered by `dump`, restored by its mirror.

`dump` gathers the run's resumable state into one named dict; `restore_module`, `restore_datamodule`,
`restore_callbacks` and `restore_training_state` put it back, in the order a run needs it.

Exact resume. Besides the counters of `progress.py`, a checkpoint holds, per rank:
  * the RNG states (python, numpy, torch CPU and CUDA) at the moment of saving (`seed.rng_states`);
  * the RNG and sampler states at the start of the current epoch, captured by
    `epoch_replay.train_batches` before the epoch's DataLoader iterator was made. On resume the same
    permutation is replayed and the batches already trained are skipped at the sampler;
  * the gradients accumulated so far when the checkpoint falls inside an accumulation window.
A checkpoint written in `on_train_batch_end` or `on_train_epoch_end` describes the state once that
batch (epoch) is complete; the hook name the dispatcher records says which case applies.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from fulmen import hparams
from fulmen.checkpoint import lightning_loops
from fulmen.checkpoint.files import CheckpointError, check_plain, load
from fulmen.seed import rng_states
from fulmen.utilities import MisconfigurationException, is_overridden, rank_zero_warn
from fulmen.utilities.migration import FORMAT_VERSION, VERSION_KEY

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


def _version() -> str:
    from fulmen import __version__

    return __version__


def dump(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """Everything needed to rebuild the module and, unless `weights_only`, resume the run exactly."""
    module = trainer.lightning_module
    progress = trainer.fit_loop.progress.state_dict()  # a batch (epoch) whose end hooks run counts as done
    ckpt: dict[str, Any] = {
        "epoch": trainer.fit_loop.progress.epoch,
        "global_step": progress["global_step"],
        VERSION_KEY: FORMAT_VERSION,
        "fulmen_version": _version(),
        "state_dict": trainer.strategy.lightning_module_state_dict(),
        "loops": {"fit_loop": progress, **lightning_loops.evaluation_loops()},
    }
    if not weights_only:
        states = ((cb.state_key, cb.state_dict()) for cb in trainer.callbacks)  # each asked once
        ckpt["callbacks"] = {key: state for key, state in states if state}
        ckpt["optimizer_states"] = [trainer.strategy.optimizer_state(opt) for opt in trainer.optimizers]
        ckpt["lr_schedulers"] = [cfg.scheduler.state_dict() for cfg in trainer.lr_scheduler_configs]
        precision_state = trainer.precision_plugin.state_dict()
        if precision_state:
            ckpt[type(trainer.precision_plugin).__name__] = precision_state
        rs = trainer.fit_loop.resume_state
        ckpt["rng_states"] = _per_rank(trainer, rng_states())
        epoch_start = rs.pending_epoch_start if rs.pending_epoch_start is not None else rs.epoch_start
        if progress["epoch_batches"] > 0 and epoch_start is not None:
            progress["epoch_start"] = _per_rank(trainer, epoch_start)
        grads = _accumulated_grads(trainer, progress)
        if grads:
            ckpt["accumulated_grads"] = grads
        if progress["epoch_end_pending"]:
            progress["pending_epoch_schedulers"] = _plateau_metrics(trainer)
    # Lightning's own counters beside fulmen's, so that Lightning resumes this file where it stopped
    progress.update(
        lightning_loops.for_lightning(
            progress, module.automatic_optimization, trainer.accumulate_grad_batches
        )
    )
    ckpt.update(hparams.checkpoint_entries(module))
    dm = trainer.datamodule
    if dm is not None:
        ckpt.update(hparams.checkpoint_entries(dm, prefix="datamodule_"))
        ckpt[type(dm).__qualname__] = dm.state_dict()
    if not weights_only:
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, module, ckpt)
    # the datamodule's checkpoint hooks are fulmen's (Lightning 2 calls only its state_dict): asked only
    # when defined, so code wrapping every datamodule method sees no call Lightning would not make
    if dm is not None and is_overridden("on_save_checkpoint", dm):
        dm.on_save_checkpoint(ckpt)
    module.on_save_checkpoint(ckpt)
    check_plain(ckpt)
    return ckpt


def _accumulated_grads(trainer: Trainer, progress: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Gradients summed so far when the checkpoint falls inside an accumulation window."""
    module = trainer.lightning_module
    if trainer.accumulate_grad_batches == 1 or not module.automatic_optimization:
        return {}
    if progress["epoch_batches"] == 0 or progress["batch_stepped"]:  # the window is closed
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
    # tensors travel as bytes: pickling a tensor calls torch.save, and a checkpoint is one torch.save on
    # rank 0 and none elsewhere (as in Lightning; tests count the calls)
    torch.distributed.all_gather_object(gathered, _tensors_as(obj, _TensorBytes.of))
    return [_tensors_as(item, _TensorBytes.tensor) for item in gathered]


@dataclass(frozen=True)
class _TensorBytes:
    """A CPU tensor as plain bytes, dtype and shape."""

    data: bytes
    dtype: torch.dtype
    shape: tuple[int, ...]

    @staticmethod
    def of(t: torch.Tensor) -> _TensorBytes:
        """The bytes of `t` (moved to the CPU)."""
        flat = t.detach().cpu().contiguous().reshape(-1)
        return _TensorBytes(flat.view(torch.uint8).numpy().tobytes(), t.dtype, tuple(t.shape))

    def tensor(self) -> torch.Tensor:
        """The tensor again."""
        if not self.data:
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.frombuffer(bytearray(self.data), dtype=torch.uint8).view(self.dtype).reshape(self.shape)


def _tensors_as(obj: Any, convert: Callable[[Any], Any]) -> Any:
    """`obj` with `convert` applied to each tensor (or _TensorBytes) in its dicts, lists and tuples."""
    if isinstance(obj, (torch.Tensor, _TensorBytes)):
        return convert(obj)
    if isinstance(obj, dict):
        return {k: _tensors_as(v, convert) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(_tensors_as(v, convert) for v in obj)
    return obj


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


def restore_module(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Load the weights (and the module's own on_load_checkpoint) from `ckpt`."""
    module = trainer.lightning_module
    module.on_load_checkpoint(ckpt)
    trainer.strategy.load_model_state_dict(ckpt["state_dict"], strict=module.strict_loading)


def restore_datamodule(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """The datamodule's on_load_checkpoint and saved state."""
    dm = trainer.datamodule
    if dm is not None:
        if is_overridden("on_load_checkpoint", dm):
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
    if lightning_loops.written_by_lightning(loops):
        loops = lightning_loops.from_lightning(ckpt, loops)
    epoch_start = loops.pop("epoch_start", None)
    plateau_metrics = loops.pop("pending_epoch_schedulers", None)
    # files saved before the counters recorded pending ends: the metrics entry marks a pending epoch
    # end, the gradients an open accumulation window; their "stage" said nothing more
    loops.setdefault("epoch_end_pending", plateau_metrics is not None)
    loops.setdefault("batch_stepped", "accumulated_grads" not in ckpt)
    loops.pop("stage", None)
    progress = trainer.fit_loop.progress
    progress.load_state_dict(loops)
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs != -1 and progress.epoch > max_epochs:
        raise MisconfigurationException(  # Lightning's words: resuming would otherwise train nothing, silently
            f"You restored a checkpoint with current_epoch={progress.epoch}, but you have set "
            f"Trainer(max_epochs={max_epochs})."
        )
    if progress.epoch_end_pending:  # saved inside on_train_epoch_end: finish that epoch's end here
        if module.automatic_optimization:
            # older files (no flag) were saved before any epoch scheduler stepped: all of them are pending
            _finish_epoch_schedulers(trainer, plateau_metrics or {}, progress.epoch_schedulers_stepped)
        progress.clear_pending()
        progress.epoch_schedulers_stepped = False  # they belonged to the finished epoch
    grads = ckpt.get("accumulated_grads")
    if grads:
        params = dict(module.named_parameters())
        for name, grad in grads.items():
            if name in params:
                params[name].grad = grad.to(device=params[name].device, dtype=params[name].dtype)
    rs = trainer.fit_loop.resume_state
    rs.pending_rng = _for_rank(trainer, ckpt.get("rng_states"))
    rs.pending_epoch_start = _for_rank(trainer, epoch_start)
    # a checkpoint of a run that had read batches: with persistent workers its next epoch drew no worker seed
    rs.continues_workers = loops.get("total_batches", 0) > 0 and not trainer.reload_dataloaders_every_n_epochs


def _finish_epoch_schedulers(trainer: Trainer, metrics: dict[str, float], others_stepped: bool) -> None:
    """Step the epoch-interval schedulers that the interrupted epoch end had not stepped yet.

    `others_stepped`: the non-plateau ones stepped after the epoch's last batch, before the save.
    """
    module = trainer.lightning_module
    finished_epoch = trainer.fit_loop.progress.epoch  # already counted as complete
    for cfg in trainer.lr_scheduler_configs:
        if cfg.interval != "epoch" or finished_epoch % cfg.frequency != 0:
            continue
        if others_stepped and not cfg.reduce_on_plateau:
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
    weights_only: bool | None = None,
    **overrides: Any,
) -> Any:
    """Build `cls` from the checkpoint's hyper-parameters (then `hparams_file`'s, then `overrides`) and load its weights.

    Args:
        strict: as for `load_state_dict`; None: the new module's `strict_loading` (True unless set).
        hparams_file: a YAML file of hyper-parameters (e.g. the loggers' `hparams.yaml`) that replace
            the checkpoint's.
        weights_only: True or None (the default): read the file safely, as `torch.load` does by default since
            torch 2.6. False: trust the file, which can run code stored in it (e.g. a Lightning checkpoint with
            pickled hyper-parameters).
    """
    trusted = weights_only is False
    ckpt = load(path, map_location=map_location or "cpu", trusted=trusted)
    kwargs = hparams.init_kwargs(cls, ckpt, overrides, hparams_file=hparams_file, trusted=trusted)
    try:
        module = cls(**kwargs)
    except TypeError as err:
        raise CheckpointError(
            f"{cls.__name__}(**hyper_parameters) failed for {os.fspath(path)!r}: {err}. The checkpoint holds "
            f"{sorted(ckpt.get('hyper_parameters') or {})}; call `self.save_hyperparameters()` in __init__, or "
            "pass the missing arguments to load_from_checkpoint(path, name=value)."
        ) from err
    module.on_load_checkpoint(ckpt)
    strict = module.strict_loading if strict is None else strict
    keys = module.load_state_dict(ckpt["state_dict"], strict=strict)
    if not strict:
        if keys.missing_keys:
            rank_zero_warn(
                f"Found keys that are in the model state dict but not in the checkpoint: {keys.missing_keys}"
            )
        if keys.unexpected_keys:
            rank_zero_warn(
                f"Found keys that are not in the model state dict but in the checkpoint: {keys.unexpected_keys}"
            )
    return module


def load_datamodule_from_checkpoint(
    cls: Any,
    path: Any,
    map_location: Any = None,
    hparams_file: Any = None,
    weights_only: bool | None = None,
    **overrides: Any,
) -> Any:
    """Build a datamodule from the hyper-parameters stored in a checkpoint."""
    trusted = weights_only is False
    ckpt = load(path, map_location=map_location or "cpu", trusted=trusted)
    kwargs = hparams.init_kwargs(cls, ckpt, overrides, "datamodule_", hparams_file, trusted)
    dm = cls(**kwargs)
    state = ckpt.get(cls.__qualname__)
    if state:
        dm.load_state_dict(state)
    return dm

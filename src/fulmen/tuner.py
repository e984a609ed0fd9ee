"""Tuner: find a learning rate (`lr_find`) and the largest batch size that fits (`scale_batch_size`).

Both run short trial fits on a quiet copy of the Trainer (same accelerator, devices and precision; no
logger, checkpoints, progress bar or sanity check; a temporary root folder) and put the model back
exactly as it was afterwards: weights, RNG states, train/eval mode and its Trainer. Only the attribute
they tune (``lr``/``learning_rate``, ``batch_size``) is changed.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from fulmen.callbacks.callback import Callback
from fulmen.datamodule import LightningDataModule
from fulmen.utilities import MisconfigurationException, rank_zero_info, rank_zero_warn
from fulmen.utilities.memory import garbage_collection_cuda, is_oom_error

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

_METHODS = ("fit", "validate", "test", "predict")


class Tuner:
    """Tuning helpers bound to a Trainer: ``Tuner(trainer).lr_find(model)``, ``.scale_batch_size(model)``."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def lr_find(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: str = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> LRFinder | None:
        """Sweep the learning rate from `min_lr` to `max_lr` over `num_training` steps, recording the loss.

        The sweep stops early when the smoothed loss exceeds `early_stop_threshold` times its best value
        (None: never). With `update_attr`, the suggestion is written to the model's `attr_name` (default:
        ``lr`` or ``learning_rate``, as an attribute or in ``hparams``).

        Returns:
            An `LRFinder` with ``results``, ``suggestion()`` and ``plot()``.
        """
        if method != "fit":
            raise MisconfigurationException(
                f"lr_find(method={method!r}) is not valid: it tunes training; use 'fit'."
            )
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        return _lr_find(
            self._trainer,
            model,
            train_dataloaders,
            val_dataloaders,
            datamodule,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_training,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=update_attr,
            attr_name=attr_name,
        )

    def scale_batch_size(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: str = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        max_val: int = 8192,
    ) -> int | None:
        """Find the largest `batch_arg_name` that runs `steps_per_trial` steps of `method` without running out of memory.

        "power" doubles the size until it fails; "binsearch" then bisects between the last size that
        worked and the first that failed. Growth also stops at `max_val` and at the dataset's length
        (on a CPU, which has no memory limit to find, at the size that leaves `steps_per_trial` batches
        per epoch). The attribute (on the model, its ``hparams``, the datamodule or its ``hparams``) is
        left at the size found, and a message says why the search stopped there.

        Returns:
            The batch size found.
        """
        if method not in _METHODS:
            raise MisconfigurationException(
                f"scale_batch_size(method={method!r}) is not valid; use one of {list(_METHODS)}."
            )
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        if train_dataloaders is not None or val_dataloaders is not None or dataloaders is not None:
            raise MisconfigurationException(
                "scale_batch_size cannot change the batch size of DataLoaders passed in directly; build them "
                f"in the model's or datamodule's *_dataloader() from `self.{batch_arg_name}` instead."
            )
        return _scale_batch_size(
            self._trainer,
            model,
            datamodule,
            method=method,
            mode=mode,
            steps_per_trial=steps_per_trial,
            init_val=init_val,
            max_trials=max_trials,
            batch_arg_name=batch_arg_name,
            max_val=max_val,
        )


# ---------------------------------------------------------------------------------------- shared pieces
def _find_attr(model: Any, datamodule: Any, name: str) -> list[tuple[Any, bool]]:
    """Where `name` lives: (owner, in_hparams) for the model, its hparams, the datamodule, its hparams."""
    found: list[tuple[Any, bool]] = []
    for owner in (model, datamodule):
        if owner is None:
            continue
        if name in vars(owner) or hasattr(type(owner), name):
            found.append((owner, False))
        hparams = getattr(owner, "hparams", None)
        if hparams is not None and name in hparams:
            found.append((owner, True))
    return found


def _get_attr(where: list[tuple[Any, bool]], name: str) -> Any:
    owner, in_hparams = where[0]
    return owner.hparams[name] if in_hparams else getattr(owner, name)


def _describe_attr(where: list[tuple[Any, bool]], name: str) -> str:
    """Where a tuned value was written, as the user would spell it: `model.hparams.lr`, `datamodule.batch_size`."""
    from fulmen.module import LightningModule

    parts = []
    for owner, in_hparams in where:
        base = "model" if isinstance(owner, LightningModule) else "datamodule"
        parts.append(f"{base}.hparams.{name}" if in_hparams else f"{base}.{name}")
    return " and ".join(parts)


def _set_attr(where: list[tuple[Any, bool]], name: str, value: Any) -> None:
    for owner, in_hparams in where:
        if in_hparams:
            owner.hparams[name] = value
        else:
            setattr(owner, name, value)


class _Snapshot:
    """Everything a trial run may change on the model, so that it can be put back bit for bit."""

    def __init__(self, model: LightningModule) -> None:
        self.weights = copy.deepcopy(model.state_dict())
        self.training = model.training
        self.trainer = model._trainer
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.python_rng = random.getstate()
        numpy = sys.modules.get("numpy")
        self.numpy_rng = numpy.random.get_state() if numpy is not None else None

    def restore(self, model: LightningModule) -> None:
        model.load_state_dict(self.weights)
        model.train(self.training)
        model.trainer = self.trainer
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.python_rng)
        if self.numpy_rng is not None:
            sys.modules["numpy"].random.set_state(self.numpy_rng)


@contextmanager
def _trial_root() -> Iterator[str]:
    root = tempfile.mkdtemp(prefix="fulmen_tuner_")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _trial_trainer(trainer: Trainer, root: str, **overrides: Any) -> Trainer:
    """A quiet Trainer on the same hardware as `trainer`, for short trial runs."""
    from fulmen.trainer import Trainer

    if trainer.world_size > 1:
        raise MisconfigurationException(
            f"The tuner runs on one device, but this Trainer uses {trainer.world_size} processes; tune with "
            "Trainer(devices=1), then train with all of them."
        )
    options: dict[str, Any] = dict(
        accelerator=trainer.accelerator,
        devices=trainer.device_ids[:1] if trainer.strategy.root_device.type != "cpu" else 1,
        precision=trainer.precision,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        gradient_clip_val=trainer.gradient_clip_val,
        gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        inference_mode=trainer.inference_mode,
    )
    options.update(overrides)
    return Trainer(**options)


# ---------------------------------------------------------------------------------------- learning rate
class LRFinder:
    """What `lr_find` measured: ``results = {"lr": [...], "loss": [...]}`` (smoothed loss per step)."""

    def __init__(self, mode: str, min_lr: float, max_lr: float, num_training: int) -> None:
        self.mode = mode
        self.lr_min = min_lr
        self.lr_max = max_lr
        self.num_training = num_training
        self.results: dict[str, list[float]] = {"lr": [], "loss": []}
        self._optimal_idx: int | None = None

    def schedule(self) -> list[float]:
        """The learning rate of each step of the sweep."""
        n = self.num_training
        if n == 1:
            return [self.lr_min]
        if self.mode == "exponential":
            ratio = self.lr_max / self.lr_min
            return [self.lr_min * ratio ** (i / (n - 1)) for i in range(n)]
        return [self.lr_min + (self.lr_max - self.lr_min) * i / (n - 1) for i in range(n)]

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the loss falls fastest (steepest descent on the plotted curve).

        Args:
            skip_begin: steps ignored at the start (the loss is still noisy there).
            skip_end: steps ignored at the end (where the loss blows up).
        """
        lrs = torch.tensor(self.results["lr"], dtype=torch.float64)
        losses = torch.tensor(self.results["loss"], dtype=torch.float64)
        index = torch.arange(len(lrs))
        end = len(lrs) - skip_end if skip_end > 0 else len(lrs)
        lrs, losses, index = lrs[skip_begin:end], losses[skip_begin:end], index[skip_begin:end]
        finite = torch.isfinite(losses)
        lrs, losses, index = lrs[finite], losses[finite], index[finite]
        if len(losses) < 2:
            rank_zero_warn(
                f"lr_find recorded {len(self.results['loss'])} steps, too few to suggest a learning rate after "
                f"skipping {skip_begin} at the start and {skip_end} at the end; raise num_training or lower "
                "early_stop_threshold's strictness."
            )
            self._optimal_idx = None
            return None
        x = torch.log10(lrs) if self.mode == "exponential" else lrs
        (slope,) = torch.gradient(losses, spacing=(x,))
        best = int(torch.argmin(slope))
        self._optimal_idx = int(index[best])
        return float(lrs[best])

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None) -> Any:
        """Draw loss against learning rate with matplotlib (log scale in exponential mode).

        Args:
            suggest: mark the suggested learning rate with a red dot.
            show: call ``matplotlib.pyplot.show()``.
            ax: a matplotlib Axes to draw into; default: a new figure.

        Returns:
            The matplotlib Figure.
        """
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            raise ModuleNotFoundError(
                "LRFinder.plot needs matplotlib: pip install matplotlib (or fulmen[extra])."
            ) from err
        if ax is None:
            if show:
                import matplotlib.pyplot as plt

                fig, ax = plt.subplots(layout="constrained")
            else:
                from matplotlib.figure import Figure

                fig = Figure(figsize=(6, 4), layout="constrained")  # the axis labels fit inside the image
                ax = fig.add_subplot()
        else:
            fig = ax.figure
        lrs, losses = self.results["lr"], self.results["loss"]
        ax.plot(lrs, losses, color="tab:blue")
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest:
            lr = self.suggestion()
            if lr is not None and self._optimal_idx is not None:
                loss = losses[self._optimal_idx]
                ax.plot([lr], [loss], marker="o", markersize=10, color="red", linestyle="none")
                ax.annotate(f"suggested lr = {lr:.2e}", (lr, loss), textcoords="offset points", xytext=(8, 8))
        if show:
            import matplotlib.pyplot as plt

            plt.show()
        return fig


class _LRSweep(Callback):
    """Inside the trial run: set each step's learning rate and record the smoothed loss."""

    def __init__(self, finder: LRFinder, early_stop_threshold: float | None, beta: float = 0.98) -> None:
        self.finder = finder
        self.lrs = finder.schedule()
        self.threshold = early_stop_threshold
        self.beta = beta
        self._avg = 0.0
        self._best = math.inf
        self._step_before = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException(
                f"lr_find tunes one optimizer; configure_optimizers returned {len(trainer.optimizers)}."
            )
        trainer.lr_scheduler_configs.clear()  # the sweep owns the learning rate

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = min(trainer.global_step, len(self.lrs) - 1)
        self._step_before = trainer.global_step
        lr = self.lrs[step]
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = lr

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._step_before:
            return  # accumulating: no step taken yet
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if loss is None:
            return
        value = float(loss)
        n = len(self.finder.results["loss"])
        self._avg = self.beta * self._avg + (1 - self.beta) * value
        smoothed = self._avg / (1 - self.beta ** (n + 1))
        self.finder.results["lr"].append(self.lrs[min(self._step_before, len(self.lrs) - 1)])
        self.finder.results["loss"].append(smoothed)
        if not math.isfinite(smoothed) or (
            self.threshold is not None and n > 1 and smoothed > self.threshold * self._best
        ):
            trainer.should_stop = True  # diverged: the rest of the sweep would tell nothing
            return
        self._best = min(self._best, smoothed)


def _lr_attr_name(model: LightningModule, attr_name: str) -> str:
    if attr_name:
        if not _find_attr(model, None, attr_name):
            raise MisconfigurationException(
                f"lr_find(attr_name={attr_name!r}): the model has no attribute or hparams entry {attr_name!r}."
            )
        return attr_name
    for name in ("lr", "learning_rate"):
        if _find_attr(model, None, name):
            return name
    raise MisconfigurationException(
        "lr_find(update_attr=True) needs the model to keep its learning rate in `self.lr` or "
        "`self.learning_rate` (or in hparams, via save_hyperparameters) and use it in configure_optimizers; "
        "add one, pass attr_name=..., or pass update_attr=False."
    )


def _lr_find(
    trainer: Trainer,
    model: LightningModule,
    train_dataloaders: Any,
    val_dataloaders: Any,
    datamodule: LightningDataModule | None,
    *,
    min_lr: float,
    max_lr: float,
    num_training: int,
    mode: str,
    early_stop_threshold: float | None,
    update_attr: bool,
    attr_name: str,
) -> LRFinder | None:
    if mode not in ("exponential", "linear"):
        raise MisconfigurationException(
            f"lr_find(mode={mode!r}) is not valid; use 'exponential' or 'linear'."
        )
    if not 0 < min_lr < max_lr:
        raise MisconfigurationException(
            f"lr_find(min_lr={min_lr}, max_lr={max_lr}) is not valid; use 0 < min_lr < max_lr."
        )
    if num_training < 2:
        raise MisconfigurationException(f"lr_find(num_training={num_training}) is not valid; use at least 2.")
    name = _lr_attr_name(model, attr_name) if update_attr else ""
    finder = LRFinder(mode, min_lr, max_lr, num_training)
    snapshot = _Snapshot(model)
    try:
        with _trial_root() as root:
            trial = _trial_trainer(
                trainer,
                root,
                max_steps=num_training,
                max_epochs=None,
                limit_val_batches=0,
                callbacks=[_LRSweep(finder, early_stop_threshold)],
            )
            trial.fit(model, train_dataloaders=train_dataloaders, datamodule=datamodule)
    finally:
        snapshot.restore(model)
        garbage_collection_cuda()
    lr = finder.suggestion()
    if update_attr and lr is not None:
        where = _find_attr(model, None, name)
        _set_attr(where, name, lr)
        rank_zero_info(f"lr_find: learning rate set to {lr:.3g} ({_describe_attr(where, name)}).")
    return finder


# ---------------------------------------------------------------------------------------- batch size
def _scale_batch_size(
    trainer: Trainer,
    model: LightningModule,
    datamodule: LightningDataModule | None,
    *,
    method: str,
    mode: str,
    steps_per_trial: int,
    init_val: int,
    max_trials: int,
    batch_arg_name: str,
    max_val: int = 8192,
) -> int | None:
    if mode not in ("power", "binsearch"):
        raise MisconfigurationException(
            f"scale_batch_size(mode={mode!r}) is not valid; use 'power' or 'binsearch'."
        )
    for arg, value in (
        ("steps_per_trial", steps_per_trial),
        ("init_val", init_val),
        ("max_trials", max_trials),
        ("max_val", max_val),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MisconfigurationException(
                f"scale_batch_size({arg}={value!r}) is not valid; use an int >= 1."
            )
    where = _find_attr(model, datamodule, batch_arg_name)
    if not where:
        raise MisconfigurationException(
            f"scale_batch_size looks for `{batch_arg_name}` on the model, model.hparams, the datamodule or "
            "datamodule.hparams and found none; store the batch size there and read it in *_dataloader(), "
            "or pass batch_arg_name=..."
        )
    original = _get_attr(where, batch_arg_name)
    snapshot = _Snapshot(model)
    data_len: list[int | None] = [None]

    def fits(size: int) -> bool:
        _set_attr(where, batch_arg_name, size)
        snapshot.restore(model)  # every trial starts from the same weights and random state
        with _trial_root() as root:
            trial = _trial_trainer(trainer, root, **_trial_limits(method, steps_per_trial))
            try:
                _run_method(trial, method, model, datamodule)
            except BaseException as exc:
                if not is_oom_error(exc):
                    raise
                garbage_collection_cuda()
                return False
            data_len[0] = _dataset_length(trial, method)
        return True

    on_cpu = trainer.strategy.root_device.type == "cpu"
    good: int | None = None
    bad: int | None = None
    size = min(init_val, max_val)
    stop = f"max_trials={max_trials} sizes were tried"
    try:
        for _ in range(max_trials):
            if fits(size):
                good = size
                cap, why = _growth_cap(max_val, data_len[0], on_cpu, steps_per_trial)
                if size >= cap:
                    stop = why
                    break
                if bad is None:
                    nxt = min(size * 2, cap)
                elif mode == "power" or bad - good <= 1:
                    stop = f"{bad} ran out of memory"
                    break
                else:
                    nxt = (good + bad) // 2
            else:
                bad = size
                if size == 1:
                    raise MisconfigurationException(
                        "scale_batch_size: even batch_size=1 runs out of memory; the model does not fit on "
                        "this device."
                    )
                if good is None:
                    nxt = size // 2
                elif mode == "power" or bad - good <= 1:
                    stop = f"{bad} ran out of memory"
                    break
                else:
                    nxt = (good + bad) // 2
            size = nxt
    except BaseException:
        _set_attr(where, batch_arg_name, original)
        raise
    finally:
        snapshot.restore(model)
        garbage_collection_cuda()
    result = good if good is not None else original
    _set_attr(where, batch_arg_name, result)
    rank_zero_info(
        f"scale_batch_size: {_describe_attr(where, batch_arg_name)} set to {result}, the largest size that ran: "
        f"{stop}."
    )
    return result


def _growth_cap(max_val: int, data_len: int | None, on_cpu: bool, steps_per_trial: int) -> tuple[int, str]:
    """The largest size worth trying, and why: `max_val`, the data set's length, or (on a CPU) enough batches."""
    cap, why = max_val, f"it reached max_val={max_val}"
    if data_len is not None and data_len < cap:
        cap, why = data_len, f"a batch cannot hold more than the data set's {data_len} samples"
        if on_cpu and steps_per_trial > 1 and data_len // steps_per_trial < cap:
            # a CPU never runs out of memory here, so growth would end at one batch per epoch
            cap = max(1, data_len // steps_per_trial)
            why = (
                f"on a CPU there is no memory limit to find, so growth stops where an epoch of the "
                f"{data_len} samples still has {steps_per_trial} batches (steps_per_trial); pass max_val=... "
                "or a smaller steps_per_trial to allow more"
            )
    return cap, why


def _trial_limits(method: str, steps: int) -> dict[str, Any]:
    if method == "fit":
        return {"max_steps": steps, "max_epochs": None, "limit_val_batches": 0}
    flag = {"validate": "limit_val_batches", "test": "limit_test_batches", "predict": "limit_predict_batches"}
    return {flag[method]: steps}


def _run_method(trial: Trainer, method: str, model: LightningModule, datamodule: Any) -> None:
    if method == "fit":
        trial.fit(model, datamodule=datamodule)
    elif method == "validate":
        trial.validate(model, datamodule=datamodule, verbose=False)
    elif method == "test":
        trial.test(model, datamodule=datamodule, verbose=False)
    else:
        trial.predict(model, datamodule=datamodule, return_predictions=False)


def _dataset_length(trial: Trainer, method: str) -> int | None:
    if method == "fit":
        loaders = [trial.fit_loop.train_dataloader]
    elif method == "validate":
        loaders = trial.validate_loop.dataloaders
    elif method == "test":
        loaders = trial.test_loop.dataloaders
    else:
        loaders = trial.predict_loop.dataloaders
    if not loaders:
        return None
    dataset = getattr(loaders[0], "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None

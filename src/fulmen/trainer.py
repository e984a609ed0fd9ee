"""Trainer: the engineering side of a run (devices, precision, loops, logging, callbacks), set by flags.

`fit`, `validate`, `test` and `predict` all go through `_run`, which sets the run up in Lightning's
order (callbacks, prepare_data, setup, configure_model, device, optimizers) and hands over to a loop
in loops.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from fulmen import checkpoint, data
from fulmen.accelerators import parse_devices, select_accelerator
from fulmen.callbacks.callback import Callback
from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar
from fulmen.checkpoint import check_ckpt_path
from fulmen.checkpoint_io import CheckpointIO
from fulmen.combined_loader import CombinedLoader
from fulmen.compiled import from_compiled
from fulmen.datamodule import LightningDataModule
from fulmen.environments import ClusterEnvironment
from fulmen.flags import check_choice, check_count, check_limit, map_legacy_flags, parse_max_time
from fulmen.hooks import HookDispatcher
from fulmen.layer_sync import LayerSync
from fulmen.loggers import default_logger
from fulmen.loops import EvaluationLoop, FitLoop, PredictionLoop
from fulmen.module import LightningModule
from fulmen.optim import LightningOptimizer
from fulmen.plan import RunPlan, make_plan
from fulmen.precision import Precision, resolve_precision
from fulmen.preemption import sigterm_received
from fulmen.profilers import Profiler, _profiled_run, resolve_profiler
from fulmen.progress import Progress
from fulmen.results import RunResults
from fulmen.seed import seed_everything  # noqa: F401  # `lightning.pytorch.trainer.seed_everything`
from fulmen.states import RunningStage, TrainerFn, TrainerState, TrainerStatus
from fulmen.strategies import Strategy, select_strategy
from fulmen.utilities import (
    MisconfigurationException,
    is_overridden,
    rank_zero_info,
    rank_zero_warn,
    set_global_rank,
)


def _stage_flag(stage: RunningStage, doc: str) -> Any:
    """A Trainer property that is True in `stage`; setting it True enters the stage, False leaves it."""

    def get(trainer: Trainer) -> bool:
        return trainer.state.stage == stage

    def set_(trainer: Trainer, value: bool) -> None:
        if value:
            trainer.state.stage = stage
        elif trainer.state.stage == stage:
            trainer.state.stage = None

    return property(get, set_, doc=doc)


class Trainer:
    """Runs a LightningModule: `fit`, `validate`, `test`, `predict`, configured by Lightning 2.x's flags."""

    def __init__(
        self,
        *,
        accelerator: str | Any = "auto",
        strategy: str | Strategy = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Any = None,
        logger: Any = None,
        callbacks: list[Callback] | Callback | None = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: Any = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Any = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | os.PathLike[str] | None = None,
        enable_autolog_hparams: bool = True,
        model_registry: str | None = None,
        **legacy: Any,
    ) -> None:
        """Configure a run; see docs/trainer.md for every flag (they match Lightning 2.x)."""
        flags = {k: v for k, v in locals().items() if k not in ("self", "legacy", "__class__")}
        known = list(flags)
        self._resume_from_checkpoint = map_legacy_flags(flags, legacy, known)
        self._flags = flags
        f = flags

        self.default_root_dir = os.fspath(f["default_root_dir"]) if f["default_root_dir"] else os.getcwd()
        self.barebones = bool(f["barebones"])
        self.enable_autolog_hparams = bool(f["enable_autolog_hparams"])
        self.model_registry = f["model_registry"]
        if self.model_registry is not None:
            rank_zero_warn(
                f"Trainer(model_registry={self.model_registry!r}) is accepted for Lightning compatibility, but "
                "fulmen does not upload models to a registry; the flag has no effect."
            )
        self.fast_dev_run = f["fast_dev_run"]
        if self.fast_dev_run is True:
            self.fast_dev_run = 1
        if isinstance(self.fast_dev_run, int) and self.fast_dev_run < 0:
            raise MisconfigurationException(
                f"fast_dev_run={self.fast_dev_run} is not valid; use True or an int >= 0."
            )

        # --- how long to train
        self.max_steps: int = check_count("max_steps", f["max_steps"], -1, "an int >= 0, or -1 for no limit")
        self.max_epochs: int | None = f["max_epochs"]
        if self.max_epochs is None:
            self.max_epochs = 1000 if self.max_steps == -1 and f["max_time"] is None else -1
        else:
            self.max_epochs = check_count(
                "max_epochs", self.max_epochs, -1, "an int >= 0, or -1 for no limit"
            )
        self.min_epochs = _optional_count("min_epochs", f["min_epochs"], 0, "an int >= 0, or None")
        self.min_steps = _optional_count("min_steps", f["min_steps"], 0, "an int >= 0, or None")
        self.max_time = parse_max_time(f["max_time"])

        # --- how much of each epoch
        def limit(name: str) -> int | float:
            value = f[name]
            return 1.0 if value is None else check_limit(name, value)

        self.limit_train_batches = limit("limit_train_batches")
        self.limit_val_batches = limit("limit_val_batches")
        self.limit_test_batches = limit("limit_test_batches")
        self.limit_predict_batches = limit("limit_predict_batches")
        self.overfit_batches = check_limit("overfit_batches", f["overfit_batches"])
        if self.overfit_batches > 0:
            self.limit_val_batches = self.overfit_batches
        self.val_check_interval = 1.0 if f["val_check_interval"] is None else f["val_check_interval"]
        if isinstance(self.val_check_interval, float) and not 0.0 < self.val_check_interval <= 1.0:
            raise MisconfigurationException(
                f"val_check_interval={self.val_check_interval} is not valid: a float must be in (0.0, 1.0]."
            )
        self.check_val_every_n_epoch = _optional_count(
            "check_val_every_n_epoch",
            f["check_val_every_n_epoch"],
            1,
            "an int >= 1, or None to validate every val_check_interval batches across epochs",
        )
        default_sanity = 0 if self.barebones else 2
        self.num_sanity_val_steps = (
            default_sanity if f["num_sanity_val_steps"] is None else int(f["num_sanity_val_steps"])
        )
        self.log_every_n_steps = 50 if f["log_every_n_steps"] is None else int(f["log_every_n_steps"])
        self.reload_dataloaders_every_n_epochs = int(f["reload_dataloaders_every_n_epochs"])
        if self.fast_dev_run:
            n = int(self.fast_dev_run)
            self.max_epochs, self.max_steps, self.num_sanity_val_steps = 1, n, 0
            self.limit_train_batches = self.limit_val_batches = n
            self.limit_test_batches = self.limit_predict_batches = n
            self.val_check_interval, self.check_val_every_n_epoch = 1.0, 1
            self.log_every_n_steps = 1  # as in Lightning: each of the few steps reaches the (dummy) logger

        # --- optimization
        self.accumulate_grad_batches = int(f["accumulate_grad_batches"])
        if self.accumulate_grad_batches < 1:
            raise MisconfigurationException(
                f"accumulate_grad_batches={self.accumulate_grad_batches} is not valid; use an int >= 1."
            )
        self.gradient_clip_val = f["gradient_clip_val"]
        self.gradient_clip_algorithm = f["gradient_clip_algorithm"] or "norm"
        check_choice("gradient_clip_algorithm", self.gradient_clip_algorithm, ("norm", "value"))
        self.inference_mode = bool(f["inference_mode"])
        self.detect_anomaly = bool(f["detect_anomaly"])
        self.use_distributed_sampler = bool(f["use_distributed_sampler"])
        self.sync_batchnorm = bool(f["sync_batchnorm"])
        self._set_determinism(f["deterministic"], f["benchmark"])

        # --- hardware
        plugins = _sort_plugins(f["plugins"])
        precision_flag = f["precision"]
        if "precision" in plugins:
            if precision_flag is not None:
                raise MisconfigurationException(
                    "The precision was given twice (in `plugins=` and/or `precision=`); pass exactly one."
                )
            precision_flag = plugins["precision"]
        self.accelerator = select_accelerator(f["accelerator"])
        self._parsed_devices = parse_devices(f["devices"], self.accelerator)
        self.num_nodes = int(f["num_nodes"])
        self.precision_plugin: Precision = resolve_precision(
            "32-true" if precision_flag is None else precision_flag, self.accelerator.name
        )
        self._cluster_environment = plugins.get("cluster_environment")
        self.strategy: Strategy = select_strategy(
            f["strategy"],
            self.accelerator,
            self._parsed_devices,
            self.num_nodes,
            self.precision_plugin,
            cluster_environment=self._cluster_environment,
        )
        self.precision_plugin = self.strategy.precision_plugin
        if "checkpoint_io" in plugins:
            self.strategy.checkpoint_io = plugins["checkpoint_io"]
        self._layer_sync = plugins.get("layer_sync")
        if self._layer_sync is not None:  # plugins=[TorchSyncBatchNorm()] is sync_batchnorm=True
            self.sync_batchnorm = True
        set_global_rank(self.strategy.global_rank)

        # --- profiler
        self.profiler: Profiler = resolve_profiler(f["profiler"])

        # --- what to switch on
        quiet = self.barebones or bool(self.fast_dev_run)
        self.enable_progress_bar = _flag(f["enable_progress_bar"], not self.barebones)
        self.enable_model_summary = _flag(f["enable_model_summary"], not self.barebones)
        self.enable_checkpointing = _flag(f["enable_checkpointing"], not quiet)
        # switched off by the user (fast_dev_run's quiet default keeps a user's checkpoint callback working)
        self._checkpointing_refused = f["enable_checkpointing"] is False or self.barebones
        if self.barebones:
            self._check_barebones(f)
        user_callbacks = (
            [f["callbacks"]] if isinstance(f["callbacks"], Callback) else list(f["callbacks"] or [])
        )
        self.callbacks: list[Callback] = self._default_callbacks(user_callbacks)
        self.loggers: list[Any] = self._make_loggers(f["logger"], quiet)

        # --- run state
        self._progress = Progress()
        self.state = TrainerState()
        self.should_stop = False
        self.lightning_module: LightningModule = None  # type: ignore[assignment]
        self.datamodule: LightningDataModule | None = None
        self._results = RunResults(self)
        self._hooks: HookDispatcher = None  # type: ignore[assignment]
        self._plan = RunPlan()
        # the loops get the counters and the logged results passed in, and the run plan at each run
        self.fit_loop = FitLoop(self, self._progress, self._results)
        self.validate_loop = self.fit_loop.val_loop
        self.test_loop = EvaluationLoop(self, "test", self._progress, self._results)
        self.predict_loop = PredictionLoop(self)
        self.ckpt_path: str | None = None
        self._ckpt_weights_only: bool | None = None  # the run's weights_only=: False trusts ckpt_path

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _set_determinism(deterministic: Any, benchmark: bool | None) -> None:
        if deterministic is not None and deterministic not in (True, False, "warn"):
            raise MisconfigurationException(
                f"deterministic={deterministic!r} is not valid; use True, False or 'warn'."
            )
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        elif deterministic is False:
            torch.use_deterministic_algorithms(False)
        if benchmark is not None:
            if benchmark and deterministic:
                rank_zero_warn("benchmark=True and deterministic=True conflict; deterministic wins.")
            else:
                torch.backends.cudnn.benchmark = benchmark

    @staticmethod
    def _check_barebones(f: dict[str, Any]) -> None:
        for name in ("enable_progress_bar", "enable_model_summary", "enable_checkpointing"):
            if f[name]:
                raise MisconfigurationException(
                    f"barebones=True turns {name} off; do not also pass {name}=True."
                )
        if f["logger"] not in (None, False):
            raise MisconfigurationException(
                "barebones=True runs without loggers; remove logger=... or barebones."
            )

    def _default_callbacks(self, user: list[Callback]) -> list[Callback]:

        # as Lightning 2.6: the Rich bar and summary when the `rich` package is installed, else TQDM and text
        rich = importlib.util.find_spec("rich") is not None
        callbacks = list(user)
        if self.enable_progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            if rich:
                from fulmen.callbacks.rich_progress import RichProgressBar

                callbacks.append(RichProgressBar())
            else:
                callbacks.append(TQDMProgressBar())
        if not self.enable_progress_bar:
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        if self.enable_model_summary and not any(isinstance(c, ModelSummary) for c in callbacks):
            if rich:
                from fulmen.callbacks.rich_progress import RichModelSummary

                callbacks.append(RichModelSummary())
            else:
                callbacks.append(ModelSummary())
        if self.max_time is not None:
            callbacks = _add_timer(callbacks, self.max_time)
        if self.enable_checkpointing:
            callbacks = _add_default_checkpoint(callbacks)
        elif self._checkpointing_refused and any(isinstance(c, Checkpoint) for c in callbacks):
            # as Lightning: a checkpoint callback would silently never run
            raise MisconfigurationException(
                "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in "
                "callbacks list. Remove the checkpoint callback, or set enable_checkpointing=True."
            )
        return callbacks

    def _make_loggers(self, logger: Any, quiet: bool) -> list[Any]:
        if self.fast_dev_run and logger is not False and not self.barebones:
            from fulmen.loggers.logger import DummyLogger

            # as in Lightning: `self.logger.experiment.add_*` calls keep working and write nothing
            return [DummyLogger()]
        if logger is False or (quiet and logger in (None, True)):
            return []
        if logger is None or logger is True:
            return [default_logger(self.default_root_dir)]
        if isinstance(logger, Iterable):
            return list(logger)
        return [logger]

    # ------------------------------------------------------------------ public state
    @property
    def logger(self) -> Any:
        """The first logger, or None."""
        return self.loggers[0] if self.loggers else None

    @property
    def current_epoch(self) -> int:
        """Epochs completed so far (the epoch being trained while inside one)."""
        return self._progress.epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far."""
        return self._progress.global_step

    @property
    def world_size(self) -> int:
        """Number of processes in the run."""
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes."""
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine."""
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        """This machine's rank."""
        return self.strategy.node_rank

    @property
    def is_global_zero(self) -> bool:
        """True on the process that writes logs and checkpoints."""
        return self.strategy.is_global_zero

    @property
    def num_devices(self) -> int:
        """Devices used on each machine."""
        return len(self._parsed_devices)

    @property
    def device_ids(self) -> list[int]:
        """Indices of the devices used on this machine."""
        return list(self._parsed_devices)

    @property
    def precision(self) -> str:
        """The precision mode's name, e.g. "32-true"."""
        return self.precision_plugin.name

    @property
    def model(self) -> Any:
        """The module as wrapped by the strategy (e.g. in DistributedDataParallel)."""
        return self.strategy.model

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers from configure_optimizers."""
        return self.strategy.optimizers

    @optimizers.setter
    def optimizers(self, value: list[torch.optim.Optimizer]) -> None:

        self.strategy.optimizers = list(value)
        self.strategy.lightning_optimizers = [LightningOptimizer(o, self) for o in value]

    @property
    def lr_scheduler_configs(self) -> list[Any]:
        """The scheduler configs from configure_optimizers."""
        return self.strategy.lr_scheduler_configs

    @property
    def train_dataloader(self) -> Any:
        """The train dataloader of the current fit (several: the list or dict they were given in)."""
        return _as_given(self.fit_loop.train_dataloader)

    @property
    def val_dataloaders(self) -> Any:
        """The validation dataloader(s)."""
        return _as_given(self.validate_loop.combined)

    @property
    def test_dataloaders(self) -> Any:
        """The test dataloader(s)."""
        return _as_given(self.test_loop.combined)

    @property
    def is_last_batch(self) -> bool:
        """True while the last training batch of the epoch is being processed."""
        return self.fit_loop.batch_idx + 1 == self.fit_loop.num_train_batches

    @property
    def num_training_batches(self) -> int | float:
        """Training batches per epoch after the limit flags."""
        return _count(self.fit_loop.num_train_batches)

    @property
    def num_val_batches(self) -> list[int | float]:
        """Validation batches per dataloader after the limit flags."""
        return [_count(n) for n in self.validate_loop.num_batches(each_loader=True)]

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the fit will take: an int (inf only when nothing bounds the run)."""
        if self.max_epochs in (None, -1):
            return self.max_steps if self.max_steps != -1 else math.inf
        self.fit_loop.setup_train_data()
        batches = self.fit_loop.num_train_batches
        if math.isinf(batches):
            return self.max_steps if self.max_steps != -1 else math.inf
        estimate = math.ceil(batches / self.accumulate_grad_batches) * max(self.max_epochs, 1)  # type: ignore[arg-type]
        return min(estimate, self.max_steps) if self.max_steps != -1 else estimate

    @property
    def log_dir(self) -> str:
        """Where logs go: the first logger's folder, else default_root_dir."""
        if self.logger is not None:
            d = getattr(self.logger, "log_dir", None) or getattr(self.logger, "save_dir", None)
            if d:
                return os.fspath(d)
        return self.default_root_dir

    @property
    def progress_bar_callback(self) -> Any:
        """The progress bar callback, if any."""

        return next((c for c in self.callbacks if isinstance(c, ProgressBar)), None)

    @property
    def checkpoint_callbacks(self) -> list[Any]:
        """Every checkpoint-saving callback (instances of `Checkpoint`, such as ModelCheckpoint)."""
        return [c for c in self.callbacks if isinstance(c, Checkpoint)]

    @property
    def checkpoint_callback(self) -> Any:
        """The first ModelCheckpoint callback, or None."""
        cbs = self.checkpoint_callbacks
        return cbs[0] if cbs else None

    @property
    def early_stopping_callback(self) -> Any:
        """The first EarlyStopping callback, or None."""
        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def early_stopping_callbacks(self) -> list[Any]:
        """Every EarlyStopping callback."""
        return [c for c in self.callbacks if isinstance(c, EarlyStopping)]

    @property
    def predict_dataloaders(self) -> Any:
        """The predict dataloader(s) of the last `predict` call."""
        return _as_given(self.predict_loop.combined)

    @property
    def num_test_batches(self) -> list[int | float]:
        """Test batches per dataloader after the limit flags."""
        return [_count(n) for n in self.test_loop.num_batches(each_loader=True)]

    @property
    def num_predict_batches(self) -> list[int | float]:
        """Predict batches per dataloader after the limit flags."""
        limit = self.limit_predict_batches
        return [
            _count(data.limit_batches(dl, limit, "limit_predict_batches"))
            for dl in self.predict_loop.dataloaders
        ]

    @property
    def num_sanity_val_batches(self) -> list[int | float]:
        """Validation batches per dataloader that the sanity check runs."""
        return [_count(n) for n in self.validate_loop.num_batches(sanity=True, each_loader=True)]

    @property
    def val_check_batch(self) -> int | float:
        """Training batches between validations (inf: at the end of an epoch of unknown length)."""
        return _count(self.fit_loop._val_check_batch)

    @property
    def enable_validation(self) -> bool:
        """True when fit will validate: the module has a validation_step and limit_val_batches is not 0."""
        return self.lightning_module is not None and self.fit_loop._validation_possible()

    @property
    def evaluating(self) -> bool:
        """True while validating or testing (the sanity check and validation inside fit included)."""
        stage = self.state.stage
        return stage is not None and stage.evaluating

    @property
    def interrupted(self) -> bool:
        """True after the last run was stopped by an exception (Ctrl-C included)."""
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def received_sigterm(self) -> bool:
        """True once SIGTERM arrived during fit (see BackupAndRestore)."""

        return sigterm_received()

    @property
    def scaler(self) -> Any:
        """The precision's grad scaler ("16-mixed"), else None."""
        return getattr(self.precision_plugin, "scaler", None)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """num_replicas and rank for a DistributedSampler under a multi-process strategy, else None."""
        return getattr(self.strategy, "distributed_sampler_kwargs", None)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on the first process of each machine only (local rank 0)."""
        if self.local_rank == 0:
            print(*args, **kwargs)

    @contextlib.contextmanager
    def init_module(self, empty_init: bool | None = None) -> Iterator[None]:
        """Create the model inside this context: on the run's device, in the dtype of a "-true" precision.

        Args:
            empty_init: skip the weights' initialization (torch.nn.init), for a model whose weights a
                checkpoint will overwrite anyway; saves time and memory for large models.
        """
        skip = _SkipInit() if empty_init else contextlib.nullcontext()
        with skip, self.strategy.root_device, self.precision_plugin.tensor_init_context():
            yield

    @property
    def callback_metrics(self) -> dict[str, Any]:
        """Everything logged, as callbacks see it: latest step values and epoch values (tensors).

        One dict per run: what you write into it stays until a logged value of the same name replaces it.
        """
        return self._results.refreshed_callback_metrics()

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """The metrics logged with prog_bar=True, as Python numbers."""
        out: dict[str, float] = {}
        for key, value in self._results.callback_view(prog_bar_only=True).items():
            out[key] = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        return out

    @property
    def logged_metrics(self) -> dict[str, Any]:
        """What was last sent to the loggers."""
        return dict(self._results.logged)

    # The stage flags read and write `state.stage` (fulmen/states.py), as Lightning's do (see _stage_flag).
    training = _stage_flag(RunningStage.TRAINING, "True while training batches run (stage 'train').")
    sanity_checking = _stage_flag(
        RunningStage.SANITY_CHECKING, "True during the sanity check that starts fit."
    )
    validating = _stage_flag(RunningStage.VALIDATING, "True during validation (in validate() or inside fit).")
    testing = _stage_flag(RunningStage.TESTING, "True during test().")
    predicting = _stage_flag(RunningStage.PREDICTING, "True during predict().")

    # ------------------------------------------------------------------ entry points
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train `model` (with validation) until a stopping condition is met.

        `weights_only=False` trusts `ckpt_path` (it may run code stored in the file); None/True read it safely.
        """
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise MisconfigurationException(
                "trainer.fit got both dataloaders and a datamodule; pass one or the other."
            )
        if ckpt_path is None and self._resume_from_checkpoint is not None:
            ckpt_path = self._resume_from_checkpoint

        check_ckpt_path(ckpt_path)  # a wrong path fails here, before prepare_data/setup run
        self._attach(model, datamodule, "fit")
        self._ckpt_weights_only = weights_only
        self.fit_loop.explicit_train = train_dataloaders
        self.fit_loop.val_loop.explicit = val_dataloaders
        self.fit_loop.train_dataloader = None
        self.fit_loop.val_loop._loaded = False
        self.fit_loop.__dict__.pop("_val_enabled", None)
        self.fit_loop._train_loaded_epoch = self.fit_loop._val_loaded_epoch = None
        self._launch(self._run, "fit", ckpt_path)

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run one validation epoch; returns one dict of metrics per dataloader."""
        return self._evaluate("validate", model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run one test epoch; returns one dict of metrics per dataloader."""
        return self._evaluate("test", model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        weights_only: bool | None = None,
    ) -> Any:
        """Run `predict_step` over the predict data; returns the list of its outputs."""
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        self._attach(self._pick_model(model, "predict"), datamodule, "predict")
        self._ckpt_weights_only = weights_only
        self.predict_loop.explicit = dataloaders
        keep = True if return_predictions is None else return_predictions
        return self._launch(self._run, "predict", ckpt_path, keep)

    def _evaluate(
        self,
        stage: str,
        model: LightningModule | None,
        dataloaders: Any,
        ckpt_path: Any,
        verbose: bool,
        datamodule: LightningDataModule | None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        self._attach(self._pick_model(model, stage), datamodule, stage)
        self._ckpt_weights_only = weights_only
        loop = self.validate_loop if stage == "validate" else self.test_loop
        loop.explicit = dataloaders
        loop._loaded = False
        results = self._launch(self._run, stage, ckpt_path)
        if verbose and self.is_global_zero and results:
            _print_results(stage, results)
        return results

    def _pick_model(self, model: LightningModule | None, stage: str) -> LightningModule:
        if model is None:
            if self.lightning_module is None:
                raise MisconfigurationException(
                    f"trainer.{stage}() needs a model: pass one, or call it after trainer.fit(model)."
                )
            return self.lightning_module
        return model

    def _attach(self, model: Any, datamodule: LightningDataModule | None, fn: str) -> None:
        model = from_compiled(model)  # torch.compile(module): train the module, with forward compiled
        if not isinstance(model, LightningModule):
            raise MisconfigurationException(
                f"trainer.{fn}() expects a fulmen.LightningModule, got {type(model).__name__}. Subclass "
                "`fulmen.LightningModule` (it is an nn.Module) and move your loop body into `training_step`."
            )
        self.lightning_module = model
        model.trainer = self
        self.datamodule = datamodule
        if datamodule is not None:
            datamodule.trainer = self
        self.strategy.connect(model)
        self.state.fn = TrainerFn(fn)
        self.state.stage = _FIRST_STAGE[self.state.fn]
        self.state.status = TrainerStatus.RUNNING

    def _launch(self, fn: Callable[..., Any], *args: Any) -> Any:
        launcher = self.strategy.launcher
        if launcher is None:
            return fn(*args)
        # the run may happen in other processes (ddp_spawn): this process's state follows its outcome
        try:
            result = launcher.launch(fn, *args, trainer=self)
        except BaseException:
            self.state.status, self.state.stage = TrainerStatus.INTERRUPTED, None
            raise
        self.state.status, self.state.stage = TrainerStatus.FINISHED, None
        return result

    # ------------------------------------------------------------------ the run
    def _run(self, fn: str, ckpt_path: Any = None, *extra: Any) -> Any:
        module = self.lightning_module
        self.should_stop = False
        self.state.stage = _FIRST_STAGE[TrainerFn(fn)]
        self._results.clear()
        anomaly = torch.autograd.set_detect_anomaly(True) if self.detect_anomaly else contextlib.nullcontext()
        # With a profiler on, the step methods are wrapped with timing for this run only (profilers.py).
        profiling = _profiled_run(self, fn) if self.profiler.enabled else contextlib.nullcontext()
        try:
            with anomaly, profiling:
                self.strategy.setup_environment()
                self._attach_module_callbacks()
                self._hooks = HookDispatcher(self, module, self.callbacks)
                self._prepare_data()
                self._call_setup(fn)
                self._hooks.resolve()  # a hook attached in setup (even configure_model) runs
                self._hooks.module("configure_model")
                self.strategy.setup(self)
                self._plan = make_plan(self, self._hooks, optimizers_ready=False)
                checkpoint = self._load_checkpoint(ckpt_path, fn)
                if fn == "fit":
                    _require_step(module, "training_step", fn)
                    self.strategy.setup_optimizers(self)
                    self._check_optimization_flags(module)
                    self._results.current = self._results.train
                    # on_fit_start runs before the optimizer/loop state is restored, as in Lightning: a
                    # callback such as BaseFinetuning re-adds the param groups the saved state expects
                    self._hooks.both("on_fit_start")
                    if checkpoint is not None:
                        self._restore_training_state(checkpoint)
                    self._log_hyperparams()
                    self._plan = make_plan(self, self._hooks, optimizers_ready=True)
                    self.fit_loop.run(self._plan)
                    self._finish_checkpoint_writes()
                    self._hooks.both("on_fit_end")
                    result = None
                elif fn in ("validate", "test"):
                    _require_step(module, "validation_step" if fn == "validate" else "test_step", fn)
                    loop = self.validate_loop if fn == "validate" else self.test_loop
                    self._results.current = self._results.for_stage(fn)
                    self._log_hyperparams()
                    loop.setup_data(reload=True)
                    result = loop.run(self._plan)
                else:
                    result = self.predict_loop.run(self._plan, *extra)
                self._call_teardown(fn)
                self._finalize_loggers("success")
                self.state.status = TrainerStatus.FINISHED
                return result
        except BaseException as exc:
            self.state.status = TrainerStatus.INTERRUPTED
            self._on_exception(exc, fn)
            raise
        finally:
            self.state.stage = None
            self._results.current = None
            self.strategy.teardown()

    def _check_optimization_flags(self, module: LightningModule) -> None:
        name = type(module).__name__
        if module.automatic_optimization and len(self.optimizers) > 1:
            raise MisconfigurationException(
                f"`{name}.configure_optimizers` returned {len(self.optimizers)} optimizers, which needs manual "
                "optimization: set `self.automatic_optimization = False` in `__init__` and step them in "
                "`training_step` (see docs/optimization.md)."
            )
        if not module.automatic_optimization:
            if self.gradient_clip_val:
                raise MisconfigurationException(
                    f"Trainer(gradient_clip_val=...) does not apply to manual optimization in `{name}`: call "
                    "`self.clip_gradients(opt, gradient_clip_val=...)` in training_step instead."
                )
            if self.accumulate_grad_batches != 1:
                raise MisconfigurationException(
                    f"Trainer(accumulate_grad_batches=...) does not apply to manual optimization in `{name}`: "
                    "step the optimizer every N batches yourself in training_step."
                )

    def _finish_checkpoint_writes(self) -> None:
        """Checkpoints written in the background are on disk, on every rank, before on_fit_end runs."""

        checkpoint.finish_writes()
        self.strategy.barrier("checkpoint_writes")

    def _on_exception(self, exc: BaseException, fn: str) -> None:

        if isinstance(exc, KeyboardInterrupt):
            rank_zero_info("Detected KeyboardInterrupt, attempting graceful shutdown ...")

        try:  # the last checkpoints handed to the background writer still land
            checkpoint.finish_writes()
        except Exception as err:
            rank_zero_warn(f"A checkpoint could not be written while the run was failing: {err}")
        hooks = self._hooks
        if hooks is not None:
            with contextlib.suppress(Exception):
                hooks.callbacks("on_exception", exc)
                hooks.module("on_exception", exc)
        if not isinstance(exc, LoggerFinalizeError):  # those were finalized already
            self._finalize_loggers("failed")

    def _attach_module_callbacks(self) -> None:
        module = self.lightning_module
        extra = module.configure_callbacks()
        if not extra:
            return
        extra = [extra] if isinstance(extra, Callback) else list(extra)
        types = {type(c) for c in extra}
        kept = [c for c in self.callbacks if type(c) not in types]
        self.callbacks = _monitoring_last(kept + extra)

    def _prepare_data(self) -> None:
        # once per machine (local rank 0), or once per job (global rank 0) with prepare_data_per_node=False
        def chosen(owner: Any) -> bool:
            per_node = getattr(owner, "prepare_data_per_node", True)
            return self.local_rank == 0 if per_node else self.global_rank == 0

        if self.datamodule is not None and chosen(self.datamodule):
            self.datamodule.prepare_data()
        if chosen(self.lightning_module):
            self._hooks.module("prepare_data")

    def _call_setup(self, fn: str) -> None:
        if self.world_size > 1:  # every rank reports rank 0's version_N folder (only rank 0 writes there)
            for lg in self.loggers:
                if hasattr(lg, "_version"):
                    lg._version = self.strategy.broadcast(lg.version)
        for lg in self.loggers:
            _ = getattr(lg, "experiment", None)  # create the logger's folder before user code runs
        stage = TrainerFn(fn)  # hooks get the enum, as in Lightning; it compares equal to "fit", ...
        if self.datamodule is not None:
            self.datamodule.setup(stage=stage)
        self._hooks.callbacks("setup", stage=stage)
        self._hooks.module("setup", stage=stage)

    def _call_teardown(self, fn: str) -> None:
        stage = TrainerFn(fn)
        if self.datamodule is not None:
            self.datamodule.teardown(stage=stage)
        self._hooks.callbacks("teardown", stage=stage)
        self._hooks.module("teardown", stage=stage)

    def _finalize_loggers(self, status: str) -> None:
        """Finalize every logger; on success a logger that failed fails the run (its rows would be lost)."""
        failed: list[tuple[Any, Exception]] = []
        for lg in self.loggers:
            try:
                lg.finalize(status)
            except Exception as err:
                failed.append((lg, err))
        if not failed:
            return
        where = "; ".join(
            f"{type(lg).__name__}: {type(err).__name__}: {str(err).rstrip('.')}" for lg, err in failed
        )
        if status != "success":  # the run's own exception is already on its way; don't mask it
            rank_zero_warn(f"A logger could not finish while the run was failing ({where}).")
            return
        raise LoggerFinalizeError(
            f"The run finished (checkpoints are on disk) but a logger could not write its files: {where}. Its "
            "metrics may be lost; check the logger's save_dir (permissions, free space) and rerun."
        ) from failed[0][1]

    def _log_hyperparams(self) -> None:
        if not self.loggers or not self.enable_autolog_hparams:
            return
        params: dict[str, Any] = {}
        module = self.lightning_module
        # As in Lightning, only objects that called `save_hyperparameters` (with logger=True) are logged; with
        # none, loggers get no `log_hyperparams` call at all (so no placeholder `hp_metric` either).
        opted_in = False
        if getattr(module, "_log_hyperparams", False):
            params.update(module.hparams_initial)
            opted_in = True
        if self.datamodule is not None and getattr(self.datamodule, "_log_hyperparams", False):
            params.update(self.datamodule.hparams_initial)
            opted_in = True
        for lg in self.loggers:
            if opted_in:
                lg.log_hyperparams(params)
            if hasattr(lg, "log_graph"):
                lg.log_graph(module)
            lg.save()

    # ------------------------------------------------------------------ checkpoints (see checkpoint/)
    def _load_checkpoint(self, ckpt_path: Any, fn: str) -> dict[str, Any] | None:

        return checkpoint.load_for_run(self, ckpt_path, fn, weights_only=self._ckpt_weights_only)

    def _restore_training_state(self, ckpt: dict[str, Any]) -> None:

        checkpoint.restore_training_state(self, ckpt)

    def save_checkpoint(
        self, filepath: str | os.PathLike[str], weights_only: bool = False, storage_options: Any = None
    ) -> None:
        """Write a checkpoint of the current state to `filepath` (atomically; rank 0 writes)."""

        if self.lightning_module is None:
            raise MisconfigurationException(
                "trainer.save_checkpoint needs a model: call it during or after fit()."
            )
        checkpoint.save(self, filepath, weights_only=weights_only)


# the stage each Trainer method starts in (fit moves on to sanity checking and validating from there)
_FIRST_STAGE = {
    TrainerFn.FITTING: RunningStage.TRAINING,
    TrainerFn.VALIDATING: RunningStage.VALIDATING,
    TrainerFn.TESTING: RunningStage.TESTING,
    TrainerFn.PREDICTING: RunningStage.PREDICTING,
}


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Turns the in-place initializers of torch.nn.init into no-ops (`init_module(empty_init=True)`)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


def _require_step(module: LightningModule, step: str, fn: str) -> None:
    if not is_overridden(step, module, LightningModule):
        raise MisconfigurationException(
            f"trainer.{fn}() needs `{type(module).__name__}.{step}(self, batch, batch_idx)`; it is not defined (or is set to None)."
        )


def _sort_plugins(plugins: Any) -> dict[str, Any]:
    """The objects of `Trainer(plugins=...)` by kind: precision, checkpoint_io, cluster_environment, layer_sync."""

    kinds: tuple[tuple[str, type], ...] = (
        ("precision", Precision),
        ("checkpoint_io", CheckpointIO),
        ("cluster_environment", ClusterEnvironment),
        ("layer_sync", LayerSync),
    )
    items = [] if plugins is None else plugins if isinstance(plugins, (list, tuple)) else [plugins]
    found: dict[str, Any] = {}
    for plugin in items:
        kind = next((name for name, cls in kinds if isinstance(plugin, cls)), None)
        if kind is None:
            raise MisconfigurationException(
                f"Trainer(plugins=...) got {plugin!r}, which is not a plugin: pass Precision, CheckpointIO, "
                "ClusterEnvironment or LayerSync objects (from fulmen.plugins)."
            )
        if kind in found:
            names = [type(found[kind]).__name__, type(plugin).__name__]
            if kind == "checkpoint_io":
                raise MisconfigurationException(
                    f"Trainer(plugins=...) got several checkpoint I/O plugins {names}; pass one (wrap one in "
                    "another, e.g. AsyncCheckpointIO(MyCheckpointIO()), to combine them)."
                )
            if kind == "precision":
                raise MisconfigurationException(
                    "The precision was given twice (in `plugins=` and/or `precision=`); pass exactly one."
                )
            raise MisconfigurationException(f"Trainer(plugins=...) got two {kind} plugins {names}; pass one.")
        found[kind] = plugin
    return found


def _as_given(loader: Any) -> Any:
    """Loaders as the user gave them (one loader, or the list/dict a CombinedLoader holds); None if none."""

    if isinstance(loader, CombinedLoader):
        return loader.iterables if loader.flattened else None
    return loader


def _count(batches: float) -> int | float:
    """A batch count as Lightning reports it: an int, or inf for a loader without a length."""
    return batches if math.isinf(batches) else int(batches)


def _optional_count(flag: str, value: Any, minimum: int, meaning: str) -> int | None:
    return None if value is None else check_count(flag, value, minimum, meaning)


class LoggerFinalizeError(RuntimeError):
    """A logger failed to finish writing its files at the end of an otherwise successful run."""


def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else bool(value)


def _monitoring_last(callbacks: list[Callback]) -> list[Callback]:
    """Checkpointing callbacks run last so that they see every metric logged before them."""
    plain = [c for c in callbacks if not isinstance(c, Checkpoint)]
    return plain + [c for c in callbacks if isinstance(c, Checkpoint)]


def _add_timer(callbacks: list[Callback], max_time: Any) -> list[Callback]:
    """`max_time` is kept by a Timer callback (in `trainer.callbacks`), as in Lightning; a user's Timer wins."""
    from fulmen.callbacks.timer import Timer

    if any(isinstance(c, Timer) for c in callbacks):
        rank_zero_info("Ignoring `Trainer(max_time=...)`: the callbacks already contain a Timer.")
        return callbacks
    return [*callbacks, Timer(duration=max_time, interval="step")]


def _add_default_checkpoint(callbacks: list[Callback]) -> list[Callback]:
    # as in Lightning, any Checkpoint callback (even OnExceptionCheckpoint alone) replaces the default one
    if not any(isinstance(c, Checkpoint) for c in callbacks):
        callbacks.append(ModelCheckpoint())
    return _monitoring_last(callbacks)


def _print_results(stage: str, results: list[dict[str, float]]) -> None:
    """The results table Lightning prints after validate()/test(): one row per metric, one column per dataloader."""
    names = sorted({re.sub(r"/dataloader_idx_\d+$", "", k) for d in results for k in d})
    if not names:
        return
    header = [f"{stage.capitalize()} metric"] + [f"DataLoader {i}" for i in range(len(results))]
    rows = [header]
    for name in names:
        cells = [name]
        for i, d in enumerate(results):
            value = d.get(f"{name}/dataloader_idx_{i}", d.get(name))
            cells.append("" if value is None else str(value))
        rows.append(cells)
    widths = [max(len(row[c]) for row in rows) + 6 for c in range(len(header))]
    rule = "\u2500" * sum(widths)
    print(rule)
    for i, row in enumerate(rows):
        print("".join(cell.center(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print(rule)
    print(rule)

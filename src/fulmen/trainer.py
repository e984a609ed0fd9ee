"""Trainer: the engineering side of a run (devices, precision, loops, logging, callbacks), set by flags.

`fit`, `validate`, `test` and `predict` all go through `_run`, which sets the run up in Lightning's
order (callbacks, prepare_data, setup, configure_model, device, optimizers) and hands over to a loop
in loops/ (fit.py, evaluation.py, prediction.py).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from fulmen import checkpoint, data
from fulmen.accelerators import parse_devices, select_accelerator
from fulmen.callbacks.callback import Callback
from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.callbacks.defaults import trainer_callbacks, with_module_callbacks
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.progress import ProgressBar
from fulmen.checkpoint import check_ckpt_path
from fulmen.combined_loader import CombinedLoader
from fulmen.compiled import from_compiled
from fulmen.datamodule import LightningDataModule
from fulmen.flags import (
    check_barebones,
    check_gradient_clipping,
    flag_or_default,
    map_legacy_flags,
    run_length_flags,
)
from fulmen.hooks import HookDispatcher
from fulmen.loggers.lifecycle import LoggerFinalizeError, finalize_loggers, log_hyperparams, run_loggers
from fulmen.loops import EvaluationLoop, FitLoop, PredictionLoop
from fulmen.module import LightningModule
from fulmen.optim import LightningOptimizer, check_optimization_flags
from fulmen.plan import RunPlan, make_plan
from fulmen.precision import Precision, resolve_precision
from fulmen.preemption import sigterm_received
from fulmen.profilers import Profiler, _profiled_run, resolve_profiler
from fulmen.progress import Progress
from fulmen.results import RunResults, print_results
from fulmen.seed import (
    seed_everything,  # noqa: F401  # `lightning.pytorch.trainer.seed_everything`
    set_determinism,
)
from fulmen.states import RunningStage, TrainerFn, TrainerState, TrainerStatus, stage_flag
from fulmen.strategies import PRECISION_TWICE, Strategy, select_strategy, sort_plugins
from fulmen.utilities import (
    MisconfigurationException,
    overriding,
    rank_zero_info,
    rank_zero_warn,
    set_global_rank,
)


class Trainer:
    """Runs a LightningModule: `fit`, `validate`, `test`, `predict`, configured by Lightning 2.x's flags."""

    # set in __init__ from `flags.run_length_flags`: how long to train and how much of each epoch
    fast_dev_run: int
    max_epochs: int
    max_steps: int
    min_epochs: int | None
    min_steps: int | None
    max_time: datetime.timedelta | None
    limit_train_batches: int | float
    limit_val_batches: int | float
    limit_test_batches: int | float
    limit_predict_batches: int | float
    overfit_batches: int | float
    val_check_interval: int | float
    check_val_every_n_epoch: int | None
    num_sanity_val_steps: int
    log_every_n_steps: int
    reload_dataloaders_every_n_epochs: int
    accumulate_grad_batches: int

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
        # the flags that size the run (each checked, fast_dev_run applied): see `run_length_flags`
        vars(self).update(run_length_flags(f))

        # --- optimization
        check_gradient_clipping(f["gradient_clip_val"], f["gradient_clip_algorithm"])
        self.gradient_clip_val = f["gradient_clip_val"]
        self.gradient_clip_algorithm = f["gradient_clip_algorithm"]  # None: "norm" is applied, as Lightning
        self.inference_mode = bool(f["inference_mode"])
        self.detect_anomaly = bool(f["detect_anomaly"])
        self.use_distributed_sampler = bool(f["use_distributed_sampler"])
        self.sync_batchnorm = bool(f["sync_batchnorm"])
        set_determinism(f["deterministic"], f["benchmark"])

        # --- hardware
        plugins = sort_plugins(f["plugins"])
        precision_flag = f["precision"]
        if "precision" in plugins:
            if precision_flag is not None:
                raise MisconfigurationException(PRECISION_TWICE)
            precision_flag = plugins["precision"]
        self.accelerator = select_accelerator(f["accelerator"])
        self._parsed_devices = parse_devices(f["devices"], self.accelerator)
        self.num_nodes = int(f["num_nodes"])
        self.precision_plugin: Precision = resolve_precision(
            "32-true" if precision_flag is None else precision_flag, self.accelerator.name
        )
        environment = plugins.get("cluster_environment")
        self.strategy: Strategy = select_strategy(
            f["strategy"],
            self.accelerator,
            self._parsed_devices,
            self.num_nodes,
            self.precision_plugin,
            cluster_environment=environment,
        )
        if self.strategy.cluster_environment is None:  # one device: kept for SLURM's auto-requeue
            self.strategy.cluster_environment = environment
        self.precision_plugin = self.strategy.precision_plugin
        if "checkpoint_io" in plugins:
            self.strategy.checkpoint_io = plugins["checkpoint_io"]
        layer_sync = plugins.get("layer_sync")
        if layer_sync is not None:  # plugins=[TorchSyncBatchNorm()] is sync_batchnorm=True
            self.sync_batchnorm = True
            self.strategy.layer_sync = layer_sync
        set_global_rank(self.strategy.global_rank)

        # --- profiler
        self.profiler: Profiler = resolve_profiler(f["profiler"])

        # --- what to switch on
        quiet = self.barebones or bool(self.fast_dev_run)
        self.enable_progress_bar = flag_or_default(f["enable_progress_bar"], not self.barebones)
        self.enable_model_summary = flag_or_default(f["enable_model_summary"], not self.barebones)
        self.enable_checkpointing = flag_or_default(f["enable_checkpointing"], not quiet)
        # switched off by the user (fast_dev_run's quiet default keeps a user's checkpoint callback working)
        checkpointing_refused = f["enable_checkpointing"] is False or self.barebones
        if self.barebones:
            check_barebones(f)
        user_callbacks = (
            [f["callbacks"]] if isinstance(f["callbacks"], Callback) else list(f["callbacks"] or [])
        )
        self.callbacks: list[Callback] = trainer_callbacks(
            user_callbacks,
            progress_bar=self.enable_progress_bar,
            model_summary=self.enable_model_summary,
            max_time=self.max_time,
            checkpointing=self.enable_checkpointing,
            checkpointing_refused=checkpointing_refused,
        )
        self.loggers: list[Any] = run_loggers(
            f["logger"],
            self.default_root_dir,
            fast_dev_run=bool(self.fast_dev_run) and not self.barebones,
            quiet=quiet,
        )

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
        """The metrics logged with prog_bar=True, as Python numbers; one dict per run, as `callback_metrics`."""
        return self._results.refreshed_progress_bar_metrics()

    @property
    def logged_metrics(self) -> dict[str, Any]:
        """What was last sent to the loggers."""
        return dict(self._results.logged)

    # The stage flags read and write `state.stage` (fulmen/states.py), as Lightning's do (see states.stage_flag).
    training = stage_flag(RunningStage.TRAINING, "True while training batches run (stage 'train').")
    sanity_checking = stage_flag(
        RunningStage.SANITY_CHECKING, "True during the sanity check that starts fit."
    )
    validating = stage_flag(RunningStage.VALIDATING, "True during validation (in validate() or inside fit).")
    testing = stage_flag(RunningStage.TESTING, "True during test().")
    predicting = stage_flag(RunningStage.PREDICTING, "True during predict().")

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
            print_results(stage, results)
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
                self.callbacks = with_module_callbacks(self.callbacks, module.configure_callbacks())
                self._hooks = HookDispatcher(self, module, self.callbacks)
                self._prepare_data()
                self._call_setup(fn)
                self._hooks.resolve()  # a hook attached in setup (even configure_model) runs
                self._hooks.module("configure_model")
                self.strategy.setup(self)
                self._plan = make_plan(self, self._hooks, optimizers_ready=False)
                ckpt = checkpoint.load_for_run(self, ckpt_path, fn, weights_only=self._ckpt_weights_only)
                if fn == "fit":
                    _require_step(module, "training_step", fn)
                    self.strategy.setup_optimizers(self)
                    check_optimization_flags(
                        module, len(self.optimizers), self.gradient_clip_val, self.accumulate_grad_batches
                    )
                    self._results.current = self._results.train
                    # on_fit_start runs before the optimizer/loop state is restored, as in Lightning: a
                    # callback such as BaseFinetuning re-adds the param groups the saved state expects
                    self._hooks.both("on_fit_start")
                    # each stage starts without gradients left from before, as in Lightning; before the
                    # restore, which puts back the gradients of an accumulation window the checkpoint fell in
                    module.zero_grad()
                    if ckpt is not None:
                        checkpoint.restore_training_state(self, ckpt)
                    self._log_hyperparams()
                    self._plan = make_plan(self, self._hooks, optimizers_ready=True)
                    self.fit_loop.run(self._plan)
                    # background checkpoint writes are on disk, on every rank, before on_fit_end runs
                    checkpoint.finish_writes()
                    self.strategy.barrier("checkpoint_writes")
                    self._hooks.both("on_fit_end")
                    result = None
                elif fn in ("validate", "test"):
                    _require_step(module, "validation_step" if fn == "validate" else "test_step", fn)
                    loop = self.validate_loop if fn == "validate" else self.test_loop
                    self._results.current = self._results.for_stage(fn)
                    self._log_hyperparams()
                    module.zero_grad()
                    loop.setup_data(reload=True)
                    result = loop.run(self._plan)
                else:
                    module.zero_grad()
                    result = self.predict_loop.run(self._plan, *extra)
                self._call_teardown(fn)
                finalize_loggers(self.loggers, "success")
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
            finalize_loggers(self.loggers, "failed")

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

    def _log_hyperparams(self) -> None:
        if self.enable_autolog_hparams:
            log_hyperparams(self.loggers, self.lightning_module, self.datamodule)

    # ------------------------------------------------------------------ checkpoints (see checkpoint/)
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
    if overriding(step, module, LightningModule) is None:
        raise MisconfigurationException(
            f"trainer.{fn}() needs `{type(module).__name__}.{step}(self, batch, batch_idx)`; it is not defined (or is set to None)."
        )


def _as_given(loader: Any) -> Any:
    """Loaders as the user gave them (one loader, or the list/dict a CombinedLoader holds); None if none."""
    if isinstance(loader, CombinedLoader):
        return loader.iterables if loader.flattened else None
    return loader


def _count(batches: float) -> int | float:
    """A batch count as Lightning reports it: an int, or inf for a loader without a length."""
    return batches if math.isinf(batches) else int(batches)

"""Every public Lightning 2.6 module path imports under the rule (lightning.pytorch.X.Y -> fulmen.X.Y).

PATH_NAMES is the list of served paths and the user-facing names each must give; it was taken from
Lightning 2.6's own modules (internals such as loops.*, trainer.connectors.* and private helpers left
out, see docs/migrating.md).
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import fulmen
from fulmen.import_paths import SERVED_PATHS, resolve

PATH_NAMES: dict[str, tuple[str, ...]] = {
    "fulmen": ("Callback", "Fabric", "LightningDataModule", "LightningModule", "Trainer", "seed_everything"),
    "fulmen.accelerators": (
        "Accelerator",
        "CPUAccelerator",
        "CUDAAccelerator",
        "MPSAccelerator",
        "XLAAccelerator",
        "find_usable_cuda_devices",
    ),
    "fulmen.accelerators.accelerator": ("Accelerator",),
    "fulmen.accelerators.cpu": ("CPUAccelerator",),
    "fulmen.accelerators.cuda": ("CUDAAccelerator",),
    "fulmen.accelerators.mps": ("MPSAccelerator",),
    "fulmen.accelerators.xla": ("XLAAccelerator",),
    "fulmen.callbacks": (
        "BackboneFinetuning",
        "BaseFinetuning",
        "BasePredictionWriter",
        "BatchSizeFinder",
        "Callback",
        "Checkpoint",
        "DeviceStatsMonitor",
        "EMAWeightAveraging",
        "EarlyStopping",
        "GradientAccumulationScheduler",
        "LambdaCallback",
        "LearningRateFinder",
        "LearningRateMonitor",
        "ModelCheckpoint",
        "ModelPruning",
        "ModelSummary",
        "OnExceptionCheckpoint",
        "ProgressBar",
        "RichModelSummary",
        "RichProgressBar",
        "SpikeDetection",
        "StochasticWeightAveraging",
        "TQDMProgressBar",
        "ThroughputMonitor",
        "Timer",
        "WeightAveraging",
    ),
    "fulmen.callbacks.batch_size_finder": ("BatchSizeFinder",),
    "fulmen.callbacks.callback": ("Callback",),
    "fulmen.callbacks.checkpoint": ("Checkpoint",),
    "fulmen.callbacks.device_stats_monitor": ("DeviceStatsMonitor",),
    "fulmen.callbacks.early_stopping": ("EarlyStopping",),
    "fulmen.callbacks.finetuning": ("BackboneFinetuning", "BaseFinetuning"),
    "fulmen.callbacks.gradient_accumulation_scheduler": ("GradientAccumulationScheduler",),
    "fulmen.callbacks.lambda_function": ("LambdaCallback",),
    "fulmen.callbacks.lr_finder": ("LearningRateFinder",),
    "fulmen.callbacks.lr_monitor": ("LearningRateMonitor",),
    "fulmen.callbacks.model_checkpoint": ("ModelCheckpoint",),
    "fulmen.callbacks.model_summary": ("ModelSummary",),
    "fulmen.callbacks.on_exception_checkpoint": ("OnExceptionCheckpoint",),
    "fulmen.callbacks.prediction_writer": ("BasePredictionWriter",),
    "fulmen.callbacks.progress": ("ProgressBar", "RichProgressBar", "TQDMProgressBar"),
    "fulmen.callbacks.progress.progress_bar": ("ProgressBar",),
    "fulmen.callbacks.progress.rich_progress": ("RichProgressBar", "RichProgressBarTheme"),
    "fulmen.callbacks.progress.tqdm_progress": ("TQDMProgressBar",),
    "fulmen.callbacks.pruning": ("ModelPruning",),
    "fulmen.callbacks.rich_model_summary": ("RichModelSummary",),
    "fulmen.callbacks.spike": ("SpikeDetection",),
    "fulmen.callbacks.stochastic_weight_avg": ("StochasticWeightAveraging",),
    "fulmen.callbacks.throughput_monitor": ("ThroughputMonitor",),
    "fulmen.callbacks.timer": ("Timer",),
    "fulmen.callbacks.weight_averaging": ("EMAWeightAveraging", "WeightAveraging"),
    "fulmen.cli": (
        "ArgsType",
        "LRSchedulerCallable",
        "LRSchedulerType",
        "LRSchedulerTypeTuple",
        "LRSchedulerTypeUnion",
        "LightningArgumentParser",
        "LightningCLI",
        "OptimizerCallable",
        "ReduceLROnPlateau",
        "SaveConfigCallback",
        "cli_lightning_logo",
        "instantiate_class",
    ),
    "fulmen.core": ("LightningDataModule", "LightningModule"),
    "fulmen.core.datamodule": ("LightningDataModule",),
    "fulmen.core.hooks": ("DataHooks",),
    "fulmen.core.mixins": ("HyperparametersMixin",),
    "fulmen.core.mixins.hparams_mixin": ("HyperparametersMixin",),
    "fulmen.core.module": ("LightningModule",),
    "fulmen.core.optimizer": ("LightningOptimizer",),
    "fulmen.core.saving": ("load_hparams_from_yaml", "save_hparams_to_yaml"),
    "fulmen.demos": (
        "BoringDataModule",
        "BoringModel",
        "DemoModel",
        "LightningLSTM",
        "LightningTransformer",
        "SequenceSampler",
        "SimpleLSTM",
        "Transformer",
        "WikiText2",
    ),
    "fulmen.demos.boring_classes": (
        "BoringDataModule",
        "BoringModel",
        "DemoModel",
        "ManualOptimBoringModel",
        "RandomDataset",
        "RandomDictDataset",
        "RandomIterableDataset",
        "RandomIterableDatasetWithLen",
    ),
    "fulmen.demos.lstm": ("LightningLSTM", "SequenceSampler", "SimpleLSTM"),
    "fulmen.demos.transformer": (
        "Dictionary",
        "LightningTransformer",
        "PositionalEncoding",
        "Transformer",
        "WikiText2",
        "tokenize",
    ),
    "fulmen.loggers": (
        "CSVLogger",
        "CometLogger",
        "LitLogger",
        "Logger",
        "MLFlowLogger",
        "TensorBoardLogger",
        "WandbLogger",
    ),
    "fulmen.loggers.comet": ("CometLogger",),
    "fulmen.loggers.csv_logs": ("CSVLogger",),
    "fulmen.loggers.litlogger": ("LitLogger",),
    "fulmen.loggers.logger": ("DummyLogger", "Logger"),
    "fulmen.loggers.mlflow": ("MLFlowLogger",),
    "fulmen.loggers.tensorboard": ("TensorBoardLogger",),
    "fulmen.loggers.wandb": ("WandbLogger",),
    "fulmen.plugins": (
        "AsyncCheckpointIO",
        "BitsandbytesPrecision",
        "CheckpointIO",
        "DeepSpeedPrecision",
        "DoublePrecision",
        "FSDPPrecision",
        "HalfPrecision",
        "LayerSync",
        "MixedPrecision",
        "Precision",
        "TorchCheckpointIO",
        "TorchSyncBatchNorm",
        "TransformerEnginePrecision",
        "XLACheckpointIO",
        "XLAPrecision",
    ),
    "fulmen.plugins.environments": (
        "ClusterEnvironment",
        "KubeflowEnvironment",
        "LSFEnvironment",
        "LightningEnvironment",
        "MPIEnvironment",
        "SLURMEnvironment",
        "TorchElasticEnvironment",
        "XLAEnvironment",
    ),
    "fulmen.plugins.io": ("AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO", "XLACheckpointIO"),
    "fulmen.plugins.io.async_plugin": ("AsyncCheckpointIO",),
    "fulmen.plugins.io.checkpoint_plugin": ("CheckpointIO",),
    "fulmen.plugins.io.torch_plugin": ("TorchCheckpointIO",),
    "fulmen.plugins.io.wrapper": ("CheckpointIO",),
    "fulmen.plugins.io.xla_plugin": ("XLACheckpointIO",),
    "fulmen.plugins.layer_sync": ("LayerSync", "TorchSyncBatchNorm"),
    "fulmen.plugins.precision": (
        "BitsandbytesPrecision",
        "DeepSpeedPrecision",
        "DoublePrecision",
        "FSDPPrecision",
        "HalfPrecision",
        "MixedPrecision",
        "Precision",
        "TransformerEnginePrecision",
        "XLAPrecision",
    ),
    "fulmen.plugins.precision.amp": ("MixedPrecision",),
    "fulmen.plugins.precision.bitsandbytes": ("BitsandbytesPrecision",),
    "fulmen.plugins.precision.deepspeed": ("DeepSpeedPrecision",),
    "fulmen.plugins.precision.double": ("DoublePrecision",),
    "fulmen.plugins.precision.fsdp": ("FSDPPrecision",),
    "fulmen.plugins.precision.half": ("HalfPrecision",),
    "fulmen.plugins.precision.precision": ("Precision",),
    "fulmen.plugins.precision.transformer_engine": ("TransformerEnginePrecision",),
    "fulmen.plugins.precision.xla": ("XLAPrecision",),
    "fulmen.profilers": (
        "AdvancedProfiler",
        "PassThroughProfiler",
        "Profiler",
        "PyTorchProfiler",
        "SimpleProfiler",
        "XLAProfiler",
    ),
    "fulmen.profilers.advanced": ("AdvancedProfiler",),
    "fulmen.profilers.base": ("PassThroughProfiler",),
    "fulmen.profilers.profiler": ("Profiler",),
    "fulmen.profilers.pytorch": ("PyTorchProfiler",),
    "fulmen.profilers.simple": ("SimpleProfiler",),
    "fulmen.profilers.xla": ("XLAProfiler",),
    "fulmen.pytorch": ("Callback", "LightningDataModule", "LightningModule", "Trainer", "seed_everything"),
    "fulmen.strategies": (
        "DDPStrategy",
        "DeepSpeedStrategy",
        "FSDPStrategy",
        "ModelParallelStrategy",
        "ParallelStrategy",
        "SingleDeviceStrategy",
        "Strategy",
    ),
    "fulmen.strategies.ddp": ("DDPStrategy",),
    "fulmen.strategies.deepspeed": ("DeepSpeedStrategy",),
    "fulmen.strategies.fsdp": ("FSDPStrategy",),
    "fulmen.strategies.model_parallel": ("ModelParallelStrategy",),
    "fulmen.strategies.parallel": ("ParallelStrategy",),
    "fulmen.strategies.single_device": ("SingleDeviceStrategy",),
    "fulmen.strategies.single_xla": ("SingleDeviceXLAStrategy",),
    "fulmen.strategies.strategy": ("Strategy",),
    "fulmen.strategies.xla": ("XLAStrategy",),
    "fulmen.trainer": ("Trainer", "seed_everything"),
    "fulmen.trainer.states": ("RunningStage", "TrainerFn", "TrainerState", "TrainerStatus"),
    "fulmen.trainer.trainer": ("Trainer",),
    "fulmen.tuner": ("Tuner",),
    "fulmen.tuner.batch_size_scaling": (),
    "fulmen.tuner.lr_finder": (),
    "fulmen.tuner.tuning": ("Tuner",),
    "fulmen.utilities": (
        "AttributeDict",
        "CombinedLoader",
        "GradClipAlgorithmType",
        "LightningEnum",
        "disable_possible_user_warnings",
        "find_shared_parameters",
        "grad_norm",
        "is_picklable",
        "is_shared_filesystem",
        "measure_flops",
        "move_data_to_device",
        "rank_zero_deprecation",
        "rank_zero_info",
        "rank_zero_only",
        "rank_zero_warn",
        "set_shared_parameters",
        "suggested_max_num_workers",
    ),
    "fulmen.utilities.combined_loader": ("CombinedLoader",),
    "fulmen.utilities.compile": ("from_compiled", "to_uncompiled"),
    "fulmen.utilities.data": ("extract_batch_size", "is_shared_filesystem", "suggested_max_num_workers"),
    "fulmen.utilities.enums": ("GradClipAlgorithmType", "LightningEnum"),
    "fulmen.utilities.exceptions": ("MisconfigurationException", "SIGTERMException"),
    "fulmen.utilities.grads": ("grad_norm",),
    "fulmen.utilities.memory": (
        "garbage_collection_cuda",
        "is_cuda_out_of_memory",
        "is_cudnn_snafu",
        "is_oom_error",
        "is_out_of_cpu_memory",
        "recursive_detach",
    ),
    "fulmen.utilities.migration": ("migrate_checkpoint", "pl_legacy_patch"),
    "fulmen.utilities.migration.migration": (),
    "fulmen.utilities.migration.utils": ("migrate_checkpoint", "pl_legacy_patch"),
    "fulmen.utilities.model_helpers": (
        "find_shared_parameters",
        "get_torchvision_model",
        "grad_norm",
        "is_overridden",
        "is_picklable",
        "measure_flops",
        "set_shared_parameters",
    ),
    "fulmen.utilities.model_summary": (
        "LayerSummary",
        "ModelSummary",
        "get_formatted_model_size",
        "get_human_readable_count",
        "summarize",
    ),
    "fulmen.utilities.model_summary.model_summary": (
        "LayerSummary",
        "ModelSummary",
        "get_formatted_model_size",
        "get_human_readable_count",
        "summarize",
    ),
    "fulmen.utilities.parameter_tying": ("find_shared_parameters", "set_shared_parameters"),
    "fulmen.utilities.parsing": (
        "AttributeDict",
        "is_picklable",
        "lightning_getattr",
        "lightning_hasattr",
        "lightning_setattr",
    ),
    "fulmen.utilities.rank_zero": (
        "LightningDeprecationWarning",
        "WarningCache",
        "rank_prefixed_message",
        "rank_zero_debug",
        "rank_zero_deprecation",
        "rank_zero_info",
        "rank_zero_only",
        "rank_zero_warn",
    ),
    "fulmen.utilities.seed": ("isolate_rng",),
    "fulmen.utilities.types": (
        "DistributedDataParallel",
        "EVAL_DATALOADERS",
        "LRSchedulerConfig",
        "LRSchedulerConfigType",
        "LRSchedulerPLType",
        "LRSchedulerType",
        "LRSchedulerTypeTuple",
        "LRSchedulerTypeUnion",
        "OptimizerConfig",
        "OptimizerLRScheduler",
        "OptimizerLRSchedulerConfig",
        "STEP_OUTPUT",
        "TRAIN_DATALOADERS",
    ),
    "fulmen.utilities.warnings": ("PossibleUserWarning",),
}


def _pairs() -> list[tuple[str, str]]:
    return [(path, name) for path, names in PATH_NAMES.items() for name in names]


@pytest.mark.parametrize(("path", "name"), [pytest.param(p, n, id=f"{p}:{n}") for p, n in _pairs()])
def test_every_served_path_gives_its_names(path: str, name: str) -> None:
    module = importlib.import_module(path)
    assert getattr(module, name) is not None


@pytest.mark.parametrize("path", list(PATH_NAMES))
def test_every_served_path_imports(path: str) -> None:
    assert importlib.import_module(path) is not None


def test_every_row_of_the_table_is_a_listed_path() -> None:
    # the table (fulmen.import_paths) and the list of served paths above stay one list
    unlisted = [path for path in SERVED_PATHS if path not in PATH_NAMES and path != "fulmen.core"]
    assert unlisted == []


@pytest.mark.parametrize("path", [p for p in PATH_NAMES if p != "fulmen"])
def test_the_pytorch_prefix_is_the_same_module(path: str) -> None:
    # lightning.pytorch.X and lightning.X both map to fulmen.X
    rest = path[len("fulmen") :]
    assert importlib.import_module("fulmen.pytorch" + rest) is importlib.import_module(path)


def test_an_alias_is_the_real_module_not_a_copy() -> None:
    from fulmen.trainer.trainer import Trainer

    from fulmen.utilities.parsing import AttributeDict

    assert Trainer is fulmen.Trainer
    assert AttributeDict is fulmen.utilities.AttributeDict
    assert importlib.import_module("fulmen.core.module") is importlib.import_module("fulmen.module")


def test_the_aliased_module_keeps_its_own_name_and_spec() -> None:
    import fulmen.core.saving as saving

    assert saving.__name__ == "fulmen.hparams_file"
    assert saving.__spec__.name == "fulmen.hparams_file"
    importlib.reload(saving)


def test_lightning_packages_are_attributes() -> None:
    # `import lightning.pytorch as pl; pl.core.LightningModule`, `pl.plugins.Precision`, `L.pytorch.Trainer`
    assert fulmen.pytorch is fulmen
    assert fulmen.core.LightningModule is fulmen.LightningModule
    assert fulmen.plugins.Precision is importlib.import_module("fulmen.precision").Precision
    assert fulmen.tuner.Tuner is importlib.import_module("fulmen.tuner").Tuner


def test_resolve_rewrites_the_longest_served_prefix() -> None:
    assert resolve("fulmen.pytorch.utilities.grads") == "fulmen.utilities.model_helpers"
    assert resolve("lightning.pytorch.core.saving", {"lightning": "fulmen"}) == "fulmen.hparams_file"
    assert resolve("fulmen.trainer") is None  # a real module is not served


def test_an_unknown_path_still_fails_to_import() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("fulmen.pytorch.no_such_module")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("fulmen.utilities.no_such_module")


def test_import_fulmen_stays_lazy() -> None:
    # the aliases and the heavy optional parts load only when asked for: `import fulmen` stays fast
    code = (
        "import sys, fulmen; heavy = ['fulmen.cli', 'fulmen.demos', 'fulmen.compat', 'fulmen.plugins', "
        "'fulmen.utilities.model_helpers', 'yaml', 'jsonargparse', 'fulmen.core', 'fulmen.plot', "
        "'fulmen.callbacks.pruning', 'fulmen.callbacks.rich_progress', 'fulmen.loggers.comet', 'fulmen.tuner', "
        "'fulmen.pytorch']; print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_lightning_logo_is_a_top_level_name_as_in_lightning():
    """Lightning's examples import it from `lightning.pytorch` itself."""
    import fulmen
    from fulmen.cli import cli_lightning_logo

    assert fulmen.cli_lightning_logo is cli_lightning_logo
    assert fulmen.pytorch.cli_lightning_logo is cli_lightning_logo

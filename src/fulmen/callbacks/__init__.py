"""Callbacks: code that runs at the Trainer's hooks (import path mirrors lightning.pytorch.callbacks).

The callbacks every Trainer builds are imported here; the others load on first use, so that
`import fulmen` stays fast.
"""

from fulmen.callbacks.backup_and_restore import BackupAndRestore
from fulmen.callbacks.callback import Callback
from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.lr_monitor import LearningRateMonitor
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar
from fulmen.callbacks.timer import Timer
from fulmen.utilities.lazy import lazy_names

# callback name -> the module that defines it, imported when the name is first asked for
_LAZY: dict[str, str] = {
    "BackboneFinetuning": "fulmen.callbacks.finetuning",
    "BaseFinetuning": "fulmen.callbacks.finetuning",
    "BasePredictionWriter": "fulmen.callbacks.prediction_writer",
    "BatchSizeFinder": "fulmen.callbacks.batch_size_finder",
    "DeviceStatsMonitor": "fulmen.callbacks.device_stats",
    "EMAWeightAveraging": "fulmen.callbacks.weight_averaging",
    "GradientAccumulationScheduler": "fulmen.callbacks.gradient_accumulation",
    "LambdaCallback": "fulmen.callbacks.lambda_function",
    "LearningRateFinder": "fulmen.callbacks.lr_finder",
    "ModelPruning": "fulmen.callbacks.pruning",
    "RichModelSummary": "fulmen.callbacks.rich_progress",
    "RichProgressBar": "fulmen.callbacks.rich_progress",
    "RichProgressBarTheme": "fulmen.callbacks.rich_progress",
    "SpikeDetection": "fulmen.callbacks.spike",
    "StochasticWeightAveraging": "fulmen.callbacks.swa",
    "ThroughputMonitor": "fulmen.callbacks.throughput",
    "WeightAveraging": "fulmen.callbacks.weight_averaging",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "BackboneFinetuning",
    "BackupAndRestore",
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
    "RichProgressBarTheme",
    "SpikeDetection",
    "StochasticWeightAveraging",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "WeightAveraging",
]

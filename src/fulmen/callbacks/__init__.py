"""Callbacks: code that runs at the Trainer's hooks (import path mirrors lightning.pytorch.callbacks)."""

from fulmen.callbacks.backup_and_restore import BackupAndRestore
from fulmen.callbacks.batch_size_finder import BatchSizeFinder
from fulmen.callbacks.callback import Callback
from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.callbacks.device_stats import DeviceStatsMonitor
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from fulmen.callbacks.gradient_accumulation import GradientAccumulationScheduler
from fulmen.callbacks.lambda_function import LambdaCallback
from fulmen.callbacks.lr_finder import LearningRateFinder
from fulmen.callbacks.lr_monitor import LearningRateMonitor
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fulmen.callbacks.prediction_writer import BasePredictionWriter
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar
from fulmen.callbacks.pruning import ModelPruning
from fulmen.callbacks.rich_progress import RichModelSummary, RichProgressBar, RichProgressBarTheme
from fulmen.callbacks.spike import SpikeDetection
from fulmen.callbacks.swa import StochasticWeightAveraging
from fulmen.callbacks.throughput import ThroughputMonitor
from fulmen.callbacks.timer import Timer
from fulmen.callbacks.weight_averaging import EMAWeightAveraging, WeightAveraging

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

"""Callbacks: code that runs at the Trainer's hooks (import path mirrors lightning.pytorch.callbacks)."""

from fulmen.callbacks.callback import Callback
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.progress import ProgressBar, TQDMProgressBar

__all__ = ["Callback", "ModelSummary", "ProgressBar", "TQDMProgressBar"]

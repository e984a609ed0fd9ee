"""fulmen: PyTorch training without the boilerplate, drop-in for Lightning 2.x code."""

from fulmen import plot  # a callable module: fulmen.plot(log_dir, out=...) draws the curves
from fulmen.callbacks.callback import Callback
from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule
from fulmen.seed import seed_everything
from fulmen.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "LightningDataModule",
    "LightningModule",
    "Trainer",
    "plot",
    "seed_everything",
    "__version__",
]

"""fulmen: PyTorch training without the boilerplate, drop-in for Lightning 2.x code."""

from typing import Any

from fulmen import import_paths

import_paths.install()  # first: Lightning's module paths under fulmen.* import from here on (lazily)

from fulmen.callbacks.callback import Callback  # noqa: E402
from fulmen.datamodule import LightningDataModule  # noqa: E402
from fulmen.module import LightningModule  # noqa: E402
from fulmen.seed import seed_everything  # noqa: E402
from fulmen.trainer import Trainer  # noqa: E402

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

# attributes that are modules imported on first use (`lightning.pytorch`, `pl.core`, `L.Fabric`, ...)
_LAZY = {
    name: f"fulmen.{name}"
    for name in (
        "accelerators",
        "callbacks",
        "core",
        "loggers",
        "loops",
        "plot",  # a callable module: fulmen.plot(log_dir, out=...) draws the curves
        "plugins",
        "profilers",
        "pytorch",
        "strategies",
        "trainer",
        "tuner",
        "utilities",
    )
}
_OUT_OF_SCOPE = ("Fabric",)
# names Lightning exports at its top level from heavier modules, imported on first use
_LAZY_NAMES = {"cli_lightning_logo": "fulmen.cli"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    if name in _OUT_OF_SCOPE:
        return getattr(importlib.import_module("fulmen.out_of_scope"), name)
    raise AttributeError(f"module 'fulmen' has no attribute {name!r}")

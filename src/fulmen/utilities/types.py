"""Type aliases for annotating LightningModule hooks (`-> STEP_OUTPUT`, `-> OptimizerLRScheduler`).

These are the names Lightning users annotate their code with; each means the same as in
`lightning.pytorch.utilities.types`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from typing_extensions import NotRequired, TypedDict

from fulmen.optim import LRSchedulerConfig

__all__ = [
    "EVAL_DATALOADERS",
    "STEP_OUTPUT",
    "TRAIN_DATALOADERS",
    "DistributedDataParallel",
    "LRSchedulerConfig",
    "LRSchedulerConfigType",
    "LRSchedulerPLType",
    "LRSchedulerType",
    "LRSchedulerTypeTuple",
    "LRSchedulerTypeUnion",
    "OptimizerConfig",
    "OptimizerLRScheduler",
    "OptimizerLRSchedulerConfig",
]

# what a training/validation/test step may return: a loss tensor, a dict (with "loss" in training), or None
STEP_OUTPUT = Tensor | Mapping[str, Any] | None

# what the dataloader hooks may return: a DataLoader, or a list/dict/CombinedLoader of them
TRAIN_DATALOADERS = Any
EVAL_DATALOADERS = Any

LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = LRScheduler | ReduceLROnPlateau
LRSchedulerType = type[LRScheduler] | type[ReduceLROnPlateau]
LRSchedulerPLType = LRScheduler | ReduceLROnPlateau


class LRSchedulerConfigType(TypedDict):
    """The dict form of a scheduler's configuration in `configure_optimizers`."""

    scheduler: LRSchedulerTypeUnion
    name: NotRequired[str | None]
    interval: NotRequired[str]
    frequency: NotRequired[int]
    reduce_on_plateau: NotRequired[bool]
    monitor: NotRequired[str | None]
    strict: NotRequired[bool]


class OptimizerConfig(TypedDict):
    """`{"optimizer": ...}`, returned from `configure_optimizers`."""

    optimizer: Optimizer


class OptimizerLRSchedulerConfig(TypedDict):
    """`{"optimizer": ..., "lr_scheduler": ...}`, returned from `configure_optimizers`."""

    optimizer: Optimizer
    lr_scheduler: NotRequired[LRSchedulerTypeUnion | LRSchedulerConfigType]
    monitor: NotRequired[str]


# every form `configure_optimizers` may return
OptimizerLRScheduler = (
    Optimizer
    | Sequence[Optimizer]
    | tuple[Sequence[Optimizer], Sequence[LRSchedulerTypeUnion | LRSchedulerConfig]]
    | OptimizerConfig
    | OptimizerLRSchedulerConfig
    | Sequence[OptimizerConfig]
    | Sequence[OptimizerLRSchedulerConfig]
    | None
)

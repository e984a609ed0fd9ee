"""BasePredictionWriter: write what `predict_step` returns to disk, per batch and/or at the end."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import SequentialSampler

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule
    from fulmen.trainer import Trainer

_INTERVALS = ("batch", "epoch", "batch_and_epoch")


class BasePredictionWriter(Callback):
    """Subclass it and implement `write_on_batch_end` and/or `write_on_epoch_end`.

    Args:
        write_interval: "batch" (call `write_on_batch_end` after every predict batch), "epoch" (call
            `write_on_epoch_end` once with every prediction) or "batch_and_epoch" (both).

    `batch_indices` are the dataset indices of the samples in a batch, known when the dataloader reads
    its dataset in order (the default for prediction); otherwise None.
    """

    def __init__(self, write_interval: str = "batch") -> None:
        if write_interval not in _INTERVALS:
            raise MisconfigurationException(
                f"BasePredictionWriter(write_interval={write_interval!r}) is not valid; use one of {list(_INTERVALS)}."
            )
        self.write_interval = write_interval
        self._index_iters: list[Iterator[Any] | None] = []
        self._epoch_indices: list[list[Any]] = []

    @property
    def interval_includes_batch(self) -> bool:  # noqa: D102
        return self.write_interval in ("batch", "batch_and_epoch")

    @property
    def interval_includes_epoch(self) -> bool:  # noqa: D102
        return self.write_interval in ("epoch", "batch_and_epoch")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Write one batch's prediction (override for write_interval "batch" / "batch_and_epoch")."""
        raise NotImplementedError(
            f"{type(self).__name__} uses write_interval={self.write_interval!r}: implement write_on_batch_end."
        )

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Write every prediction at once (override for write_interval "epoch" / "batch_and_epoch").

        `predictions` has the shape `trainer.predict` returns (a list of batch outputs; a list of such
        lists with several dataloaders); `batch_indices` is a list per dataloader of per-batch indices.
        """
        raise NotImplementedError(
            f"{type(self).__name__} uses write_interval={self.write_interval!r}: implement write_on_epoch_end."
        )

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prepare to follow the samplers of the predict dataloaders."""
        loaders = trainer.predict_loop.dataloaders
        self._index_iters = [_index_iterator(dl) for dl in loaders]
        self._epoch_indices = [[] for _ in loaders]

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Write the batch (if the interval says so)."""
        indices = None
        if dataloader_idx < len(self._index_iters):
            it = self._index_iters[dataloader_idx]
            indices = next(it, None) if it is not None else None
            self._epoch_indices[dataloader_idx].append(indices)
        if self.interval_includes_batch:
            self.write_on_batch_end(trainer, pl_module, outputs, indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write every prediction (if the interval says so)."""
        if not self.interval_includes_epoch:
            return
        per_loader = trainer.predict_loop.predictions
        predictions: Any = per_loader[0] if len(per_loader) == 1 else per_loader
        self.write_on_epoch_end(trainer, pl_module, predictions, self._epoch_indices)


def _index_iterator(loader: Any) -> Iterator[Any] | None:
    """Iterate the batch sampler a second time to learn each batch's indices (only when it is in order)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(batch_sampler, "sampler", None)
    if batch_sampler is None or not isinstance(sampler, SequentialSampler):
        return None
    return (list(indices) for indices in batch_sampler)

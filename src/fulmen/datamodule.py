"""LightningDataModule: the data hooks of a run, packaged apart from the model."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from torch.utils.data import DataLoader, Dataset, IterableDataset

from fulmen.checkpoint.state import load_datamodule_from_checkpoint
from fulmen.hparams_mixin import HyperparametersMixin
from fulmen.module import DataHooks, class_only


class LightningDataModule(HyperparametersMixin, DataHooks):
    """Groups `prepare_data`, `setup`, the dataloaders and `teardown` so that data can be reused."""

    name: str | None = None
    # the keys under which a checkpoint holds the datamodule's hyper-parameters (Lightning's names)
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments are accepted and ignored, as in Lightning (e.g. `from_datasets` passes `batch_size`)."""
        self.trainer: Any = None

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        val_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        test_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        predict_dataset: Dataset[Any] | Iterable[Dataset[Any]] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> LightningDataModule:
        """A datamodule whose dataloader hooks wrap the given datasets in DataLoaders.

        Args:
            train_dataset: shuffled each epoch (unless it is an IterableDataset); a list or dict of
                datasets gives several train loaders.
            val_dataset, test_dataset, predict_dataset: read in order; a list or dict gives several loaders.
            batch_size, num_workers: for every DataLoader (and passed to `cls` if its `__init__` takes them).
            **datamodule_kwargs: passed to `cls(...)`.

        Only the hooks of the datasets given are defined; asking for another stage's data fails as usual.
        """
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        special = {"batch_size": batch_size, "num_workers": num_workers}
        kwargs = {k: v for k, v in special.items() if takes_any or k in params}
        datamodule = cls(**datamodule_kwargs, **kwargs)

        def loaders(datasets: Any, shuffle: bool) -> Any:
            def one(dataset: Any) -> DataLoader[Any]:
                keep_order = not shuffle or isinstance(dataset, IterableDataset)
                return DataLoader(
                    dataset, batch_size=batch_size, shuffle=not keep_order, num_workers=num_workers
                )

            if isinstance(datasets, Mapping):
                return {key: one(ds) for key, ds in datasets.items()}
            if isinstance(datasets, (list, tuple)):
                return [one(ds) for ds in datasets]
            return one(datasets)

        hooks = (
            ("train_dataloader", train_dataset, True),
            ("val_dataloader", val_dataset, False),
            ("test_dataloader", test_dataset, False),
            ("predict_dataloader", predict_dataset, False),
        )
        for hook, datasets, shuffle in hooks:
            if datasets is not None:
                setattr(datamodule, hook, functools.partial(loaders, datasets, shuffle))
        return datamodule

    def state_dict(self) -> dict[str, Any]:
        """Extra state saved into checkpoints."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    @class_only
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """A new datamodule built from the hyper-parameters stored in a checkpoint (and `kwargs`)."""

        return load_datamodule_from_checkpoint(
            cls, checkpoint_path, map_location, hparams_file, weights_only, **kwargs
        )

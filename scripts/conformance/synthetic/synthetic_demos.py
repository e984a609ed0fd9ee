"""Stand-ins for `lightning.pytorch.demos` data and models that download data (MNIST, WikiText2).

Same constructors and item shapes as Lightning's demos; the data is synthetic (nothing can be downloaded
here), and the Transformer is a small model of the same call signature written for this harness.
lightning_alias serves this module for `lightning.pytorch.demos.mnist_datamodule` and
`lightning.pytorch.demos.transformer` (and their names on `lightning.pytorch.demos`) when asked to.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, random_split

import fulmen


def MNIST(root: str = "", train: bool = True, normalize: tuple = (0.1307, 0.3081), **kwargs: Any) -> Dataset:  # noqa: N802
    """Lightning's demo `MNIST(...)`: torchvision's (here the synthetic one) with its arguments."""
    from torchvision import transforms
    from torchvision.datasets import MNIST as _MNIST

    transform = kwargs.pop("transform", None) or transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((normalize[0],), (normalize[1],))]
    )
    kwargs.pop("download", None)
    return _MNIST(root, train=train, transform=transform, **kwargs)


class MNISTDataModule(fulmen.LightningDataModule):
    """Lightning's demo MNISTDataModule's constructor and loaders, on the synthetic MNIST."""

    name = "mnist"

    def __init__(
        self,
        data_dir: str = "",
        val_split: int = 200,
        num_workers: int = 0,
        normalize: bool = False,
        seed: int = 42,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self.val_split, self.seed, self.batch_size, self.normalize = val_split, seed, batch_size, normalize

    @property
    def num_classes(self) -> int:
        return 10

    def _split(self) -> tuple[Any, Any]:
        full = MNIST(train=True, length=2_000)
        return random_split(
            full,
            [len(full) - self.val_split, self.val_split],
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._split()[0], batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._split()[1], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(MNIST(train=False, length=500), batch_size=self.batch_size)


class WikiText2(Dataset):
    """(inputs, target) token blocks of a synthetic corpus with a learnable next-token rule."""

    def __init__(self, data_dir: Any = None, block_size: int = 35, download: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        starts = torch.randint(0, 97, (5_000,), generator=g)  # the example splits off 2 x 2000 blocks
        self.data = torch.cat([(s + torch.arange(block_size)) % 97 for s in starts])
        self.block_size = block_size

    @property
    def vocab_size(self) -> int:
        return 97

    def __len__(self) -> int:
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        return self.data[start : start + self.block_size], self.data[start + 1 : start + self.block_size + 1]


class Transformer(nn.Module):
    """A small encoder-decoder language model; forward(inputs, target) gives (N*T, vocab) log-probabilities."""

    def __init__(
        self,
        vocab_size: int = 33278,
        ninp: int = 32,
        nhead: int = 2,
        nhid: int = 64,
        nlayers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.transformer = nn.Transformer(ninp, nhead, nlayers, nlayers, nhid, dropout, batch_first=True)
        self.decoder = nn.Linear(ninp, vocab_size)
        self.ninp, self.vocab_size = ninp, vocab_size

    def forward(self, inputs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        t = inputs.shape[1]
        if mask is None:
            mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        src = self.embedding(inputs) * math.sqrt(self.ninp)
        tgt = self.embedding(target) * math.sqrt(self.ninp)
        out = self.decoder(self.transformer(src, tgt, tgt_mask=mask))
        return torch.log_softmax(out, dim=-1).view(-1, self.vocab_size)

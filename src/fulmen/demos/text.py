"""Word-level language models for demos: a Transformer and an LSTM on WikiText-2, read from a local file.

fulmen never downloads: `WikiText2` reads ``<data_dir>/wikitext-2.txt`` and, when it is missing, says
where to get it. The models also train on any tensor of token ids (see the tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from fulmen.module import LightningModule

WIKITEXT2_URL = (
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/train.txt"
)


class Dictionary:
    """Word <-> index, growing as words are added."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        """The index of `word`, adding it first if new."""
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


def tokenize(path: Path) -> tuple[Tensor, Dictionary]:
    """The words of the text file at `path` (each line ended by "<eos>") as ids, and their dictionary."""
    dictionary = Dictionary()
    ids: list[int] = []
    with open(path, encoding="utf8") as f:
        for line in f:
            ids.extend(dictionary.add_word(word) for word in [*line.split(), "<eos>"])
    return torch.tensor(ids, dtype=torch.long), dictionary


class WikiText2(Dataset[tuple[Tensor, Tensor]]):
    """WikiText-2 as (input, next-word target) blocks of `block_size` token ids, from a local file.

    Args:
        data_dir: the folder that holds ``wikitext-2.txt`` (the training split, one sentence per line).
        block_size: tokens per example.
        download: accepted for Lightning compatibility; fulmen does not download, so a missing file raises
            FileNotFoundError saying where to get it.
    """

    def __init__(self, data_dir: Path = Path("data"), block_size: int = 35, download: bool = True) -> None:
        path = Path(data_dir) / "wikitext-2.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"WikiText2: no file {str(path)!r}. fulmen does not download data; fetch the training split "
                f"yourself, e.g. `curl -o {path} {WIKITEXT2_URL}`, or pass data_dir= where it is."
            )
        self.path = path
        self.block_size = block_size
        self.data, self.dictionary = tokenize(path)

    @property
    def vocab_size(self) -> int:
        """Distinct words in the file (plus "<eos>")."""
        return len(self.dictionary)

    def __len__(self) -> int:
        # each example also needs the token after its block, hence one block less
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        return self.data[start : start + self.block_size], self.data[start + 1 : start + self.block_size + 1]


class PositionalEncoding(nn.Module):
    """Adds the sine/cosine position signal of "Attention is all you need" to a (batch, time, dim) input."""

    def __init__(self, dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
        self.table: Tensor
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.dropout(x + self.table[: x.size(1)])


class Transformer(nn.Module):
    """An encoder-decoder `nn.Transformer` over word ids; returns next-word log-probabilities (B*T, vocab)."""

    def __init__(
        self,
        vocab_size: int = 33278,
        ninp: int = 200,
        nhead: int = 2,
        nhid: int = 200,
        nlayers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.ninp = ninp
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.transformer = nn.Transformer(
            d_model=ninp,
            nhead=nhead,
            num_encoder_layers=nlayers,
            num_decoder_layers=nlayers,
            dim_feedforward=nhid,
            dropout=dropout,
            batch_first=True,
        )
        self.decoder = nn.Linear(ninp, vocab_size)

    def generate_square_subsequent_mask(self, size: int) -> Tensor:
        """The causal mask: position i may attend to positions <= i (-inf above the diagonal)."""
        return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)

    def forward(self, inputs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Log-probabilities of the next word at every position, flattened to (batch * time, vocab)."""
        if mask is None:
            mask = self.generate_square_subsequent_mask(target.size(1)).to(inputs.device)
        scale = math.sqrt(self.ninp)
        src = self.pos_encoder(self.embedding(inputs) * scale)
        tgt = self.pos_encoder(self.embedding(target) * scale)
        out = self.decoder(self.transformer(src, tgt, tgt_mask=mask))
        return F.log_softmax(out, dim=-1).view(-1, self.vocab_size)


class LightningTransformer(LightningModule):
    """`Transformer` trained on WikiText2 with SGD (lr 0.1)."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size)

    def forward(self, inputs: Tensor, target: Tensor) -> Tensor:  # noqa: D102
        return self.model(inputs, target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:  # noqa: D102
        inputs, target = batch
        loss = F.nll_loss(self(inputs, target), target.view(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def prepare_data(self) -> None:  # noqa: D102
        WikiText2()

    def train_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:  # noqa: D102
        return DataLoader(WikiText2(), batch_size=20)


class SimpleLSTM(nn.Module):
    """An embedding, a stacked LSTM and a linear decoder; returns (log-probabilities (B*T, vocab), hidden)."""

    def __init__(
        self,
        vocab_size: int = 33278,
        ninp: int = 512,
        nhid: int = 512,
        nlayers: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.nhid = nhid
        self.nlayers = nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(nhid, vocab_size)
        self.init_weights()

    def init_weights(self) -> None:
        """Small uniform embedding and decoder weights, zero decoder bias."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the LSTM from `hidden` over the (batch, time) ids; return log-probabilities and the new hidden state."""
        output, hidden = self.rnn(self.drop(self.encoder(input)), hidden)
        decoded = self.decoder(self.drop(output))
        return F.log_softmax(decoded, dim=-1).view(-1, self.vocab_size), hidden

    def init_hidden(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero hidden and cell states for `batch_size` sequences, on the model's device."""
        weight = self.decoder.weight
        shape = (self.nlayers, batch_size, self.nhid)
        return weight.new_zeros(shape), weight.new_zeros(shape)


class SequenceSampler(Sampler[list[int]]):
    """Batches in which row r continues row r of the previous batch (for carrying an LSTM's hidden state).

    The dataset is cut into `batch_size` contiguous chunks; batch i holds the i-th example of each chunk.
    """

    def __init__(self, dataset: Sized, batch_size: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.chunk_size = len(dataset) // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.chunk_size):
            yield [i + row * self.chunk_size for row in range(self.batch_size)]

    def __len__(self) -> int:
        return self.chunk_size


class LightningLSTM(LightningModule):
    """`SimpleLSTM` trained on WikiText2 with truncated backpropagation through time (hidden state carried)."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = SimpleLSTM(vocab_size=vocab_size)
        self.hidden: tuple[Tensor, Tensor] | None = None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:  # noqa: D102
        inputs, target = batch
        if self.hidden is None:
            self.hidden = self.model.init_hidden(inputs.size(0))
        # the state carries over from the previous batch, but gradients stop at its boundary
        hidden = (self.hidden[0].detach(), self.hidden[1].detach())
        output, self.hidden = self.model(inputs, hidden)
        loss = F.nll_loss(output, target.view(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:  # noqa: D102
        self.hidden = None

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=20.0)

    def prepare_data(self) -> None:  # noqa: D102
        WikiText2()

    def train_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:  # noqa: D102
        dataset = WikiText2()
        return DataLoader(dataset, batch_sampler=SequenceSampler(dataset, batch_size=20))

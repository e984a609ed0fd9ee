"""seed_everything and deterministic training."""

import random

import numpy as np
import torch
from test_loops import Counting
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset


def test_seed_everything_returns_the_seed_and_seeds_all_generators():
    assert L.seed_everything(123) == 123
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    L.seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(1).item())
    assert first == second


class Noisy(BoringModel):
    """Dropout and a shuffled loader: results depend on every random generator."""

    def __init__(self):
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.layer(self.dropout(x))

    def train_dataloader(self):
        return DataLoader(RandomDataset(32, 16), batch_size=4, shuffle=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def _fit(make_trainer, seed):
    L.seed_everything(seed)
    model = Noisy()
    trainer = make_trainer(max_epochs=2, deterministic=True, limit_val_batches=0)
    try:
        trainer.fit(model)
    finally:
        torch.use_deterministic_algorithms(False)
    return [p.detach().clone() for p in model.parameters()]


def test_two_seeded_deterministic_fits_give_identical_weights(make_trainer):
    first = _fit(make_trainer, 7)
    second = _fit(make_trainer, 7)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_a_different_seed_gives_different_weights(make_trainer):
    first = _fit(make_trainer, 7)
    other = _fit(make_trainer, 8)
    assert not torch.equal(first[0], other[0])


class _NumpyNoise(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        import numpy as np

        return torch.tensor([float(np.random.randint(0, 10**6))])


def _noise_seen(seed: int, make_trainer) -> list[float]:
    from torch.utils.data import DataLoader

    seen: list[float] = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.extend(batch.flatten().tolist())
            return self.layer(torch.ones(1, 32)).sum()

        def train_dataloader(self):
            return DataLoader(_NumpyNoise(), batch_size=2, num_workers=2)

    L.seed_everything(seed, workers=True, verbose=False)
    trainer = make_trainer(limit_val_batches=0)
    trainer.fit(Model())
    return seen


def test_seed_everything_workers_gives_each_worker_its_own_reproducible_numpy_seed(make_trainer) -> None:
    first = _noise_seen(7, make_trainer)
    again = _noise_seen(7, make_trainer)
    assert first == again  # reproducible
    assert len(set(first)) == len(first)  # the two workers do not repeat each other's draws


def test_the_sanity_check_does_not_change_the_first_training_batch(make_trainer):
    # Lightning 2.6 runs the sanity check with the random state isolated
    first = []

    class Model(BoringModel):
        def train_dataloader(self):
            return DataLoader(RandomDataset(32, 64), batch_size=4, shuffle=True)

        def val_dataloader(self):
            return DataLoader(RandomDataset(32, 8), batch_size=4, shuffle=True)

        def training_step(self, batch, batch_idx):
            first.append(batch.clone())
            return super().training_step(batch, batch_idx)

    for sanity_steps in (0, 2):
        L.seed_everything(7, verbose=False)
        trainer = make_trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=sanity_steps)
        trainer.fit(Model())
    assert len(first) == 2 and torch.equal(first[0], first[1])


def test_deterministic_enables_torch_deterministic_algorithms(make_trainer):
    seen = []

    class Model(Counting):
        def training_step(self, batch, batch_idx):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().training_step(batch, batch_idx)

    try:
        trainer = make_trainer(deterministic=True, limit_train_batches=1, limit_val_batches=0)
        trainer.fit(Model())
    finally:
        torch.use_deterministic_algorithms(False)
    assert seen == [True]

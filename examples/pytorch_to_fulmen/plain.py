"""BEFORE: a hand-written PyTorch training loop. Compare with fulmen_version.py, line by line.

python examples/pytorch_to_fulmen/plain.py --epochs 2
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

try:
    from examples.pytorch_to_fulmen.common import build_model, load_datasets
except ModuleNotFoundError:  # run as a script
    from common import build_model, load_datasets


def train(
    seed: int = 0,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    max_samples: int | None = None,
    accelerator: str = "cpu",
    verbose: bool = False,
) -> dict[str, torch.Tensor]:
    """Trains the MLP and returns its final state_dict (on CPU)."""
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    torch.manual_seed(seed)
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    train_set, val_set = load_datasets(max_samples)
    # A seeded generator of its own makes the shuffle order reproducible (and identical in both versions).
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = DataLoader(val_set, batch_size=256)

    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(dim=1) == y).sum().item()
                total += len(y)
        if verbose:
            print(f"epoch {epoch}: val_loss {loss_sum / total:.4f}  val_acc {correct / total:.4f}")

    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    train(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, verbose=True)

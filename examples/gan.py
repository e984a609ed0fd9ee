"""A tiny GAN on scikit-learn's 8x8 digits, trained with two optimizers under manual optimization.

    python examples/gan.py --max-epochs 30

With ``self.automatic_optimization = False`` the Trainer stops calling backward and step for you:
``training_step`` fetches both optimizers with ``self.optimizers()`` and runs the discriminator and
generator updates itself, using ``self.manual_backward`` (which the Trainer routes through precision
and strategy) and ``toggle_optimizer`` (which freezes the parameters of the other network).
At the end a few generated digits are printed as ASCII art.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L

IMAGE_PIXELS = 64  # 8 x 8


def load_digits_dataset() -> TensorDataset:
    """scikit-learn's 1,797 8x8 digit images, scaled to [-1, 1] (the generator's tanh range)."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0 * 2.0 - 1.0
    return TensorDataset(images)


class Generator(nn.Module):
    def __init__(self, latent_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, IMAGE_PIXELS),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(IMAGE_PIXELS, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),  # a logit: the losses use binary_cross_entropy_with_logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GAN(L.LightningModule):
    """Generator and discriminator, each with its own Adam optimizer.

    Args:
        latent_dim: size of the noise vector fed to the generator.
        lr: learning rate of both optimizers.
    """

    def __init__(self, latent_dim: int = 32, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Two optimizers need manual optimization: the Trainer would not know how to interleave them.
        self.automatic_optimization = False
        self.generator = Generator(latent_dim)
        self.discriminator = Discriminator()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.latent_dim, device=self.device)
        ones = torch.ones(real.shape[0], 1, device=self.device)
        zeros = torch.zeros(real.shape[0], 1, device=self.device)

        # Generator: make the discriminator call fakes real.
        self.toggle_optimizer(opt_g)
        fake = self.generator(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        self.manual_backward(g_loss)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)

        # Discriminator: tell real from fake. detach() keeps this loss out of the generator's graph.
        self.toggle_optimizer(opt_d)
        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        d_loss = (real_loss + fake_loss) / 2
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)

        self.log_dict({"g_loss": g_loss, "d_loss": d_loss}, prog_bar=True)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)
        return opt_g, opt_d

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n generated images of shape (n, 8, 8), pixel values in [-1, 1]."""
        z = torch.randn(n, self.hparams.latent_dim, device=self.device)
        return self.generator(z).reshape(n, 8, 8)


def ascii_art(images: torch.Tensor) -> str:
    """Renders (n, 8, 8) images in [-1, 1] side by side as text."""
    shades = " .:-=+*#%@"
    levels = ((images.clamp(-1, 1) + 1) / 2 * (len(shades) - 1)).round().long()
    rows = []
    for r in range(images.shape[1]):
        rows.append("   ".join("".join(shades[v] * 2 for v in img[r].tolist()) for img in levels))
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--default-root-dir", default=None)
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Trains the GAN; returns the last logged {"g_loss", "d_loss"}, the step count and the time."""
    args = parse_args(argv)
    L.seed_everything(args.seed)
    loader = DataLoader(load_digits_dataset(), batch_size=args.batch_size, shuffle=True, drop_last=True)
    model = GAN(latent_dim=args.latent_dim, lr=args.lr)
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        accelerator=args.accelerator,
        devices=int(args.devices) if args.devices.isdigit() else args.devices,
        enable_progress_bar=not args.no_progress_bar,
        default_root_dir=args.default_root_dir,
    )
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    seconds = time.perf_counter() - start
    result = {
        "g_loss": float(trainer.callback_metrics["g_loss"]),
        "d_loss": float(trainer.callback_metrics["d_loss"]),
        "global_step": float(trainer.global_step),
        "seconds": seconds,
    }
    print(f"fit took {seconds:.1f}s; global_step={trainer.global_step} (two optimizer steps per batch)")
    print(f"final g_loss: {result['g_loss']:.3f}  d_loss: {result['d_loss']:.3f}")
    print("samples:")
    print(ascii_art(model.sample(6).cpu()))
    return result


if __name__ == "__main__":
    main()

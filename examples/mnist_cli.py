"""The MNIST example (examples/mnist.py) driven by fulmen's LightningCLI.

Every argument of the Trainer, of MNISTClassifier and of MNISTDataModule is an option:

    python examples/mnist_cli.py fit --trainer.max_epochs 2
    python examples/mnist_cli.py fit --model.model cnn --model.lr 0.001 --data.batch_size 64
    python examples/mnist_cli.py fit --print_config > mnist.yaml   # then edit it and
    python examples/mnist_cli.py fit --config mnist.yaml
    python examples/mnist_cli.py test --ckpt_path lightning_logs/version_0/checkpoints/<file>.ckpt

Each run saves its configuration as lightning_logs/version_N/config.yaml.
"""

from __future__ import annotations

from fulmen.cli import LightningCLI

try:
    from examples.mnist import MNISTClassifier, MNISTDataModule
except ModuleNotFoundError:  # run as a script: examples/ itself is on sys.path
    from mnist import MNISTClassifier, MNISTDataModule  # type: ignore[no-redef]


def main(args: list[str] | None = None) -> LightningCLI:
    """Parse `args` (default: the command line) and run the subcommand."""
    return LightningCLI(MNISTClassifier, MNISTDataModule, args=args)


if __name__ == "__main__":
    main()

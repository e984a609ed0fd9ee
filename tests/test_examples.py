"""The examples double as end-to-end tests: parity with plain PyTorch, MNIST convergence, the GAN."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest.importorskip("mlxtend")
# each test trains an example end to end (5-20 s each on 2 cores): the full suite runs them, -m "not slow" skips
pytestmark = pytest.mark.slow


def test_plain_pytorch_and_fulmen_reach_identical_weights() -> None:
    from examples.pytorch_to_fulmen import fulmen_version, plain

    expected = plain.train(seed=3, epochs=2, batch_size=64, max_samples=640)
    got = fulmen_version.train(seed=3, epochs=2, batch_size=64, max_samples=640)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs between plain PyTorch and fulmen"


def test_parity_holds_for_a_different_seed_and_batch_size() -> None:
    from examples.pytorch_to_fulmen import fulmen_version, plain

    expected = plain.train(seed=11, epochs=1, batch_size=32, max_samples=320)
    got = fulmen_version.train(seed=11, epochs=1, batch_size=32, max_samples=320)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_mnist_example_reaches_90_percent_in_3_epochs(tmp_path: Path) -> None:
    from examples import mnist

    result = mnist.main(["--max-epochs", "3", "--no-progress-bar", "--default-root-dir", str(tmp_path)])
    assert result["val_acc"] >= 0.90
    assert result["test_acc"] >= 0.85
    assert (tmp_path / "lightning_logs" / "version_0").is_dir()  # logs under lightning_logs/


def test_gan_example_trains_two_optimizers(tmp_path: Path) -> None:
    from examples import gan

    result = gan.main(["--max-epochs", "1", "--no-progress-bar", "--default-root-dir", str(tmp_path)])
    batches = len(gan.load_digits_dataset()) // 64  # drop_last=True, batch 64
    assert result["global_step"] == 2 * batches  # one generator and one discriminator step per batch
    assert torch.isfinite(torch.tensor([result["g_loss"], result["d_loss"]])).all()

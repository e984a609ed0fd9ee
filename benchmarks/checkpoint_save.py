"""How long `trainer.save_checkpoint` takes for a ~100 MB model, against `torch.save(model.state_dict())`.

fulmen's save writes the full resume state (optimizer, RNG, loop counters), checks that every value
loads with `weights_only=True`, and writes atomically with fsync. The plain baseline is
`torch.save(state_dict, path)` (no fsync: the data may still sit in the page cache), so the script
also reports `torch.save` followed by fsync, which is what durability costs by itself.

Run: PYTHONPATH=src python benchmarks/checkpoint_save.py [--mb 100] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L


class Big(L.LightningModule):
    """Square linear layers adding up to about `mb` megabytes of float32 weights."""

    def __init__(self, mb: int) -> None:
        super().__init__()
        width = 1024
        layers = max(1, round(mb * 2**20 / 4 / (width * width + width)))
        self.net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _torch_save(obj: Any, path: str, fsync: bool) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def main() -> None:
    """Measure and print the three timings (median of interleaved repeats) and their ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = Big(args.mb)
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as root:
        trainer = L.Trainer(
            default_root_dir=root,
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(2, 1024)), batch_size=2))
        cases: dict[str, Any] = {
            "torch.save(state_dict)": lambda p: _torch_save(model.state_dict(), p, fsync=False),
            "torch.save + fsync": lambda p: _torch_save(model.state_dict(), p, fsync=True),
            "fulmen": trainer.save_checkpoint,
        }
        timings: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for i in range(args.repeats):
            order = names[i % 3 :] + names[: i % 3]  # rotate, so no case always follows another
            for name in order:
                path = os.path.join(root, f"x{i}-{names.index(name)}.ckpt")
                os.sync()  # no write-back of the previous file competes with this one
                timings[name].append(_timed(cases[name], path))
                os.unlink(path)
    base = statistics.median(timings["torch.save(state_dict)"])
    base_fsync = statistics.median(timings["torch.save + fsync"])
    print(f"model: {size_mb:.1f} MB of float32 weights, {args.repeats} interleaved repeats, median seconds")
    for name, values in timings.items():
        med = statistics.median(values)
        print(
            f"{name:<24} {med:8.3f}s   x{med / base:5.2f} vs torch.save   x{med / base_fsync:5.2f} vs +fsync"
        )


if __name__ == "__main__":
    main()

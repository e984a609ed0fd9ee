"""What verifying the CRC-32 of every record costs when a checkpoint is loaded.

fulmen's `load` reads each zip record once more to check it against the checksum stored beside it
(torch.load does not), so that flipped bits are reported instead of loaded. This measures, on one
checkpoint of about 100 MB (100 float32 tensors of 256x1024, page cache warm):

    torch.load(weights_only=True)   the read alone
    fulmen.checkpoint.load          the check plus the read
    the check alone

    python benchmarks/checkpoint_load.py [repetitions]
"""

import os
import statistics
import sys
import tempfile
import time

import torch

from fulmen.checkpoint import atomic_save, load
from fulmen.checkpoint.files import _verify_records


def _median(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Print the median seconds of each way of reading, and the check's share."""
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.ckpt")
        atomic_save({"state_dict": {f"layer{i}": torch.randn(256, 1024) for i in range(100)}}, path)
        size = os.path.getsize(path) / 1e6
        torch.load(path, weights_only=True)  # warm the page cache
        plain = _median(lambda: torch.load(path, weights_only=True), reps)
        checked = _median(lambda: load(path), reps)
        check = _median(lambda: _verify_records(path), reps)
    print(f"checkpoint: {size:.0f} MB, median of {reps}")
    print(f"torch.load(weights_only=True): {plain:.3f} s")
    print(f"fulmen.checkpoint.load (CRC-32 checked): {checked:.3f} s ({checked / plain:.2f}x)")
    print(f"the check alone: {check:.3f} s ({size / check:.0f} MB/s)")


if __name__ == "__main__":
    main()

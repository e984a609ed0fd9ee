"""Random-kill trials: kill a training run at a random point, resume it, compare with a run never stopped.

Uses the training script of tests/test_resume.py (2 epochs of 12 batches, dropout and noise drawn from
the global RNG, Adam with step and epoch schedulers, a shuffled DataLoader with two persistent workers).
Each trial picks a kill point at random: SIGKILL right after a mid-epoch checkpoint (any of the 23 batch
ends), SIGKILL right after an end-of-epoch checkpoint, or SIGTERM (ModelCheckpoint's preemption save).
A trial passes when the resumed run's final weights equal the uninterrupted run's bit for bit.

    python benchmarks/resume_trials.py [trials] [seed]
"""

import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_resume  # noqa: E402
from test_resume import _kill_and_resume  # noqa: E402

test_resume._run.__defaults__ = (900,)  # a shared, loaded machine: allow each run 15 minutes


def main() -> None:
    """Run the trials and print one line per trial, then the count of bit-identical ones."""
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    identical = 0
    for trial in range(trials):
        kind = rng.choice(["batch", "batch", "epoch", "sigterm"])
        at = 1 if kind == "epoch" else rng.randint(1, 23)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                _kill_and_resume(Path(tmp), workers=2, accumulate=1, kill_kind=kind, kill_at=at, persistent=1)
                ok = True
            except AssertionError as err:
                ok = False
                print(f"  {str(err).splitlines()[0][:200]}")
        identical += ok
        print(
            f"trial {trial + 1:2d}: {kind:7s} at {at:2d}: {'bit-identical' if ok else 'DIFFERENT'}",
            flush=True,
        )
    print(f"{identical} of {trials} random-kill trials bit-identical")


if __name__ == "__main__":
    main()

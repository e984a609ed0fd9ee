"""Lightning's loop-progress layout under a checkpoint's "loops", in both directions.

Lightning 2.x restores its loops from `ckpt["loops"]`: "fit_loop" (epoch, batch, optimizer-step and
scheduler progress, in nested counters named ready/started/processed/completed) and "validate_loop",
"test_loop", "predict_loop". fulmen keeps its own counters (progress.py) in "fit_loop" and writes
Lightning's beside them, as Lightning would have written them at the same point, so that Lightning
resumes a fulmen checkpoint where it stopped and `validate(ckpt_path=...)` finds its loop. The other
way, `from_lightning` reads fulmen's counters out of a checkpoint Lightning wrote.

A counter that Lightning writes as "processed > completed" (saved inside a batch's or an epoch's end
hooks) means "done" to both; fulmen writes the done state with the two equal.
"""

from __future__ import annotations

from typing import Any


def _count(n: int, started: bool = True, processed: bool = True) -> dict[str, int]:
    out = {"ready": n, "completed": n}
    if started:
        out["started"] = n
    if processed:
        out["processed"] = n
    return out


def _progress(total: int, current: int, started: bool = True, processed: bool = True) -> dict[str, Any]:
    return {"total": _count(total, started, processed), "current": _count(current, started, processed)}


def _batch_progress(total: int = 0, current: int = 0, with_last: bool = True) -> dict[str, Any]:
    out = _progress(total, current)
    if with_last:
        out["is_last_batch"] = False
    return out


def for_lightning(counters: dict[str, Any], automatic: bool, accumulate: int) -> dict[str, Any]:
    """Lightning's "fit_loop" entries for fulmen's `counters` (the dict `Progress.state_dict` gives)."""
    epochs = counters["epoch"]
    in_epoch = counters["epoch_batches"]
    steps = counters["global_step"]
    epoch_steps = min(steps, in_epoch // max(accumulate, 1))
    started_epochs = epochs + 1 if in_epoch else epochs  # an epoch under way is started, not processed
    epoch_progress = _progress(epochs, epochs)
    epoch_progress["total"]["ready"] = epoch_progress["total"]["started"] = started_epochs
    epoch_progress["current"]["ready"] = epoch_progress["current"]["started"] = started_epochs
    optimizer = {
        "step": _progress(steps if automatic else 0, epoch_steps if automatic else 0, False, False),
        "zero_grad": _progress(steps if automatic else 0, epoch_steps if automatic else 0, True, False),
    }
    return {
        "state_dict": {},
        "epoch_loop.state_dict": {"_batches_that_stepped": counters["batches_that_stepped"]},
        "epoch_loop.batch_progress": _batch_progress(counters["total_batches"], in_epoch),
        "epoch_loop.scheduler_progress": _progress(0, 0, False, False),
        "epoch_loop.automatic_optimization.state_dict": {},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": optimizer},
        "epoch_loop.manual_optimization.state_dict": {},
        "epoch_loop.manual_optimization.optim_step_progress": _progress(
            0 if automatic else steps, 0 if automatic else epoch_steps, False, False
        ),
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.batch_progress": _batch_progress(),
        "epoch_progress": epoch_progress,
    }


def evaluation_loops() -> dict[str, Any]:
    """Lightning's "validate_loop", "test_loop" and "predict_loop" entries (nothing to resume in them)."""
    return {
        "validate_loop": {"state_dict": {}, "batch_progress": _batch_progress()},
        "test_loop": {"state_dict": {}, "batch_progress": _batch_progress()},
        "predict_loop": {"state_dict": {}, "batch_progress": _batch_progress(with_last=False)},
    }


def written_by_lightning(fit_loop: dict[str, Any]) -> bool:
    """True when "fit_loop" holds only Lightning's counters (fulmen writes its own beside them)."""
    return "epoch_progress" in fit_loop and "epoch_batches" not in fit_loop


def from_lightning(ckpt: dict[str, Any], fit_loop: dict[str, Any]) -> dict[str, Any]:
    """fulmen's counters from a Lightning 2.x checkpoint's loop progress (so its runs resume here too).

    Lightning counts a batch (an epoch) as "processed" once trained and "completed" after its end
    hooks; a checkpoint written inside those hooks has processed > completed, which still means done.
    """
    epochs = fit_loop["epoch_progress"]["current"]
    batches = fit_loop.get("epoch_loop.batch_progress", {})
    in_epoch = epochs.get("started", 0) > epochs.get("processed", 0)  # saved before the epoch's end
    stepped = fit_loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped", 0)
    current, total = batches.get("current", {}), batches.get("total", {})
    return {
        "epoch": epochs.get("processed", ckpt.get("epoch", 0)),
        "epoch_batches": current.get("processed", 0) if in_epoch else 0,
        "global_step": ckpt.get("global_step", 0),
        "batches_that_stepped": stepped + current.get("processed", 0) - current.get("completed", 0),
        "total_batches": total.get("processed", 0),
    }

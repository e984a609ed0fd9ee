"""checkpoint/lightning_loops.py: a fulmen checkpoint carries Lightning's loop layout, so Lightning resumes it.

Checked by hand against Lightning 2.6 (a fulmen checkpoint resumed with `Trainer.fit(ckpt_path=...)`
ends at the same global_step and epoch as Lightning's own checkpoint from the same point, and
`validate/test/predict(ckpt_path=...)` run); these tests pin the layout and the counters it reads.
"""

import torch

from fulmen.callbacks import ModelCheckpoint
from fulmen.checkpoint import lightning_loops
from fulmen.demos import BoringModel


def _progress(prefix, *counters):
    """The key paths of a Lightning progress tracker: `prefix/total/<counter>` and `prefix/current/<counter>`."""
    return [f"{prefix}/{p}/{c}" for p in ("total", "current") for c in counters]


# Every key path under ckpt["loops"] in a checkpoint Lightning 2.6 wrote for an automatic-optimization fit.
LIGHTNING_FIT_LOOP = {
    "state_dict",
    "epoch_loop.state_dict/_batches_that_stepped",
    *_progress("epoch_loop.batch_progress", "ready", "started", "processed", "completed"),
    "epoch_loop.batch_progress/is_last_batch",
    *_progress("epoch_loop.scheduler_progress", "ready", "completed"),
    "epoch_loop.automatic_optimization.state_dict",
    *_progress("epoch_loop.automatic_optimization.optim_progress/optimizer/step", "ready", "completed"),
    *_progress(
        "epoch_loop.automatic_optimization.optim_progress/optimizer/zero_grad",
        "ready",
        "started",
        "completed",
    ),
    "epoch_loop.manual_optimization.state_dict",
    *_progress("epoch_loop.manual_optimization.optim_step_progress", "ready", "completed"),
    "epoch_loop.val_loop.state_dict",
    *_progress("epoch_loop.val_loop.batch_progress", "ready", "started", "processed", "completed"),
    "epoch_loop.val_loop.batch_progress/is_last_batch",
    *_progress("epoch_progress", "ready", "started", "processed", "completed"),
}


def _paths(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _paths(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}"


def _mid_epoch_checkpoint(make_trainer, tmp_path):
    every = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    make_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, callbacks=[every]).fit(
        BoringModel()
    )
    return torch.load(tmp_path / "step=4.ckpt", weights_only=True)


def test_fit_loop_has_every_key_lightning_reads(make_trainer, tmp_path):
    fit_loop = _mid_epoch_checkpoint(make_trainer, tmp_path)["loops"]["fit_loop"]
    lightning_part = {
        k: v for k, v in fit_loop.items() if k == "state_dict" or "." in k or k == "epoch_progress"
    }
    assert set(_paths(lightning_part)) == LIGHTNING_FIT_LOOP


def test_fit_loop_counters_say_where_the_run_stopped(make_trainer, tmp_path):
    # step 4 of 3-batch epochs: epoch 1 started (not processed), 1 batch into it, 4 batches and steps in all
    fit_loop = _mid_epoch_checkpoint(make_trainer, tmp_path)["loops"]["fit_loop"]
    epochs = fit_loop["epoch_progress"]["current"]
    assert (epochs["started"], epochs["processed"], epochs["completed"]) == (2, 1, 1)
    batches = fit_loop["epoch_loop.batch_progress"]
    assert batches["current"]["completed"] == 1 and batches["total"]["completed"] == 4
    step = fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert step["total"]["completed"] == 4
    assert fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"] == 4


def test_evaluation_loops_are_there_for_validate_with_ckpt_path(make_trainer, tmp_path):
    loops = _mid_epoch_checkpoint(make_trainer, tmp_path)["loops"]
    for name in ("validate_loop", "test_loop", "predict_loop"):
        assert set(loops[name]) == {"state_dict", "batch_progress"}
    assert "is_last_batch" in loops["validate_loop"]["batch_progress"]
    assert "is_last_batch" not in loops["predict_loop"]["batch_progress"]


def test_lightning_counters_read_back_as_the_same_fulmen_counters():
    for counters in (
        {"epoch": 1, "epoch_batches": 2, "global_step": 5, "batches_that_stepped": 5, "total_batches": 5},
        {"epoch": 2, "epoch_batches": 0, "global_step": 6, "batches_that_stepped": 6, "total_batches": 6},
    ):
        written = lightning_loops.for_lightning(counters, automatic=True, accumulate=1)
        ckpt = {"global_step": counters["global_step"], "epoch": counters["epoch"]}
        assert lightning_loops.written_by_lightning(written)
        assert lightning_loops.from_lightning(ckpt, written) == counters
        assert not lightning_loops.written_by_lightning({**counters, **written})  # fulmen's own file

"""progress.py: the loop records each event as it happens; a checkpoint stores the position, never infers it."""

import pytest

from fulmen.demos import BoringModel
from fulmen.progress import Progress


def test_a_batch_whose_end_hooks_run_is_saved_as_done():
    progress = Progress(epoch=1, epoch_batches=2, global_step=5, batches_that_stepped=5, total_batches=6)
    progress.batch_trained(stepped=True)
    saved = progress.state_dict()
    assert (saved["epoch_batches"], saved["total_batches"], saved["batches_that_stepped"]) == (3, 7, 6)
    assert not saved["batch_end_pending"]
    assert (progress.epoch_batches, progress.total_batches) == (2, 6)  # counted only after the end hooks


def test_a_batch_inside_an_accumulation_window_does_not_count_as_stepped():
    progress = Progress(batches_that_stepped=4)
    progress.batch_trained(stepped=False)
    assert progress.state_dict()["batches_that_stepped"] == 4
    progress.batch_finished()
    assert (progress.epoch_batches, progress.batches_that_stepped, progress.batch_stepped) == (1, 4, False)


def test_an_epoch_whose_end_hooks_run_is_saved_as_done_and_marked_pending():
    progress = Progress(epoch=2, epoch_batches=4)
    progress.epoch_ending()
    saved = progress.state_dict()
    assert (saved["epoch"], saved["epoch_batches"], saved["epoch_end_pending"]) == (3, 0, True)
    progress.epoch_finished()
    assert (progress.epoch, progress.epoch_batches, progress.epoch_end_pending) == (3, 0, False)


def test_state_dict_round_trips_and_ignores_unknown_keys():
    progress = Progress(epoch=3, global_step=7, val_checks=2)
    restored = Progress()
    restored.load_state_dict({**progress.state_dict(), "stage": "train"})
    assert restored == progress


@pytest.mark.parametrize("accumulate", [1, 3])
def test_the_counters_after_a_fit_follow_the_accumulation_rule(make_trainer, accumulate):
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=5, limit_val_batches=0, accumulate_grad_batches=accumulate
    )
    trainer.fit(BoringModel())
    progress = trainer._progress
    steps_per_epoch = -(-5 // accumulate)  # windows restart each epoch; the epoch's last batch steps
    assert progress.global_step == 2 * steps_per_epoch
    assert (progress.epoch, progress.epoch_batches, progress.total_batches) == (2, 0, 10)
    assert progress.batches_that_stepped == 2 * steps_per_epoch
    assert not (progress.batch_end_pending or progress.epoch_end_pending)


def test_a_checkpoint_saved_in_on_train_batch_end_holds_that_batch_as_done(tmp_path, make_trainer):
    import fulmen as L

    saved = {}

    class SaveAtSecondBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1:
                trainer.save_checkpoint(tmp_path / "b.ckpt")
                saved.update(L.checkpoint.load(tmp_path / "b.ckpt")["loops"]["fit_loop"])

    trainer = make_trainer(
        limit_train_batches=4, limit_val_batches=0, accumulate_grad_batches=3, callbacks=[SaveAtSecondBatch()]
    )
    trainer.fit(BoringModel())
    assert (saved["epoch_batches"], saved["total_batches"], saved["global_step"]) == (2, 2, 0)
    assert saved["batches_that_stepped"] == 0 and saved["batch_stepped"] is False
    assert "accumulated_grads" in L.checkpoint.load(tmp_path / "b.ckpt")

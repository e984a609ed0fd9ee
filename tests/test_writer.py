"""writer.py: the checkpoints that ModelCheckpoint finishes in the background: order, visibility and failures."""

import os
import threading
import time

import pytest
import torch

import fulmen as L
from fulmen.callbacks import ModelCheckpoint
from fulmen.checkpoint import files
from fulmen.demos import BoringModel
from fulmen.writer import BackgroundWriteError, BackgroundWriter


@pytest.fixture
def fit_trainer(make_trainer):
    """Three epochs of two batches, with ModelCheckpoint's defaults (a save at each epoch's end)."""

    def make(**kwargs):
        options = dict(enable_checkpointing=True, max_epochs=3, limit_train_batches=2, limit_val_batches=0)
        return make_trainer(**{**options, **kwargs})

    return make


def _ckpts(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".ckpt")) if os.path.isdir(folder) else []


# ------------------------------------------------------------------ the writer itself


def test_writer_runs_tasks_in_submission_order_and_flush_waits_for_them():
    writer = BackgroundWriter()
    done = []
    for i in range(5):
        writer.submit(lambda i=i: (time.sleep(0.01 * (5 - i)), done.append(i)), f"task {i}")
    writer.flush()
    assert done == [0, 1, 2, 3, 4]
    assert not writer.pending()


def test_writer_failure_is_raised_on_the_caller_and_drops_the_tasks_behind_it():
    writer = BackgroundWriter()
    ran = []

    def fail():
        raise OSError("No space left on device")

    writer.submit(fail, "checkpoint 'a.ckpt'")
    writer.submit(lambda: ran.append("removal of the older file"), "the removal")
    with pytest.raises(
        BackgroundWriteError, match=r"Writing checkpoint 'a.ckpt' failed: OSError: No space left"
    ):
        writer.flush()
    assert ran == []
    writer.submit(lambda: ran.append("later"), "later")  # the error was reported once; the writer goes on
    writer.flush()
    assert ran == ["later"]


def test_writer_runs_off_the_calling_thread():
    writer = BackgroundWriter()
    seen = []
    writer.submit(lambda: seen.append(threading.current_thread().name), "probe")
    writer.flush()
    assert seen and seen[0] != threading.current_thread().name


# ------------------------------------------------------------------ ModelCheckpoint with a slow disk


@pytest.fixture
def slow_disk(monkeypatch):
    """Every checkpoint write takes 0.2 s; records (file name, writing thread) as each one lands."""
    real = files._write_atomically
    log = []

    def slow(path, write):
        time.sleep(0.2)
        real(path, write)
        log.append((os.path.basename(path), threading.current_thread().name))

    monkeypatch.setattr(files, "_write_atomically", slow)
    return log


def test_the_older_checkpoint_is_removed_only_after_the_newer_one_landed(
    tmp_path, fit_trainer, slow_disk, monkeypatch
):
    real_remove = files._remove_now
    on_disk_at_removal = {}

    def remove(path):
        on_disk_at_removal[os.path.basename(path)] = _ckpts(tmp_path / "checkpoints")
        real_remove(path)

    monkeypatch.setattr(files, "_remove_now", remove)
    trainer = fit_trainer()
    trainer.fit(BoringModel())
    # each file is deleted only once its successor is complete on disk (the writes take 0.2 s each)
    assert on_disk_at_removal == {
        "epoch=0-step=2.ckpt": ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"],
        "epoch=1-step=4.ckpt": ["epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"],
    }
    assert _ckpts(tmp_path / "checkpoints") == ["epoch=2-step=6.ckpt"]
    assert [name for name, _ in slow_disk] == [
        "epoch=0-step=2.ckpt",
        "epoch=1-step=4.ckpt",
        "epoch=2-step=6.ckpt",
    ]
    assert {thread for _, thread in slow_disk} == {"fulmen-checkpoint-writer"}


def test_checkpoints_are_on_disk_when_on_fit_end_runs(tmp_path, fit_trainer, slow_disk):
    loaded = []

    class Read(L.Callback):
        def on_fit_end(self, trainer, pl_module):
            path = trainer.checkpoint_callback.best_model_path
            loaded.append(torch.load(path, weights_only=True)["global_step"])

    fit_trainer(callbacks=[Read()]).fit(BoringModel())
    assert loaded == [6]


def test_a_checkpoint_written_in_the_background_holds_the_state_of_its_step(tmp_path, fit_trainer, slow_disk):
    """Training goes on while the file is written: the file must still hold the weights of the save."""
    weights = {}

    class Keep(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            weights[trainer.global_step] = pl_module.layer.weight.detach().clone()

    trainer = fit_trainer(callbacks=[Keep(), ModelCheckpoint(dirpath=tmp_path / "all", save_top_k=-1)])
    trainer.fit(BoringModel())
    for step in (2, 4, 6):
        ckpt = torch.load(tmp_path / "all" / f"epoch={step // 2 - 1}-step={step}.ckpt", weights_only=True)
        assert torch.equal(ckpt["state_dict"]["layer.weight"], weights[step])


def test_a_failed_background_write_stops_the_fit_and_keeps_the_last_good_file(
    tmp_path, fit_trainer, monkeypatch
):
    real = files._write_atomically
    writes = []

    def disk_full_after_the_first(path, write):
        writes.append(os.path.basename(path))
        if len(writes) > 1:
            raise OSError(28, "No space left on device")
        real(path, write)

    monkeypatch.setattr(files, "_write_atomically", disk_full_after_the_first)
    trainer = fit_trainer(max_epochs=5)
    with pytest.raises(BackgroundWriteError, match=r"epoch=1-step=4.ckpt.*No space left on device"):
        trainer.fit(BoringModel())
    assert _ckpts(tmp_path / "checkpoints") == ["epoch=0-step=2.ckpt"]


def test_trainer_save_checkpoint_is_on_disk_when_it_returns(tmp_path, fit_trainer, slow_disk):
    trainer = fit_trainer(max_epochs=1, enable_checkpointing=False)
    trainer.fit(BoringModel())
    trainer.save_checkpoint(tmp_path / "now.ckpt")
    assert (tmp_path / "now.ckpt").exists()
    assert slow_disk == [("now.ckpt", threading.current_thread().name)]  # written on the caller's thread


def test_a_strategy_with_lightnings_save_signature_still_saves(tmp_path, fit_trainer):
    """A user's strategy overriding save_checkpoint(checkpoint, filepath, storage_options=None) keeps working."""
    from fulmen.strategies import SingleDeviceStrategy

    calls = []

    class Custom(SingleDeviceStrategy):
        def save_checkpoint(self, checkpoint, filepath, storage_options=None):
            calls.append(os.path.basename(filepath))
            super().save_checkpoint(checkpoint, filepath)

    trainer = fit_trainer(strategy=Custom("cpu"), max_epochs=2)
    trainer.fit(BoringModel())
    assert calls == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]
    assert _ckpts(tmp_path / "checkpoints") == ["epoch=1-step=4.ckpt"]

"""Checkpoint I/O plugins (`fulmen.checkpoint_io`, Lightning's `plugins.io`) passed in Trainer(plugins=...)."""

import functools
import os
import threading
import time

import pytest
import torch

import fulmen as L
from fulmen.callbacks import ModelCheckpoint
from fulmen.checkpoint_io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO, XLACheckpointIO
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException
from fulmen.writer import BackgroundWriteError


@pytest.fixture
def io_trainer(make_trainer):
    """make_trainer for 2 epochs of 2 training batches, no validation."""
    return functools.partial(make_trainer, max_epochs=2, limit_train_batches=2, limit_val_batches=0)


class Recording(TorchCheckpointIO):
    """fulmen's own I/O, recording every call (a user plugin overriding all three methods)."""

    def __init__(self):
        self.calls = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.calls.append(("save", os.path.basename(path), threading.current_thread().name))
        super().save_checkpoint(checkpoint, path, storage_options)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        self.calls.append(("load", os.path.basename(path), threading.current_thread().name))
        return super().load_checkpoint(path, map_location, weights_only)

    def remove_checkpoint(self, path):
        self.calls.append(("remove", os.path.basename(path), threading.current_thread().name))
        super().remove_checkpoint(path)


def test_the_default_is_a_torch_checkpoint_io(io_trainer):
    assert type(io_trainer().strategy.checkpoint_io) is TorchCheckpointIO


def test_a_plugin_in_plugins_becomes_the_strategys_checkpoint_io(io_trainer):
    io = Recording()
    assert io_trainer(plugins=[io]).strategy.checkpoint_io is io


def test_model_checkpoint_saves_removes_and_resumes_through_the_plugin(tmp_path, io_trainer):
    io = Recording()
    folder = tmp_path / "c"
    io_trainer(plugins=[io], callbacks=[ModelCheckpoint(dirpath=folder)]).fit(BoringModel())
    main = threading.current_thread().name
    assert io.calls == [
        ("save", "epoch=0-step=2.ckpt", main),
        ("save", "epoch=1-step=4.ckpt", main),
        ("remove", "epoch=0-step=2.ckpt", main),
    ]
    assert os.listdir(folder) == ["epoch=1-step=4.ckpt"]

    io2 = Recording()
    trainer = io_trainer(plugins=io2, max_epochs=3, callbacks=[ModelCheckpoint(dirpath=folder)])
    trainer.fit(BoringModel(), ckpt_path=folder / "epoch=1-step=4.ckpt")
    assert io2.calls[0] == ("load", "epoch=1-step=4.ckpt", main)
    assert trainer.global_step == 6


def test_torch_checkpoint_io_loads_weights_only(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": threading.Lock}, path)
    from fulmen.checkpoint import UnsafeCheckpointError

    with pytest.raises(UnsafeCheckpointError):
        TorchCheckpointIO().load_checkpoint(path)
    assert TorchCheckpointIO().load_checkpoint(path, weights_only=False)["x"] is threading.Lock


def test_torch_checkpoint_io_refuses_storage_options(tmp_path):
    with pytest.raises(TypeError, match="storage_options"):
        TorchCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "a.ckpt", storage_options={"x": 1})


class SlowIO(TorchCheckpointIO):
    def __init__(self, fail_after=None):
        self.saved = []
        self.fail_after = fail_after

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        time.sleep(0.2)
        if self.fail_after is not None and len(self.saved) >= self.fail_after:
            raise OSError(28, "No space left on device")
        super().save_checkpoint(checkpoint, path, storage_options)
        self.saved.append((os.path.basename(path), threading.current_thread().name))


def test_async_checkpoint_io_writes_on_another_thread_and_finishes_by_the_end(tmp_path, io_trainer):
    inner = SlowIO()
    trainer = io_trainer(
        plugins=[AsyncCheckpointIO(inner)], callbacks=[ModelCheckpoint(dirpath=tmp_path / "c")]
    )
    started = time.perf_counter()
    trainer.fit(BoringModel())
    assert [name for name, _ in inner.saved] == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]
    assert {thread for _, thread in inner.saved} == {"fulmen-async-checkpoint-io"}
    assert os.listdir(tmp_path / "c") == ["epoch=1-step=4.ckpt"]
    assert time.perf_counter() - started >= 0.4


def test_async_checkpoint_io_saves_a_snapshot_of_the_weights(tmp_path, io_trainer):
    weights = {}

    class Keep(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            weights[trainer.global_step] = pl_module.layer.weight.detach().clone()

    inner = SlowIO()
    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_top_k=-1)
    io_trainer(plugins=[AsyncCheckpointIO(inner)], callbacks=[Keep(), cb]).fit(BoringModel())
    for step in (2, 4):
        ckpt = torch.load(tmp_path / "c" / f"epoch={step // 2 - 1}-step={step}.ckpt", weights_only=True)
        assert torch.equal(ckpt["state_dict"]["layer.weight"], weights[step])


def test_a_failed_async_save_is_raised(tmp_path, io_trainer):
    trainer = io_trainer(
        max_epochs=3,
        plugins=[AsyncCheckpointIO(SlowIO(fail_after=1))],
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "c")],
    )
    with pytest.raises(BackgroundWriteError, match="epoch=1-step=4.ckpt.*No space left on device"):
        trainer.fit(BoringModel())
    assert os.listdir(tmp_path / "c") == ["epoch=0-step=2.ckpt"]


def test_xla_checkpoint_io_is_out_of_scope():
    with pytest.raises(NotImplementedError, match="XLACheckpointIO is out of scope"):
        XLACheckpointIO()


def test_two_checkpoint_io_plugins_are_refused(io_trainer):
    with pytest.raises(MisconfigurationException, match="several checkpoint I/O plugins"):
        io_trainer(plugins=[TorchCheckpointIO(), AsyncCheckpointIO()])


def test_checkpoint_io_is_abstract():
    with pytest.raises(TypeError):
        CheckpointIO()

"""preemption.py: the fit loop owns SIGTERM; callbacks only declare where the checkpoint goes."""

import os
import signal

import pytest
import torch

from fulmen.callbacks import Callback
from fulmen.demos import BoringModel
from fulmen.utilities import SIGTERMException


class SigtermAt(Callback):
    """Sends this process SIGTERM in the `on_train_batch_end` of training batch `at` (counted over the fit)."""

    def __init__(self, at):
        self.at = at
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


class Target(Callback):
    """Declares an interrupt checkpoint path and records what the fit loop tells it."""

    def __init__(self, path):
        self.path = str(path)
        self.saved = []

    def interrupt_checkpoint_path(self, trainer):
        return self.path

    def interrupt_checkpoint_saved(self, trainer, path):
        self.saved.append((path, trainer.global_step))


def test_sigterm_writes_the_declared_target_at_that_batch_end_and_exits_zero(tmp_path, make_trainer):
    target = Target(tmp_path / "interrupt.ckpt")
    trainer = make_trainer(
        max_epochs=3, limit_train_batches=4, limit_val_batches=0, callbacks=[target, SigtermAt(6)]
    )
    with pytest.raises(SIGTERMException) as info:
        trainer.fit(BoringModel())
    assert info.value.code == 0
    assert target.saved == [(target.path, 6)]
    ckpt = torch.load(target.path, weights_only=True)
    # the counters describe the finished 6th batch: epoch 1, its second batch done
    assert (ckpt["global_step"], ckpt["loops"]["fit_loop"]["epoch"]) == (6, 1)
    assert ckpt["loops"]["fit_loop"]["epoch_batches"] == 2


def test_a_target_assigned_on_the_instance_counts(tmp_path, make_trainer):
    cb = Callback()
    path = str(tmp_path / "instance.ckpt")
    cb.interrupt_checkpoint_path = lambda trainer: path
    trainer = make_trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=[cb, SigtermAt(1)]
    )
    with pytest.raises(SIGTERMException):
        trainer.fit(BoringModel())
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_without_a_declared_target_fit_leaves_sigterm_alone(make_trainer):
    seen = []

    class Peek(Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    make_trainer(limit_train_batches=1, limit_val_batches=0, callbacks=[Peek()]).fit(BoringModel())
    assert seen == [before]


def test_the_previous_handler_returns_after_fit_even_when_fit_raises(tmp_path, make_trainer):
    class Boom(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            assert signal.getsignal(signal.SIGTERM) is not before
            raise RuntimeError("boom")

    before = signal.getsignal(signal.SIGTERM)
    trainer = make_trainer(
        limit_train_batches=2, limit_val_batches=0, callbacks=[Target(tmp_path / "x.ckpt"), Boom()]
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(BoringModel())
    assert signal.getsignal(signal.SIGTERM) is before


def test_fit_without_ckpt_path_resumes_from_a_callbacks_resume_checkpoint_path(tmp_path, make_trainer):
    first = make_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    first.fit(BoringModel())
    path = str(tmp_path / "given.ckpt")
    first.save_checkpoint(path)

    class Resume(Callback):
        def resume_checkpoint_path(self, trainer):
            return path

    trainer = make_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[Resume()])
    trainer.fit(BoringModel())
    assert trainer.ckpt_path == path
    assert trainer.global_step == 6  # 3 restored + 3 of the second epoch


GROUP_SCRIPT = """
import os, sys, time
import torch
from torch.utils.data import DataLoader
import fulmen as L
from fulmen.callbacks import Callback, ModelCheckpoint
from fulmen.demos import BoringModel
from fulmen.loggers import CSVLogger

out = sys.argv[1]

class Slow(BoringModel):
    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        self.log("loss_value", float(batch_idx))
        return super().training_step(batch, batch_idx)
    def train_dataloader(self):
        return DataLoader(torch.randn(4096, 32), batch_size=2, num_workers=2)

class Ready(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 10:
            open(os.path.join(out, "ready"), "w").close()

trainer = L.Trainer(max_epochs=1, default_root_dir=out, logger=CSVLogger(out), enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1,
                    callbacks=[Ready(), ModelCheckpoint(dirpath=os.path.join(out, "ckpts"))])
trainer.fit(Slow())
print("fit returned", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("run", range(2))
def test_sigterm_to_the_whole_process_group_with_workers_saves_and_exits_zero(tmp_path, run):
    """Issue 13 item 4: SLURM/Kubernetes signal every process; the DataLoader workers must not spoil the save."""
    import subprocess
    import sys
    import time

    script = tmp_path / "train.py"
    script.write_text(GROUP_SCRIPT)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=src)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job under SLURM
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and both workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM received" in err
    saved = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert saved["global_step"] >= 10
    assert os.path.getsize(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") > 0

"""Exact resume: a run killed with SIGKILL and resumed from its checkpoint ends bit-identical to a run never stopped.

Each case runs the same training script three times in subprocesses: uninterrupted; killed by SIGKILL
right after a checkpoint; resumed from that checkpoint. Final weights are compared bit for bit.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

import fulmen as L
from fulmen.callbacks import ModelCheckpoint
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import MisconfigurationException

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    import fulmen as L
    from fulmen.callbacks import Callback, ModelCheckpoint

    modes, out_dir, workers, accumulate, kill_kind, kill_at, persistent = sys.argv[1:8]
    workers, accumulate, kill_at, persistent = int(workers), int(accumulate), int(kill_at), persistent == "1"

    class Data(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(123)
            self.x = torch.randn(48, 8, generator=g)
        def __len__(self):
            return 48
        def __getitem__(self, i):
            return self.x[i]

    class Net(L.LightningModule):
        def __init__(self, hidden=16):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(0.25), nn.Linear(hidden, 1))
        def training_step(self, batch, batch_idx):
            noise = torch.randn_like(batch) * 0.01  # draws from the global RNG every step
            loss = (self.net(batch + noise) - 1).pow(2).mean()
            self.log("train_loss", loss)
            return loss
        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=0.01)
            step = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.9)
            epoch = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
            return [opt], [{"scheduler": step, "interval": "step"}, {"scheduler": epoch, "interval": "epoch"}]
        def train_dataloader(self):
            return DataLoader(Data(), batch_size=4, shuffle=True, num_workers=workers,
                              persistent_workers=persistent and workers > 0)

    class Kill(Callback):
        def __init__(self, ckpt_dir):
            self.ckpt_dir = ckpt_dir
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if kill_kind == "batch" and trainer._progress.total_batches + 1 == kill_at:
                trainer.save_checkpoint(os.path.join(self.ckpt_dir, "last.ckpt"))
                os.kill(os.getpid(), signal.SIGKILL)
            if kill_kind == "sigterm" and trainer._progress.total_batches + 1 == kill_at:
                os.kill(os.getpid(), signal.SIGTERM)  # ModelCheckpoint writes last.ckpt at this batch's end
        def on_train_epoch_end(self, trainer, module):
            if kill_kind == "epoch" and trainer.current_epoch + 1 == kill_at:  # an end-of-epoch checkpoint
                trainer.save_checkpoint(os.path.join(self.ckpt_dir, "last.ckpt"))
                os.kill(os.getpid(), signal.SIGKILL)

    def train(mode):
        ckpt_dir = os.path.join(out_dir, "full_ckpts" if mode == "full" else "ckpts")
        out = os.path.join(out_dir, mode + ".pt")
        L.seed_everything(7, verbose=False)
        model = Net()
        callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
        if mode == "killed":
            callbacks.append(Kill(ckpt_dir))
        trainer = L.Trainer(max_epochs=2, accumulate_grad_batches=accumulate, deterministic=True, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                            default_root_dir=ckpt_dir)
        trainer.fit(model, ckpt_path="last" if mode == "resumed" else None)
        torch.save(model.state_dict(), out)
        cb = trainer.checkpoint_callback
        info = {
            "epoch": trainer.current_epoch, "global_step": trainer.global_step,
            "progress": trainer._progress.state_dict(),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "schedulers": [c.scheduler.last_epoch for c in trainer.lr_scheduler_configs],
            "best": os.path.basename(cb.best_model_path),
        }
        with open(out + ".json", "w") as f:
            json.dump(info, f)

    for mode in modes.split(","):  # "full,resumed" resumes in a process that already trained: no leaks
        train(mode)
    """
)


def _run(tmp_path, modes, *args, timeout=150):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(script), modes, str(tmp_path), *[str(a) for a in args]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr


def _kill_and_resume(tmp_path, workers, accumulate, kill_kind, kill_at, persistent=0):
    args = (workers, accumulate, kill_kind, kill_at, persistent)
    rc, err = _run(tmp_path, "killed", *args)
    if kill_kind == "sigterm":
        assert rc == 0 and "SIGTERM received" in err, f"SIGTERM should exit cleanly, got {rc}: {err[-2000:]}"
    else:
        assert rc == -9, f"the training process should have been SIGKILLed, got {rc}: {err[-2000:]}"
    rc, err = _run(tmp_path, "full,resumed", *args)
    assert rc == 0, err[-3000:]
    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    with open(tmp_path / "full.pt.json") as f_a, open(tmp_path / "resumed.pt.json") as f_b:
        return json.load(f_a), json.load(f_b)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["no_workers", "two_persistent_workers"])
def test_sigkill_mid_epoch_inside_accumulation_window_resumes_bit_identical(tmp_path, workers):
    # 12 batches per epoch, 2 epochs; killed after batch 17 (epoch 1, batch 5): mid-epoch and mid-window.
    # Persistent workers: the interrupted epoch is not the loader's first, so its iterator drew no new
    # worker seed before the sampler ran; the resumed run's first iterator does.
    info_a, info_b = _kill_and_resume(
        tmp_path, workers=workers, accumulate=2, kill_kind="batch", kill_at=17, persistent=1
    )
    assert info_a == info_b  # every counter, the learning rate and the scheduler positions
    assert info_b["global_step"] == 12 and info_b["epoch"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_kind, kill_at", [("epoch", 1), ("batch", 12)], ids=["epoch_end_checkpoint", "last_batch_checkpoint"]
)
def test_persistent_workers_resume_at_an_epoch_boundary_bit_identical(tmp_path, kill_kind, kill_at):
    """Issue 13 item 3: the next epoch's first iterator must not draw a worker seed the original run did not."""
    info_a, info_b = _kill_and_resume(
        tmp_path, workers=2, accumulate=1, kill_kind=kill_kind, kill_at=kill_at, persistent=1
    )
    assert info_a == info_b
    assert info_b["global_step"] == 24


@pytest.mark.slow
def test_sigterm_writes_last_checkpoint_exits_cleanly_and_last_resumes_bit_identical(tmp_path):
    # batch 15 of 24, between two optimizer steps
    info_a, info_b = _kill_and_resume(tmp_path, workers=0, accumulate=1, kill_kind="sigterm", kill_at=15)
    assert info_a == info_b


def _as_previous_layout(path):
    """Rewrite a checkpoint as fulmen wrote it before the loop recorded pending ends in its counters."""
    ckpt = torch.load(path, weights_only=True)
    loops = ckpt["loops"]["fit_loop"]
    for key in ("batch_end_pending", "batch_stepped", "epoch_end_pending"):
        loops.pop(key)
    loops["stage"] = "train"
    torch.save(ckpt, path)


@pytest.mark.parametrize("layout", ["current", "previous"])
def test_resume_from_epoch_end_checkpoint_steps_the_pending_epoch_schedulers(tmp_path, make_trainer, layout):
    """In process: the epoch-end checkpoint is written before the epoch-interval scheduler steps."""

    class Stop(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    def fit(folder, callbacks=(), ckpt_path=None):
        L.seed_everything(2, verbose=False)
        model = BoringModel()  # SGD with an epoch-interval StepLR(step_size=1, gamma=0.1)
        trainer = make_trainer(
            default_root_dir=folder,
            max_epochs=2,
            callbacks=[ModelCheckpoint(dirpath=folder / "ckpts", save_last=True), *callbacks],
        )
        trainer.fit(model, DataLoader(RandomDataset(32, 8), batch_size=2, shuffle=True), ckpt_path=ckpt_path)
        return model, trainer

    reference, ref_trainer = fit(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "run", [Stop()])
    last = (
        tmp_path / "run" / "ckpts" / "last.ckpt"
    )  # each run its own folder: ModelCheckpoint keeps files it did not write
    saved = torch.load(last, weights_only=True)["loops"]["fit_loop"]
    assert saved["epoch_end_pending"] and (saved["epoch"], saved["epoch_batches"]) == (1, 0)
    if layout == "previous":
        _as_previous_layout(last)
    resumed, trainer = fit(tmp_path / "run", ckpt_path=last)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2
    assert trainer.optimizers[0].param_groups[0]["lr"] == ref_trainer.optimizers[0].param_groups[0]["lr"]
    assert torch.equal(reference.layer.weight, resumed.layer.weight)


def _loader_with_generator():
    return DataLoader(
        RandomDataset(32, 12), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(5)
    )


def _loader_with_weighted_sampler():
    sampler = WeightedRandomSampler(torch.linspace(0.1, 1.0, 12), num_samples=12)
    return DataLoader(RandomDataset(32, 12), batch_size=2, sampler=sampler)


class _StatefulSampler(torch.utils.data.Sampler):
    """A new permutation per epoch from a counter: replayable only through state_dict/load_state_dict."""

    def __init__(self, n):
        self.n, self.epochs = n, 0

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(100 + self.epochs))
        self.epochs += 1
        return iter(order.tolist())

    def __len__(self):
        return self.n

    def state_dict(self):
        return {"epochs": self.epochs}

    def load_state_dict(self, state):
        self.epochs = state["epochs"]


def _loader_with_stateful_sampler():
    return DataLoader(RandomDataset(32, 12), batch_size=2, sampler=_StatefulSampler(12))


@pytest.mark.parametrize(
    "make_loader", [_loader_with_generator, _loader_with_weighted_sampler, _loader_with_stateful_sampler]
)
def test_in_process_mid_epoch_resume_replays_generators_and_sampler_states(
    tmp_path, make_trainer, interrupt_at, make_loader
):
    def fit(callbacks=(), ckpt_path=None):
        L.seed_everything(4, verbose=False)
        model = BoringModel()
        trainer = make_trainer(max_epochs=2, callbacks=list(callbacks))
        trainer.fit(model, make_loader(), ckpt_path=ckpt_path)
        return model

    reference = fit()
    with pytest.raises(KeyboardInterrupt):
        fit([interrupt_at(1, 2)])
    resumed = fit(ckpt_path=tmp_path / "mid.ckpt")
    assert torch.equal(reference.layer.weight, resumed.layer.weight)


def test_resuming_a_checkpoint_past_max_epochs_is_an_error(tmp_path, make_trainer):
    # Lightning 2.6: "You restored a checkpoint with current_epoch=3, but you have set Trainer(max_epochs=2)."
    def trainer(epochs):
        return make_trainer(max_epochs=epochs, limit_train_batches=2, limit_val_batches=1)

    first = trainer(3)
    first.fit(BoringModel())
    first.save_checkpoint(tmp_path / "past.ckpt")
    with pytest.raises(
        MisconfigurationException, match=r"current_epoch=3, but you have set Trainer\(max_epochs=2\)"
    ):
        trainer(2).fit(BoringModel(), ckpt_path=tmp_path / "past.ckpt")
    at_limit = trainer(3)
    at_limit.fit(BoringModel(), ckpt_path=tmp_path / "past.ckpt")  # equal: nothing left to train, no error
    assert at_limit.global_step == 6


def test_resume_from_the_last_batch_checkpoint_does_not_step_the_epoch_scheduler_again(
    tmp_path, make_trainer
):
    """The epoch scheduler steps after the epoch's last batch (before its end hooks, where this file is written)."""

    def fit(ckpt_path=None):
        model = BoringModel()  # SGD with an epoch-interval StepLR(step_size=1, gamma=0.1)
        every_two = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_top_k=-1)
        trainer = make_trainer(
            max_epochs=2, limit_train_batches=2, limit_val_batches=0, callbacks=[every_two]
        )
        trainer.fit(model, ckpt_path=ckpt_path)
        return trainer

    reference = fit()
    assert reference.lr_scheduler_configs[0].scheduler.last_epoch == 2
    resumed = fit(
        tmp_path / "ckpts" / "epoch=0-step=2.ckpt"
    )  # written in the last batch's on_train_batch_end
    assert resumed.lr_scheduler_configs[0].scheduler.last_epoch == 2
    assert resumed.optimizers[0].param_groups[0]["lr"] == pytest.approx(
        reference.optimizers[0].param_groups[0]["lr"]
    )

"""Exact resume with two DDP processes (gloo on 127.0.0.1): each rank gets back its own RNG and data position."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
TIMEOUT = 150  # one distributed job; a hang fails the test instead of the suite

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    import fulmen as L
    from fulmen.callbacks import ModelCheckpoint

    mode, out_dir = sys.argv[1], sys.argv[2]
    ckpt = os.path.join(out_dir, "mid.ckpt")

    class Data(Dataset):
        def __init__(self):
            self.x = torch.randn(40, 8, generator=torch.Generator().manual_seed(5))
        def __len__(self):
            return 40
        def __getitem__(self, i):
            return self.x[i]

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 1))
        def setup(self, stage):
            torch.manual_seed(1000 + self.global_rank)  # each rank's dropout stream differs
        def training_step(self, batch, batch_idx):
            return self.net(batch).pow(2).mean()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        def train_dataloader(self):
            return DataLoader(Data(), batch_size=4, shuffle=True)  # a shuffling DistributedSampler per rank

    class SaveMidEpoch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                trainer.save_checkpoint(ckpt)  # saving changes nothing: this run goes on uninterrupted

    class SigtermOnRankZero(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_rank == 0 and trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # rank 1 never gets one

    class CountTorchSave(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.calls, real = [], torch.save
            torch.save = lambda *args, **kwargs: self.calls.append(1) or real(*args, **kwargs)
        def on_train_end(self, trainer, pl_module):
            with open(os.path.join(out_dir, f"saves-rank{trainer.global_rank}.txt"), "w") as f:
                f.write(str(len(self.calls)))

    callbacks = {"full": [SaveMidEpoch()], "resumed": [], "sigterm": [SigtermOnRankZero()],
                 "count": [CountTorchSave()]}[mode]
    if mode in ("sigterm", "count"):
        callbacks.append(ModelCheckpoint(dirpath=os.path.join(out_dir, "ckpts")))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, deterministic=True,
                        logger=False, enable_checkpointing=mode in ("sigterm", "count"), enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    model = Net()
    trainer.fit(model, ckpt_path=ckpt if mode == "resumed" else None)
    torch.save({k: v.clone() for k, v in model.state_dict().items()},
                   os.path.join(out_dir, f"{mode}-rank{trainer.global_rank}.pt"))
    """
)


def _run(tmp_path, mode):
    script = tmp_path / "ddp_resume.py"
    script.write_text(SCRIPT)
    env = {
        k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
    }
    env.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    env = {
        k: v for k, v in env.items() if k not in ("LOCAL_RANK", "NODE_RANK") and not k.startswith("SLURM_")
    }
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ddp_mid_epoch_resume_is_bit_identical_on_every_rank(tmp_path):
    _run(tmp_path, "full")  # saves mid.ckpt in epoch 1, then trains on to the end
    _run(tmp_path, "resumed")
    ckpt = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    assert len(ckpt["rng_states"]) == 2  # one per rank, and they differ
    assert not torch.equal(ckpt["rng_states"][0]["torch"], ckpt["rng_states"][1]["torch"])
    for rank in (0, 1):
        full = torch.load(tmp_path / f"full-rank{rank}.pt", weights_only=True)
        resumed = torch.load(tmp_path / f"resumed-rank{rank}.pt", weights_only=True)
        for key in full:
            assert torch.equal(full[key], resumed[key]), f"rank {rank}: {key} differs after resume"


@pytest.mark.slow
def test_ddp_sigterm_on_one_rank_saves_last_on_all_ranks_at_the_same_batch_and_exits_cleanly(tmp_path):
    proc = _run(tmp_path, "sigterm")  # returncode 0 on every process, no hang
    assert "SIGTERM received" in proc.stderr
    ckpt = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    # sent after step 2 on rank 0 only; the ranks agree at the next multiple of 8 batches: the next epoch's first
    assert ckpt["global_step"] == 6 and ckpt["loops"]["fit_loop"]["epoch_batches"] == 1
    assert len(ckpt["rng_states"]) == 2


@pytest.mark.slow
def test_ddp_checkpoint_is_one_torch_save_on_rank_zero_and_none_elsewhere(tmp_path):
    """As Lightning: the per-rank RNG states are gathered without pickling tensors (which calls torch.save)."""
    _run(tmp_path, "count")  # a checkpoint at each of the 2 epoch ends
    assert [(tmp_path / f"saves-rank{rank}.txt").read_text() for rank in (0, 1)] == ["2", "0"]
    ckpt = torch.load(tmp_path / "ckpts" / "epoch=1-step=10.ckpt", weights_only=True)
    assert len(ckpt["rng_states"]) == 2
    assert not torch.equal(ckpt["rng_states"][0]["torch"], ckpt["rng_states"][1]["torch"])

"""BackupAndRestore: rerunning the same code after a crash continues from the backup, exactly."""

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.callbacks import BackupAndRestore
from fulmen.demos import RandomDataset


class DropoutModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 16), nn.Dropout(0.3), nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):
        return self.net(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Crash(L.Callback):
    def __init__(self, at_batch):
        self.at_batch = at_batch
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.at_batch:
            raise RuntimeError("simulated crash")


class FirstStep(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


def _script(make_trainer, folder, extra_callbacks=()):
    """What the user's script does; rerunning it is all a crash recovery takes."""
    L.seed_everything(3, verbose=False)
    torch.manual_seed(3)
    data = RandomDataset(32, 40)
    model = DropoutModel()
    first = FirstStep()
    trainer = make_trainer(
        default_root_dir=folder,
        max_epochs=3,
        callbacks=[BackupAndRestore(every_n_train_steps=4), first, *extra_callbacks],
    )
    trainer.fit(model, DataLoader(data, batch_size=4, shuffle=True))
    return model, first.step


def test_rerun_after_crash_resumes_from_backup_and_matches_uninterrupted_run(tmp_path, make_trainer):
    reference, _ = _script(make_trainer, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _script(make_trainer, tmp_path / "run", [Crash(at_batch=15)])
    backup = tmp_path / "run" / "backup" / "backup.ckpt"
    assert torch.load(backup, weights_only=True)["global_step"] == 12
    resumed, first_step = _script(make_trainer, tmp_path / "run")
    assert first_step == 12
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert not backup.exists()  # a finished run leaves nothing to resume


def test_fresh_run_without_backup_starts_from_scratch(tmp_path, make_trainer):
    _, first_step = _script(make_trainer, tmp_path)
    assert first_step == 0
    assert not os.path.exists(tmp_path / "backup" / "backup.ckpt")

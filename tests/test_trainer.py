"""trainer.py: barebones, estimated_stepping_batches (loop behaviour: test_loops.py; flag checks: test_flags.py)."""

import pytest
import torch
from test_loops import Counting, CountingTwoBatches
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset


def test_barebones_disables_logger_progress_bar_summary_and_checkpointing(tmp_path):
    from fulmen.callbacks import ModelSummary, ProgressBar

    trainer = L.Trainer(default_root_dir=tmp_path, barebones=True, max_epochs=1, limit_train_batches=2)
    assert trainer.logger is None
    assert not [c for c in trainer.callbacks if isinstance(c, (ModelSummary, ProgressBar))]
    assert not [c for c in trainer.callbacks if "Checkpoint" in type(c).__name__]
    model = Counting(val_length=3)
    trainer.fit(model)
    assert model.train_steps == 2
    assert not list(tmp_path.iterdir())  # nothing was written


def test_estimated_stepping_batches(make_trainer):
    model = Counting(train_length=10)
    trainer = make_trainer(max_epochs=3, accumulate_grad_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.estimated_stepping_batches == 15


def test_estimated_stepping_batches_is_capped_by_max_steps(make_trainer):
    seen = []

    class Model(Counting):
        def configure_optimizers(self):
            seen.append(self.trainer.estimated_stepping_batches)
            return super().configure_optimizers()

    trainer = make_trainer(max_epochs=3, max_steps=7, limit_val_batches=0)
    trainer.fit(Model(train_length=10))
    assert seen == [7]


def test_barebones_skips_the_sanity_check(tmp_path):
    """Parity with Lightning 2.6: barebones=True runs no sanity check."""
    model = CountingTwoBatches()
    trainer = L.Trainer(default_root_dir=tmp_path, barebones=True, max_epochs=1)
    trainer.fit(model)
    assert model.sanity_steps == 0


def test_estimated_stepping_batches_is_an_int_that_onecyclelr_accepts(make_trainer) -> None:
    """Parity with Lightning 2.6: estimated_stepping_batches is an int, usable as OneCycleLR's total_steps."""

    class OneCycle(BoringModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            total = self.trainer.estimated_stepping_batches
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total),
                    "interval": "step",
                },
            }

    trainer = make_trainer(max_epochs=3)
    model = OneCycle()
    trainer.fit(model, DataLoader(RandomDataset(32, 64), batch_size=8))
    assert trainer.estimated_stepping_batches == 24
    assert isinstance(trainer.estimated_stepping_batches, int)
    assert trainer.global_step == 24


def test_estimated_stepping_batches_is_capped_by_max_steps_once_attached(make_trainer) -> None:
    """Parity with Lightning 2.6: once the model is attached, max_steps caps estimated_stepping_batches."""
    trainer = make_trainer(max_epochs=3, max_steps=10)
    model = BoringModel()
    trainer.fit_loop.explicit_train = DataLoader(RandomDataset(32, 64), batch_size=8)
    trainer._attach(model, None, "fit")
    assert trainer.estimated_stepping_batches == 10


@pytest.mark.parametrize("fn", ["fit", "validate", "test", "predict"])
def test_each_stage_starts_with_the_gradients_cleared(make_trainer, fn):
    """As Lightning, every run calls `zero_grad()` on the module before its loop: stale gradients are gone."""
    seen = []

    class Model(BoringModel):
        def on_train_start(self):
            seen.append(self.layer.weight.grad)

        on_validation_start = on_test_start = on_predict_start = on_train_start

    model = Model()
    model.layer.weight.grad = torch.ones_like(model.layer.weight)
    trainer = make_trainer(
        limit_train_batches=1, limit_val_batches=0, limit_test_batches=1, limit_predict_batches=1
    )
    getattr(trainer, fn)(model)
    assert seen == [None]

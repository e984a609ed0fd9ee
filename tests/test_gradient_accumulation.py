"""callbacks/gradient_accumulation.py: GradientAccumulationScheduler, its schedule and its checks."""

import pytest
from torch.utils.data import DataLoader

from fulmen.callbacks import GradientAccumulationScheduler, LambdaCallback
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import MisconfigurationException


def test_gradient_accumulation_scheduler_changes_steps_per_epoch(make_trainer):
    seen = []
    record = LambdaCallback(on_train_epoch_start=lambda t, m: seen.append(t.accumulate_grad_batches))
    model = BoringModel()
    model.train_dataloader = lambda: DataLoader(RandomDataset(32, 8), batch_size=2)  # 4 batches
    trainer = make_trainer(
        callbacks=[GradientAccumulationScheduler({1: 2, 2: 4}), record], max_epochs=3, limit_val_batches=0
    )
    trainer.fit(model)
    assert seen == [1, 2, 4]
    assert trainer.global_step == 4 + 2 + 1


def test_gradient_accumulation_scheduler_validates_schedule():
    with pytest.raises(MisconfigurationException, match="factor"):
        GradientAccumulationScheduler({0: 0})
    with pytest.raises(MisconfigurationException, match="epoch key"):
        GradientAccumulationScheduler({-1: 2})
    assert GradientAccumulationScheduler({3: 2}).get_accumulate_grad_batches(2) == 1


def test_gradient_accumulation_scheduler_conflicts_with_trainer_flag(make_trainer):
    trainer = make_trainer(
        callbacks=[GradientAccumulationScheduler({0: 2})], accumulate_grad_batches=3, limit_val_batches=0
    )
    with pytest.raises(MisconfigurationException, match="remove one"):
        trainer.fit(BoringModel())

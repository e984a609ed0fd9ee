"""callbacks/lr_finder.py: LearningRateFinder, training on with the suggested learning rate."""

import pytest
from test_batch_size_finder import SizedModel

from fulmen.callbacks import LearningRateFinder


def test_learning_rate_finder_callback_trains_with_suggestion(make_trainer):
    finder = LearningRateFinder(min_lr=1e-4, max_lr=1.0, num_training_steps=30)
    model = SizedModel(batch_size=8)
    trainer = make_trainer(callbacks=[finder], limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    suggested = finder.optimal_lr.suggestion()
    assert suggested is not None and 1e-4 <= suggested <= 1.0
    assert model.lr == pytest.approx(suggested)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(suggested)
    assert trainer.global_step == 2

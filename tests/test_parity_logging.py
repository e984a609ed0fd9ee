"""Behaviours checked against Lightning 2.6: where logging is allowed, per-dataloader results, metric reset."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fulmen.demos import BoringModel, RandomDataset


@pytest.mark.parametrize("hook", ["setup", "configure_optimizers"])
def test_logging_in_a_forbidden_hook_names_the_hook(make_trainer, hook):
    class Model(BoringModel):
        pass

    base = getattr(BoringModel, hook)

    def logging_hook(self, *args, **kwargs):
        self.log("x", 1.0)
        return base(self, *args, **kwargs)

    setattr(Model, hook, logging_hook)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(Exception, match=hook):
        trainer.fit(Model())


def test_add_dataloader_idx_false_keeps_each_key_in_its_own_dataloader_dict(make_trainer):
    class Model(BoringModel):
        def val_dataloader(self):
            return [DataLoader(RandomDataset(32, 2)), DataLoader(RandomDataset(32, 2))]

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log(f"v{dataloader_idx}", 1.0, add_dataloader_idx=False)

    results = make_trainer().validate(Model())
    assert results == [{"v0": 1.0}, {"v1": 1.0}]


def test_a_logged_torchmetrics_metric_is_reset_after_the_epoch(make_trainer):
    torchmetrics = pytest.importorskip("torchmetrics")

    class Model(BoringModel):
        def __init__(self):
            super().__init__()
            self.acc = torchmetrics.classification.BinaryAccuracy()

        def validation_step(self, batch, batch_idx):
            preds, target = batch
            self.acc(preds, target)
            self.log("acc", self.acc)

    def pairs(correct):
        target = torch.tensor([1.0 if c else 0.0 for c in correct])
        return DataLoader(TensorDataset(torch.ones(len(correct)), target), batch_size=3)

    model, trainer = Model(), make_trainer()
    assert trainer.validate(model, pairs([True, True, True, False])) == [{"acc": 0.75}]
    # a second run only sees its own data (fulmen: 0.5, the two runs accumulated)
    assert trainer.validate(model, pairs([False, False, True, False])) == [{"acc": 0.25}]

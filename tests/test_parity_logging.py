"""Behaviours checked against Lightning 2.6: where logging is allowed, per-dataloader results, metric reset."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset


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


def test_a_logged_metric_does_not_carry_sanity_check_batches_into_epoch_0(tmp_path) -> None:
    torchmetrics = pytest.importorskip("torchmetrics")
    from torch.utils.data import DataLoader, TensorDataset

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            self.acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")

        def training_step(self, batch, batch_idx):
            return self.lin(batch[0]).sum() * 0

        def validation_step(self, batch, batch_idx):
            x, y = batch
            preds = (1 - y) if self.trainer.sanity_checking else y  # wrong only during the sanity check
            self.acc.update(preds, y)
            self.log("val_acc", self.acc)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    dl = DataLoader(TensorDataset(x, y), batch_size=2)
    trainer = L.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(), dl, dl)
    assert float(trainer.callback_metrics["val_acc"]) == 1.0

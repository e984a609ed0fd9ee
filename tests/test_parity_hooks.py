"""Behaviours checked against Lightning 2.6: hook order with a datamodule, eval/train mode."""

import torch

import fulmen as L
from fulmen.demos import BoringModel


def test_model_is_in_eval_mode_during_validation_and_train_mode_during_training(make_trainer):
    modes = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            modes.append(("train", self.training, self.layer.training))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            modes.append(("val", self.training, self.layer.training))
            return super().validation_step(batch, batch_idx)

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(Model())
    assert modes == [("val", False, False), ("train", True, True), ("val", False, False)]


def test_model_is_in_eval_mode_in_validate_and_test(make_trainer):
    modes = []

    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            modes.append(self.training)

        def test_step(self, batch, batch_idx):
            modes.append(self.training)

    trainer = make_trainer(limit_val_batches=1, limit_test_batches=1)
    trainer.validate(Model())
    trainer.test(Model())
    assert modes == [False, False]


def test_datamodule_setup_and_teardown_run_before_the_callbacks(make_trainer):
    # Lightning 2.6 (trainer/call.py order, observed): datamodule, then callbacks, then module.
    # (LIGHTNING_FACTS.md says callbacks first; Lightning itself does not.)
    calls = []

    class DM(L.LightningDataModule):
        def setup(self, stage):
            calls.append("dm.setup")

        def teardown(self, stage):
            calls.append("dm.teardown")

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(2, 32))

    class Recorder(L.Callback):
        def setup(self, trainer, pl_module, stage):
            calls.append("cb.setup")

        def teardown(self, trainer, pl_module, stage):
            calls.append("cb.teardown")

    class Model(BoringModel):
        def setup(self, stage):
            calls.append("m.setup")

        def teardown(self, stage):
            calls.append("m.teardown")

    trainer = make_trainer(limit_val_batches=0, callbacks=[Recorder()])
    trainer.fit(Model(), datamodule=DM())
    assert calls == ["dm.setup", "cb.setup", "m.setup", "dm.teardown", "cb.teardown", "m.teardown"]


def test_steps_without_batch_idx_are_called_with_the_batch_only(make_trainer):
    # Lightning 2.6 passes batch_idx only to a step that takes it (its own GAN example has training_step(self, batch))
    from torch.utils.data import DataLoader

    from fulmen.demos import RandomDataset

    calls = []

    class Model(BoringModel):
        def training_step(self, batch):
            calls.append("train")
            return self.step(batch)

        def validation_step(self, batch):
            calls.append("val")

        def test_step(self, batch):
            calls.append("test")

        def predict_step(self, batch):
            calls.append("predict")
            return batch

    model = Model()
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model)
    trainer.test(model, DataLoader(RandomDataset(32, 1)), verbose=False)
    trainer.predict(model, DataLoader(RandomDataset(32, 1)))
    assert calls == ["train", "train", "val", "test", "predict"]

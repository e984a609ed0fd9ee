"""User mistakes are reported with a message that names the culprit."""

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset


def test_missing_training_step_names_it(make_trainer):
    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(32, 2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return DataLoader(RandomDataset(32, 4))

    with pytest.raises(Exception, match="training_step"):
        make_trainer(limit_train_batches=1).fit(Model())


def test_training_step_returning_a_string_names_it(make_trainer):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            return "a string"

    with pytest.raises(Exception, match="training_step"):
        make_trainer(limit_train_batches=1, limit_val_batches=0).fit(Model())


def test_training_step_dict_without_loss_names_the_key(make_trainer):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            return {"not_loss": self.step(batch)}

    with pytest.raises(Exception, match="loss"):
        make_trainer(limit_train_batches=1, limit_val_batches=0).fit(Model())


@pytest.mark.parametrize("garbage", ["adam", 42, {"lr": 0.1}])
def test_configure_optimizers_returning_garbage_names_it(make_trainer, garbage):
    class Model(BoringModel):
        def configure_optimizers(self):
            return garbage

    with pytest.raises(Exception, match="configure_optimizers"):
        make_trainer(limit_train_batches=1, limit_val_batches=0).fit(Model())


@pytest.mark.parametrize(
    ("hook", "run"),
    [
        ("train_dataloader", "fit"),
        ("predict_dataloader", "predict"),
        ("validation_step", "validate"),
        ("test_step", "test"),
    ],
)
def test_a_missing_hook_names_it(make_trainer, hook, run):
    class Model(BoringModel):
        pass

    setattr(Model, hook, getattr(L.LightningModule, hook))
    with pytest.raises(Exception, match=hook):
        getattr(make_trainer(), run)(Model())


def test_fit_with_a_plain_module_names_lightning_module(make_trainer):
    with pytest.raises(Exception, match="LightningModule"):
        make_trainer().fit(torch.nn.Linear(2, 2))


def test_bad_limit_train_batches_names_the_flag(tmp_path):
    with pytest.raises(Exception, match="limit_train_batches"):
        trainer = L.Trainer(default_root_dir=tmp_path, limit_train_batches=1.5, logger=False)
        trainer.fit(BoringModel())


def test_val_check_interval_larger_than_the_epoch_names_the_flag(make_trainer):
    trainer = make_trainer(limit_train_batches=2, val_check_interval=10)
    with pytest.raises(Exception, match="val_check_interval"):
        trainer.fit(BoringModel())

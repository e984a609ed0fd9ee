"""LightningModule properties: hyper-parameters, device, trainer, counters, print."""

import pytest
import torch

import fulmen as L
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


class WithHparams(BoringModel):
    def __init__(self, lr=0.1, hidden=4, net=None, name="boring"):
        super().__init__()
        self.save_hyperparameters()


def test_save_hyperparameters_captures_init_args_and_defaults():
    model = WithHparams(lr=0.5, hidden=8)
    assert dict(model.hparams) == {"lr": 0.5, "hidden": 8, "net": None, "name": "boring"}
    assert model.hparams.lr == 0.5
    assert model.hparams["hidden"] == 8


def test_save_hyperparameters_ignore():
    class Model(BoringModel):
        def __init__(self, lr=0.1, net=None, loss_fn=None):
            super().__init__()
            self.save_hyperparameters(ignore=["net", "loss_fn"])

    model = Model(lr=0.3, net=torch.nn.Linear(2, 2))
    assert dict(model.hparams) == {"lr": 0.3}


def test_save_hyperparameters_ignore_accepts_a_string():
    class Model(BoringModel):
        def __init__(self, lr=0.1, net=None):
            super().__init__()
            self.save_hyperparameters(ignore="net")

    assert dict(Model().hparams) == {"lr": 0.1}


def test_save_hyperparameters_with_selected_names():
    class Model(BoringModel):
        def __init__(self, lr=0.1, hidden=4, seed=0):
            super().__init__()
            self.save_hyperparameters("lr", "seed")

    assert dict(Model(hidden=9, seed=3).hparams) == {"lr": 0.1, "seed": 3}


def test_save_hyperparameters_from_a_dict():
    class Model(BoringModel):
        def __init__(self, config):
            super().__init__()
            self.save_hyperparameters(config)

    model = Model({"lr": 0.2, "layers": 3})
    assert model.hparams.lr == 0.2 and model.hparams.layers == 3


def test_hparams_is_empty_without_save_hyperparameters():
    assert len(BoringModel().hparams) == 0


def test_hparams_survive_fit(make_trainer):
    model = WithHparams(lr=0.25)
    make_trainer(limit_train_batches=1, limit_val_batches=0).fit(model)
    assert model.hparams.lr == 0.25


def test_device_is_cpu(make_trainer):
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append((self.device, batch.device))
            return super().training_step(batch, batch_idx)

    model = Model()
    assert model.device == torch.device("cpu")
    make_trainer(accelerator="cpu", limit_train_batches=1, limit_val_batches=0).fit(model)
    assert seen == [(torch.device("cpu"), torch.device("cpu"))]


def test_device_follows_to():
    model = BoringModel().to(torch.float64)
    assert model.device == torch.device("cpu")
    assert model.layer.weight.dtype == torch.float64


def test_trainer_property_during_fit(make_trainer):
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append(self.trainer)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    model = Model()
    trainer.fit(model)
    assert seen == [trainer]
    assert model.trainer is trainer


def test_trainer_property_without_a_trainer_is_an_error():
    with pytest.raises(RuntimeError, match="(?i)trainer"):
        _ = BoringModel().trainer


def test_current_epoch_and_global_step_inside_training_step(make_trainer):
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, self.global_step, batch_idx))
            return super().training_step(batch, batch_idx)

    model = Model()
    assert (model.current_epoch, model.global_step) == (0, 0)
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert seen == [(0, 0, 0), (0, 1, 1), (1, 2, 0), (1, 3, 1)]
    assert model.global_step == trainer.global_step == 4
    assert model.current_epoch == trainer.current_epoch == 2


def test_print_writes_to_stdout(make_trainer, capsys):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.print("hello from step", batch_idx)
            return super().training_step(batch, batch_idx)

    make_trainer(limit_train_batches=2, limit_val_batches=0).fit(Model())
    out = capsys.readouterr().out
    assert "hello from step 0" in out
    assert "hello from step 1" in out


def test_automatic_optimization_defaults_to_true_and_is_settable():
    model = BoringModel()
    assert model.automatic_optimization is True
    model.automatic_optimization = False
    assert model.automatic_optimization is False


def test_lightning_module_is_an_nn_module_and_forward_works():
    model = BoringModel()
    assert isinstance(model, torch.nn.Module)
    assert isinstance(model, L.LightningModule)
    assert model(torch.zeros(3, 32)).shape == (3, 2)


def test_trainer_attributes_exposed_on_trainer(make_trainer):
    seen = {}

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            trainer = self.trainer
            seen.update(
                training=trainer.training,
                lightning_module=trainer.lightning_module is self,
                max_epochs=trainer.max_epochs,
                num_training_batches=trainer.num_training_batches,
            )
            return super().training_step(batch, batch_idx)

    make_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0).fit(Model())
    assert seen == {
        "training": True,
        "lightning_module": True,
        "max_epochs": 1,
        "num_training_batches": 3,
    }


def test_validation_step_set_to_none_switches_validation_off(make_trainer):
    calls = []

    class NoValidation(BoringModel):
        def __init__(self):
            super().__init__()
            self.validation_step = None

        def val_dataloader(self):
            calls.append("val_dataloader")
            return super().val_dataloader()

    trainer = make_trainer(limit_train_batches=2, limit_val_batches=2)
    trainer.fit(NoValidation())
    assert trainer.global_step == 2
    assert calls == [] and trainer.enable_validation is False


def test_validate_with_validation_step_none_names_the_step(make_trainer):
    model = BoringModel()
    model.validation_step = None
    with pytest.raises(MisconfigurationException, match=r"validate\(\) needs `BoringModel.validation_step"):
        make_trainer().validate(model)


def test_fit_with_training_step_none_names_the_step(make_trainer):
    model = BoringModel()
    model.training_step = None
    with pytest.raises(MisconfigurationException, match=r"fit\(\) needs `BoringModel.training_step"):
        make_trainer().fit(model)

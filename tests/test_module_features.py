"""LightningModule features Lightning code relies on: toggled_optimizer, on_validation_model_zero_grad,
prepare_data_per_node, the CHECKPOINT_HYPER_PARAMS_* keys."""

import pytest
import torch
from torch import nn

import fulmen as L
from fulmen.demos import BoringDataModule, BoringModel


class TwoOptimizers(BoringModel):
    def __init__(self):
        super().__init__()
        self.other = nn.Linear(32, 2)
        self.automatic_optimization = False
        self.flags_inside = []

    def training_step(self, batch, batch_idx):
        first, second = self.optimizers()
        with self.toggled_optimizer(first):
            self.flags_inside.append((self.layer.weight.requires_grad, self.other.weight.requires_grad))
            loss = self.layer(batch).sum()
            self.manual_backward(loss)
            first.step()
            first.zero_grad()
        self.flags_inside.append((self.layer.weight.requires_grad, self.other.weight.requires_grad))

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1), torch.optim.SGD(
            self.other.parameters(), lr=0.1
        )


def test_toggled_optimizer_freezes_the_others_inside_the_block_only(make_trainer):
    model = TwoOptimizers()
    make_trainer(limit_train_batches=1, limit_val_batches=0).fit(model)
    assert model.flags_inside == [(True, False), (True, True)]


def test_toggled_optimizer_untoggles_on_error(make_trainer):
    model = TwoOptimizers()
    make_trainer(limit_train_batches=1, limit_val_batches=0).fit(model)
    first, _ = model.optimizers()
    with pytest.raises(RuntimeError, match="boom"), model.toggled_optimizer(first):
        raise RuntimeError("boom")
    assert model.other.weight.requires_grad


class GradsAtValidation(BoringModel):
    def __init__(self):
        super().__init__()
        self.grad_at_validation = []
        self.zero_grad_calls = 0

    def on_validation_model_zero_grad(self):
        self.zero_grad_calls += 1
        super().on_validation_model_zero_grad()

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.grad_at_validation.append(self.layer.weight.grad)
        return super().validation_step(batch, batch_idx)


def test_gradients_are_released_before_validation_during_fit(make_trainer):
    model = GradsAtValidation()
    trainer = make_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=1, val_check_interval=2)
    trainer.fit(model)
    # two validations inside fit (after batches 2 and 4), none in the sanity check
    assert model.zero_grad_calls == 2
    assert model.grad_at_validation[-2:] == [None, None]


def test_no_zero_grad_inside_an_accumulation_window(make_trainer):
    model = GradsAtValidation()
    trainer = make_trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        val_check_interval=1,
        accumulate_grad_batches=2,
        num_sanity_val_steps=0,
    )
    trainer.fit(model)
    assert model.zero_grad_calls == 2  # after batches 2 and 4 (window ends), not after 1 and 3


def _counting(base, per_node):
    """A `base()` (module or datamodule) whose prepare_data counts its calls in `prepared`."""

    class Counting(base):
        def prepare_data(self):
            self.prepared += 1

    counting = Counting()
    counting.prepare_data_per_node = per_node
    counting.prepared = 0
    return counting


@pytest.mark.parametrize(
    ("local", "global_", "per_node", "runs"),
    [(0, 0, True, 1), (0, 2, True, 1), (0, 2, False, 0), (1, 1, True, 0), (1, 1, False, 0), (0, 0, False, 1)],
)
def test_prepare_data_per_node(make_trainer, monkeypatch, local, global_, per_node, runs):
    monkeypatch.setattr(L.Trainer, "local_rank", property(lambda self: local))
    monkeypatch.setattr(L.Trainer, "global_rank", property(lambda self: global_))
    model, data = _counting(BoringModel, per_node), _counting(BoringDataModule, per_node)
    make_trainer(limit_train_batches=1, limit_val_batches=0).fit(model, datamodule=data)
    assert (model.prepared, data.prepared) == (runs, runs)


def test_prepare_data_per_node_defaults_to_true():
    assert BoringModel().prepare_data_per_node is True
    assert BoringDataModule().prepare_data_per_node is True


def test_checkpoint_hyper_params_keys_name_what_checkpoints_hold(tmp_path, make_trainer):
    class WithHparams(BoringModel):
        def __init__(self, width=3):
            super().__init__()
            self.save_hyperparameters()

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(WithHparams(width=5))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=False)
    assert ckpt[L.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY] == {"width": 5}
    assert L.LightningModule.CHECKPOINT_HYPER_PARAMS_NAME in ckpt
    assert L.LightningModule.CHECKPOINT_HYPER_PARAMS_TYPE == "hparams_type"
    assert L.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY == "datamodule_hyper_parameters"
    assert L.LightningDataModule.CHECKPOINT_HYPER_PARAMS_NAME == "datamodule_hparams_name"
    assert L.LightningDataModule.CHECKPOINT_HYPER_PARAMS_TYPE == "datamodule_hparams_type"

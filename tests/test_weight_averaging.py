"""WeightAveraging / EMAWeightAveraging: the average they keep, validation with it, checkpoints, resume."""

import pytest
import torch
from torch import nn

import fulmen as L
from fulmen.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint, WeightAveraging


class Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(3, 1)
        self.seen_in_validation = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class WeightRecorder(Callback):
    """The weights after every optimizer step (it runs before the averaging callback sees the batch end)."""

    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append(pl_module.layer.weight.detach().clone())


def test_swa_default_is_the_equal_weight_mean_of_the_weights_after_each_step(make_trainer, regression_data):
    recorder = WeightRecorder()
    model = Linear()
    trainer = make_trainer(max_epochs=2, limit_val_batches=0, callbacks=[recorder, WeightAveraging()])
    trainer.fit(model, regression_data())
    # the first update copies the weights, each later one folds them into an equal-weight mean
    expected = torch.stack(recorder.weights).mean(0)
    assert len(recorder.weights) == 8
    torch.testing.assert_close(model.layer.weight.detach(), expected)


def test_ema_follows_decay_from_the_first_step(make_trainer, regression_data):
    recorder = WeightRecorder()
    model = Linear()
    trainer = make_trainer(
        max_epochs=1, limit_val_batches=0, callbacks=[recorder, EMAWeightAveraging(decay=0.5)]
    )
    trainer.fit(model, regression_data())
    ema = recorder.weights[0]  # the first update copies the weights after step 1
    for w in recorder.weights[1:]:
        ema = 0.5 * ema + 0.5 * w
    torch.testing.assert_close(model.layer.weight.detach(), ema)


def test_ema_should_update_rules():
    ema = EMAWeightAveraging(update_every_n_steps=3, update_starting_at_step=6, update_starting_at_epoch=2)
    assert [s for s in range(12) if ema.should_update(step_idx=s)] == [6, 9]
    assert [e for e in range(4) if ema.should_update(epoch_idx=e)] == [2, 3]
    assert not EMAWeightAveraging().should_update(epoch_idx=5)  # no epoch updates unless asked


def test_validation_sees_the_average_and_training_resumes_with_its_own_weights(make_trainer, regression_data):
    class Check(Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            self.during = pl_module.layer.weight.detach().clone()

        def on_train_epoch_end(self, trainer, pl_module):
            self.after = pl_module.layer.weight.detach().clone()

    averaging = WeightAveraging()
    check = Check()
    model = Linear()
    trainer = make_trainer(
        max_epochs=1, num_sanity_val_steps=0, limit_val_batches=1, callbacks=[averaging, check]
    )
    trainer.fit(model, regression_data(), regression_data())
    average = averaging._average_model.module.layer.weight.detach()
    torch.testing.assert_close(model.seen_in_validation[0], average)
    assert not torch.equal(check.after, average)


def test_checkpoint_holds_the_average_as_state_dict_and_resume_restores_both(
    tmp_path, make_trainer, regression_data
):
    model = Linear()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    averaging = EMAWeightAveraging(decay=0.5)
    trainer = make_trainer(
        max_epochs=1, limit_val_batches=0, enable_checkpointing=True, callbacks=[averaging, ckpt]
    )
    trainer.fit(model, regression_data())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    average = averaging._average_model.module.layer.weight.detach()
    # the checkpoint was written at the epoch end, before on_train_end copied the average into the model
    torch.testing.assert_close(saved["state_dict"]["layer.weight"], average)
    assert "layer.weight" in saved["current_model_state"] and "n_averaged" in saved["averaging_state"]
    assert saved["callbacks"]["EMAWeightAveraging"] == {"latest_update_step": 4}

    resumed_avg = EMAWeightAveraging(decay=0.5)
    fresh = Linear()
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, callbacks=[resumed_avg])
    trainer.fit(
        fresh, regression_data(), ckpt_path=str(tmp_path / "last.ckpt")
    )  # nothing left to train: restores only
    torch.testing.assert_close(resumed_avg._average_model.module.layer.weight.detach(), average)
    assert resumed_avg._latest_update_step == 4


def test_the_averaged_copy_does_not_copy_the_trainer(make_trainer, regression_data):
    averaging = WeightAveraging(device="cpu")
    model = Linear()
    trainer = make_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[averaging])
    trainer.fit(model, regression_data())
    assert averaging._average_model.module._trainer is None
    assert model.trainer is trainer


@pytest.mark.parametrize("cls", [WeightAveraging, EMAWeightAveraging])
def test_loading_a_plain_checkpoint_starts_the_average_from_its_weights(
    tmp_path, make_trainer, cls, regression_data
):
    model = Linear()
    trainer = make_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, regression_data())
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    averaging = cls()
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, callbacks=[averaging])
    with pytest.warns(UserWarning, match="not written with"):
        trainer.fit(Linear(), regression_data(), ckpt_path=str(tmp_path / "plain.ckpt"))
    torch.testing.assert_close(
        averaging._average_model.module.layer.weight.detach(), model.layer.weight.detach()
    )

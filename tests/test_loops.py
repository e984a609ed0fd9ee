"""loops/: how long fit trains (max/min epochs and steps, should_stop, max_time), how much of each epoch
(limit_*_batches, fast_dev_run, overfit_batches), when it validates (val_check_interval,
check_val_every_n_epoch, sanity steps), and the modes evaluation and prediction put back."""

import time
import warnings
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader

from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import MisconfigurationException


class Counting(BoringModel):
    """Counts training steps, validation steps (sanity check apart) and epochs."""

    def __init__(self, train_length=64, val_length=64, batch_size=1):
        super().__init__()
        self.train_length, self.val_length, self.batch_size = train_length, val_length, batch_size
        self.train_steps = 0
        self.val_steps = 0
        self.sanity_steps = 0
        self.val_runs = 0
        self.epochs = 0
        self.batches_this_epoch = 0
        self.val_after_batch = []
        self.train_loader_calls = 0
        self.val_loader_calls = 0

    def train_dataloader(self):
        self.train_loader_calls += 1
        return DataLoader(RandomDataset(32, self.train_length), batch_size=self.batch_size)

    def val_dataloader(self):
        self.val_loader_calls += 1
        return DataLoader(RandomDataset(32, self.val_length), batch_size=self.batch_size)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_train_epoch_start(self):
        self.epochs += 1
        self.batches_this_epoch = 0

    def training_step(self, batch, batch_idx):
        self.train_steps += 1
        self.batches_this_epoch += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:
            self.sanity_steps += 1
        else:
            self.val_steps += 1

    def on_validation_epoch_start(self):
        if not self.trainer.sanity_checking:
            self.val_runs += 1
            self.val_after_batch.append((self.current_epoch, self.batches_this_epoch))


def test_max_epochs(make_trainer):
    model = Counting()
    trainer = make_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert model.epochs == 3
    assert trainer.current_epoch == 3
    assert trainer.global_step == 6


def test_max_steps_stops_mid_epoch(make_trainer):
    model = Counting(train_length=3)
    trainer = make_trainer(max_epochs=None, max_steps=5, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 5
    assert model.train_steps == 5
    assert model.epochs == 2


def test_max_epochs_defaults_to_1000_when_max_steps_is_unset(make_trainer):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            return None  # nothing to compute: the test only counts epochs

    trainer = make_trainer(max_epochs=None, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    assert trainer.current_epoch == 1000
    assert trainer.max_epochs == 1000


def test_max_epochs_minus_one_with_max_steps_trains_until_max_steps(make_trainer):
    model = Counting(train_length=2)
    trainer = make_trainer(max_epochs=-1, max_steps=7, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 7


class StopsAtOnce(Counting):
    def training_step(self, batch, batch_idx):
        self.trainer.should_stop = True
        return super().training_step(batch, batch_idx)


def test_should_stop_stops_training(make_trainer):
    model = StopsAtOnce(train_length=4)
    trainer = make_trainer(max_epochs=10, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 1
    assert model.epochs == 1


def test_min_steps_overrides_should_stop(make_trainer):
    model = StopsAtOnce(train_length=2)
    trainer = make_trainer(min_steps=5, max_epochs=10, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 5


@pytest.mark.parametrize("max_time", ["00:00:00:01", timedelta(seconds=1), {"seconds": 1}])
def test_max_time_stops_training(make_trainer, max_time):
    class Slow(Counting):
        def training_step(self, batch, batch_idx):
            time.sleep(0.1)
            return super().training_step(batch, batch_idx)

    model = Slow()
    trainer = make_trainer(max_epochs=1000, max_time=max_time, limit_val_batches=0)
    torch.optim.SGD(
        [torch.nn.Parameter(torch.zeros(1))], lr=0.1
    )  # torch's first optimizer imports dynamo (s)
    start = time.monotonic()
    trainer.fit(model)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 5.0
    assert 5 <= model.train_steps <= 20


@pytest.mark.parametrize(("limit", "expected"), [(5, 5), (0.25, 16), (1.0, 64)])
def test_limit_train_batches(make_trainer, limit, expected):
    model = Counting()
    trainer = make_trainer(limit_train_batches=limit, limit_val_batches=0)
    trainer.fit(model)
    assert model.train_steps == expected


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (0.5, 5), (0, 0)])
def test_limit_val_batches(make_trainer, limit, expected):
    model = Counting(val_length=10)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=limit, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.val_steps == expected


def test_limit_test_and_predict_batches(make_trainer):
    steps = {"test": 0}

    class Model(BoringModel):
        def test_step(self, batch, batch_idx):
            steps["test"] += 1

    trainer = make_trainer(limit_test_batches=0.25, limit_predict_batches=3)
    trainer.test(Model())
    assert steps["test"] == 16
    assert len(trainer.predict(Model())) == 3


def test_fast_dev_run_true_runs_one_batch_of_each(make_trainer):
    model = Counting()
    trainer = make_trainer(fast_dev_run=True, max_epochs=5)
    trainer.fit(model)
    assert (model.train_steps, model.val_steps, model.sanity_steps, model.epochs) == (1, 1, 0, 1)
    assert trainer.global_step == 1


def test_fast_dev_run_int_runs_n_batches(make_trainer):
    model = Counting()
    trainer = make_trainer(fast_dev_run=3, max_epochs=5)
    trainer.fit(model)
    assert (model.train_steps, model.val_steps, model.sanity_steps, model.epochs) == (3, 3, 0, 1)


def test_overfit_batches_reuses_the_same_batches_without_shuffling(make_trainer):
    seen = []

    class Model(Counting):
        def train_dataloader(self):
            return DataLoader(RandomDataset(32, 20), batch_size=2, shuffle=True)

        def training_step(self, batch, batch_idx):
            seen.append(batch.clone())
            return super().training_step(batch, batch_idx)

    model = Model()
    trainer = make_trainer(overfit_batches=2, max_epochs=3, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a warning about turning shuffling off is expected
        trainer.fit(model)
    assert len(seen) == 6
    for epoch in (1, 2):
        assert torch.equal(seen[2 * epoch], seen[0])
        assert torch.equal(seen[2 * epoch + 1], seen[1])
    assert model.val_steps == 6  # validation is limited to 2 batches too


def test_val_check_interval_fraction(make_trainer):
    model = Counting(train_length=4, val_length=1)
    trainer = make_trainer(max_epochs=2, val_check_interval=0.5, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.val_after_batch == [(0, 2), (0, 4), (1, 2), (1, 4)]


def test_val_check_interval_int(make_trainer):
    model = Counting(train_length=6, val_length=1)
    trainer = make_trainer(max_epochs=1, val_check_interval=2, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.val_after_batch == [(0, 2), (0, 4), (0, 6)]


def test_check_val_every_n_epoch(make_trainer):
    model = Counting(train_length=2, val_length=1)
    trainer = make_trainer(max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    trainer.fit(model)
    assert model.val_after_batch == [(1, 2), (3, 2)]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, 2),
        ({"num_sanity_val_steps": 0}, 0),
        ({"num_sanity_val_steps": 2}, 2),
        ({"num_sanity_val_steps": -1}, 5),
    ],
    ids=["defaults-to-two", "none", "two", "all"],
)
def test_num_sanity_val_steps(make_trainer, flags, expected):
    model = Counting(train_length=1, val_length=5)
    trainer = make_trainer(**flags)
    trainer.fit(model)
    assert model.sanity_steps == expected
    assert model.val_steps == 5


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode_flag_in_validate(make_trainer, inference_mode):
    seen = []

    class Model(Counting):
        def validation_step(self, batch, batch_idx):
            seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))

    trainer = make_trainer(inference_mode=inference_mode, limit_val_batches=1)
    trainer.validate(Model())
    assert seen == [(False, inference_mode)]


def test_validation_inside_fit_runs_without_grad(make_trainer):
    seen = []

    class Model(Counting):
        def validation_step(self, batch, batch_idx):
            seen.append(("val", torch.is_grad_enabled()))

        def training_step(self, batch, batch_idx):
            seen.append(("train", torch.is_grad_enabled()))
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(Model())
    assert seen == [("val", False), ("train", True), ("val", False)]


class IterableTrain(Counting):
    """Trains on an IterableDataset (no length) of 5 samples in batches of 2, logging val_loss."""

    def __init__(self):
        super().__init__()
        self.val_at = []  # (epoch, global_step) of each validation step

    def train_dataloader(self):
        from fulmen.demos import RandomIterableDataset

        return DataLoader(RandomIterableDataset(32, 5), batch_size=2)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch).sum())
        self.val_at.append((self.trainer.current_epoch, self.trainer.global_step))


def test_an_iterable_train_loader_validates_at_each_epoch_end(make_trainer, tmp_path):
    from fulmen.callbacks import ModelCheckpoint

    model = IterableTrain()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss")
    trainer = make_trainer(
        max_epochs=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_checkpointing=True,
        callbacks=[checkpoint],
    )
    trainer.fit(model)
    assert model.val_at == [(0, 3), (0, 3), (1, 6), (1, 6)]  # 3 batches per epoch, 2 val batches each
    assert trainer.val_check_batch == float("inf")
    saved = [p.name for p in (tmp_path / "ckpt").iterdir()]
    assert len(saved) == 1 and saved[0] in ("epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt")
    assert checkpoint.best_model_path == str(tmp_path / "ckpt" / saved[0])


def test_an_iterable_train_loader_validates_every_int_interval_only(make_trainer):
    model = IterableTrain()
    make_trainer(val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0).fit(model)
    assert model.val_at == [(0, 2)]


def test_a_fractional_val_check_interval_with_an_iterable_loader_is_rejected(make_trainer):
    with pytest.raises(
        MisconfigurationException, match=r"val_check_interval=0.5 is a fraction of an epoch.*no length"
    ):
        make_trainer(val_check_interval=0.5).fit(IterableTrain())


class StopsAtEpochEnd(Counting):
    def on_train_epoch_end(self):
        self.trainer.should_stop = True


@pytest.mark.parametrize(
    ("batches", "min_epochs", "min_steps", "stop_step"), [(3, 1, 10, 10), (5, 3, 10, 15)]
)
def test_an_early_stop_waits_for_min_steps_then_stops_mid_epoch(
    make_trainer, batches, min_epochs, min_steps, stop_step
):
    """Lightning keeps should_stop set until the minimum is met, then stops at that batch (not the epoch's end)."""
    model = StopsAtEpochEnd(train_length=batches)
    trainer = make_trainer(min_epochs=min_epochs, min_steps=min_steps, max_epochs=20, limit_val_batches=0)
    with pytest.warns(UserWarning, match="continues until min_epochs/min_steps"):
        trainer.fit(model)
    assert trainer.global_step == stop_step
    assert trainer.should_stop


class CountingTwoBatches(BoringModel):
    def __init__(self):
        super().__init__()
        self.steps = 0
        self.sanity_steps = 0
        self.train_loader_calls = 0
        self.val_loader_calls = 0

    def train_dataloader(self):
        self.train_loader_calls += 1
        return DataLoader(RandomDataset(32, 2))

    def val_dataloader(self):
        self.val_loader_calls += 1
        return DataLoader(RandomDataset(32, 2))

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:
            self.sanity_steps += 1


def test_min_epochs_runs_every_required_epoch_to_the_end(make_trainer):
    """Parity with Lightning 2.6: should_stop before min_epochs still runs each required epoch to its end."""

    class Model(CountingTwoBatches):
        def training_step(self, batch, batch_idx):
            self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

    model = Model()
    trainer = make_trainer(min_epochs=3, max_epochs=10, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.current_epoch == 3
    assert trainer.global_step == 6  # 3 whole epochs of 2 batches (fulmen: 5)


# fulmen used to reload the val loader once more than Lightning: (4, 5) and (2, 3)
@pytest.mark.parametrize(
    ("flags", "calls"),
    [
        ({}, (1, 1)),
        ({"reload_dataloaders_every_n_epochs": 1}, (4, 4)),
        ({"reload_dataloaders_every_n_epochs": 2}, (2, 2)),
    ],
    ids=["loaded-once-by-default", "every-epoch", "every-2-epochs"],
)
def test_reload_dataloaders_every_n_epochs_reloads_each_loader_once_per_n_epochs(make_trainer, flags, calls):
    """Parity with Lightning 2.6: each loader is requested once per n epochs, no extra val reload."""
    model = CountingTwoBatches()
    trainer = make_trainer(max_epochs=4, num_sanity_val_steps=0, **flags)
    trainer.fit(model)
    assert (model.train_loader_calls, model.val_loader_calls) == calls


def test_trainer_is_last_batch(make_trainer):
    """Parity with Lightning 2.6: trainer.is_last_batch is True at the epoch's last training batch only."""
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append(self.trainer.is_last_batch)
            return super().training_step(batch, batch_idx)

    make_trainer(limit_train_batches=3, limit_val_batches=0).fit(Model())
    assert seen == [False, False, True]


def test_limits_never_fetch_a_batch_past_the_limit(make_trainer) -> None:
    """Parity with Lightning 2.6: limit_*_batches and the sanity steps fetch no item past the limit."""
    fetched: list[int] = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 100

        def __getitem__(self, i: int) -> torch.Tensor:
            fetched.append(i)
            return torch.randn(32)

    class Model(BoringModel):
        def train_dataloader(self):
            return DataLoader(Counting(), batch_size=1)

        def val_dataloader(self):
            return DataLoader(Counting(), batch_size=1)

    trainer = make_trainer(limit_train_batches=4, limit_val_batches=3, num_sanity_val_steps=2)
    trainer.fit(Model())
    assert len(fetched) == 2 + 4 + 3  # sanity, train, validation: not one item more


def test_should_stop_mid_epoch_validates_the_final_weights(make_trainer) -> None:
    """Parity with Lightning 2.6: a mid-epoch should_stop runs one validation after the stopping step."""
    seen: list[tuple[int, int]] = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen.append((self.global_step, batch_idx))
            return super().validation_step(batch, batch_idx)

    trainer = make_trainer(max_epochs=2, limit_train_batches=10, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(Model())
    assert seen == [(3, 0), (3, 1)]  # as Lightning 2.6: one validation run after the stopping step


def test_predict_puts_the_model_back_in_train_mode(make_trainer):
    """Parity with Lightning 2.6: predict restores the train/eval mode it found."""
    model = BoringModel()
    make_trainer().predict(model, DataLoader(RandomDataset(32, 2)))
    assert model.training  # Lightning 2.6 restores the mode it found


class _FrozenBackbone(BoringModel):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.BatchNorm1d(32)
        self.backbone.eval()  # frozen: its running statistics must not move
        self.modes = []

    def forward(self, x):
        return self.layer(self.backbone(x))

    def training_step(self, batch, batch_idx):
        self.modes.append((self.training, self.backbone.training))
        return super().training_step(batch, batch_idx)


def test_validation_restores_each_submodules_own_mode(make_trainer):
    """Parity with Lightning 2.6: after validation each submodule gets its own mode back."""
    model = _FrozenBackbone()
    make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1).fit(model)
    assert model.modes == [(True, False)] * 4  # Lightning 2.6: the backbone stays in eval mode throughout
    assert model.training and not model.backbone.training


def test_an_overridden_model_train_hook_decides_instead(make_trainer):
    """Parity with Lightning 2.6: an overridden on_validation_model_train sets the modes instead."""

    class Model(_FrozenBackbone):
        def on_validation_model_train(self):
            self.train()

    model = Model()
    make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0).fit(model)
    assert model.modes == [(True, False), (True, False)]
    assert model.backbone.training  # the user's hook ran after the epoch's validation


def test_model_is_in_eval_mode_during_validation_and_train_mode_during_training(make_trainer):
    """Parity with Lightning 2.6: the module is in eval mode in validation and in train mode in training."""
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
    """Parity with Lightning 2.6: the module is in eval mode in validate and test."""
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


def test_val_check_interval_larger_than_the_epoch_names_the_flag(make_trainer):
    trainer = make_trainer(limit_train_batches=2, val_check_interval=10)
    with pytest.raises(Exception, match="val_check_interval"):
        trainer.fit(BoringModel())


@pytest.mark.parametrize("fn", ["validate", "test"])
def test_evaluation_limited_to_zero_batches_runs_nothing(make_trainer, fn):
    """As Lightning: no dataloader is asked for, no hook runs, and the result list is empty."""
    calls = []

    class Model(BoringModel):
        def val_dataloader(self):
            calls.append("val_dataloader")
            return super().val_dataloader()

        def test_dataloader(self):
            calls.append("test_dataloader")
            return super().test_dataloader()

        def on_validation_start(self):
            calls.append("on_validation_start")

        def on_test_start(self):
            calls.append("on_test_start")

    trainer = make_trainer(limit_val_batches=0, limit_test_batches=0)
    assert getattr(trainer, fn)(Model()) == []
    assert calls == []

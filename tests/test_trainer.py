"""trainer.py, the Trainer's flags: loop limits, validation schedule, dataloader limits, modes and flag errors."""

import time
import warnings
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
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


def test_deterministic_enables_torch_deterministic_algorithms(make_trainer):
    seen = []

    class Model(Counting):
        def training_step(self, batch, batch_idx):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().training_step(batch, batch_idx)

    try:
        trainer = make_trainer(deterministic=True, limit_train_batches=1, limit_val_batches=0)
        trainer.fit(Model())
    finally:
        torch.use_deterministic_algorithms(False)
    assert seen == [True]


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


def test_barebones_disables_logger_progress_bar_summary_and_checkpointing(tmp_path):
    from fulmen.callbacks import ModelSummary, ProgressBar

    trainer = L.Trainer(default_root_dir=tmp_path, barebones=True, max_epochs=1, limit_train_batches=2)
    assert trainer.logger is None
    assert not [c for c in trainer.callbacks if isinstance(c, (ModelSummary, ProgressBar))]
    assert not [c for c in trainer.callbacks if "Checkpoint" in type(c).__name__]
    model = Counting(val_length=3)
    trainer.fit(model)
    assert model.train_steps == 2
    assert not list(tmp_path.iterdir())  # nothing was written


def test_barebones_with_checkpointing_is_an_error(tmp_path):
    with pytest.raises(Exception, match="enable_checkpointing"):
        L.Trainer(default_root_dir=tmp_path, barebones=True, enable_checkpointing=True)


def test_estimated_stepping_batches(make_trainer):
    model = Counting(train_length=10)
    trainer = make_trainer(max_epochs=3, accumulate_grad_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.estimated_stepping_batches == 15


def test_estimated_stepping_batches_is_capped_by_max_steps(make_trainer):
    seen = []

    class Model(Counting):
        def configure_optimizers(self):
            seen.append(self.trainer.estimated_stepping_batches)
            return super().configure_optimizers()

    trainer = make_trainer(max_epochs=3, max_steps=7, limit_val_batches=0)
    trainer.fit(Model(train_length=10))
    assert seen == [7]


def test_unknown_flag_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="not_a_flag"):
        L.Trainer(not_a_flag=3)


def test_bad_accelerator_names_the_valid_ones():
    with pytest.raises(Exception, match="banana") as info:
        L.Trainer(accelerator="banana")
    assert "cpu" in str(info.value)


def test_bad_gradient_clip_algorithm_names_the_valid_ones():
    with pytest.raises(Exception, match="bogus") as info:
        L.Trainer(gradient_clip_algorithm="bogus")
    assert "norm" in str(info.value) and "value" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_a_clear_error():
    with pytest.raises(Exception, match="(?i)gpu|cuda"):
        L.Trainer(accelerator="gpu", devices=1)


# --- 1.x flags: fulmen maps them with a DeprecationWarning that names the 2.x spelling ---


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_legacy_gpus_flag_warns_then_fails_without_a_gpu():
    with pytest.warns(DeprecationWarning, match="accelerator") as record:
        with pytest.raises(Exception, match="(?i)gpu|cuda"):
            L.Trainer(gpus=1)
    message = " ".join(str(w.message) for w in record if w.category is DeprecationWarning)
    assert "devices" in message


def _construct_ignoring_errors(**kwargs):
    try:
        return L.Trainer(**kwargs)
    except Exception:  # e.g. no TPU here: only the warning matters to these tests
        return None


def test_legacy_tpu_cores_flag_warns():
    with pytest.warns(DeprecationWarning, match="tpu") as record:
        _construct_ignoring_errors(tpu_cores=8)
    message = " ".join(str(w.message) for w in record if w.category is DeprecationWarning)
    assert "accelerator" in message and "devices" in message


def test_legacy_ddp_accelerator_warns_naming_strategy():
    with pytest.warns(DeprecationWarning, match="strategy"):
        _construct_ignoring_errors(accelerator="ddp")


def test_legacy_resume_from_checkpoint_warns_naming_ckpt_path(tmp_path):
    with pytest.warns(DeprecationWarning, match="ckpt_path"):
        _construct_ignoring_errors(resume_from_checkpoint=str(tmp_path / "x.ckpt"))


def test_legacy_checkpoint_callback_warns_naming_enable_checkpointing(tmp_path):
    with pytest.warns(DeprecationWarning, match="enable_checkpointing"):
        _construct_ignoring_errors(default_root_dir=tmp_path, checkpoint_callback=False)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"max_epochs": "3"}, r"max_epochs='3' is not valid; use an int >= 0, or -1"),
        ({"max_epochs": 2.5}, r"max_epochs=2.5 is not valid"),
        ({"max_epochs": -2}, r"max_epochs=-2 is not valid"),
        ({"max_steps": "5"}, r"max_steps='5' is not valid"),
        ({"min_epochs": 1.5}, r"min_epochs=1.5 is not valid"),
        ({"check_val_every_n_epoch": 0}, r"check_val_every_n_epoch=0 is not valid; use an int >= 1, or None"),
    ],
)
def test_count_flags_reject_bad_values_naming_the_flag(flags, match):
    with pytest.raises(MisconfigurationException, match=match):
        L.Trainer(logger=False, **flags)


def test_an_integral_float_max_epochs_counts_as_an_int(make_trainer):
    model = Counting(train_length=4)
    trainer = make_trainer(max_epochs=2.0, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.max_epochs == 2 and trainer.current_epoch == 2


def test_scheduler_built_on_another_optimizer_is_rejected(make_trainer):
    class OtherOptimizer(BoringModel):
        def configure_optimizers(self):
            used = torch.optim.SGD(self.parameters(), lr=0.1)
            other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            return [used], [torch.optim.lr_scheduler.StepLR(other, step_size=1)]

    with pytest.raises(MisconfigurationException, match="StepLR, which was built on an optimizer it did not"):
        make_trainer(limit_train_batches=1).fit(OtherOptimizer())


@pytest.mark.parametrize("where", ["argument", "hook"])
def test_a_dataset_passed_as_a_dataloader_is_named(make_trainer, where):
    class DatasetFromHook(BoringModel):
        def train_dataloader(self):
            return RandomDataset(32, 4)

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    expected = "trainer.fit" if where == "argument" else r"DatasetFromHook.train_dataloader\(\)"
    with pytest.warns(
        UserWarning, match=expected + r".* gave a RandomDataset, a Dataset, where a DataLoader"
    ):
        if where == "argument":
            trainer.fit(BoringModel(), RandomDataset(32, 4))
        else:
            trainer.fit(DatasetFromHook())


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


def test_max_time_is_kept_by_a_timer_callback(make_trainer):
    from fulmen.callbacks import Timer

    trainer = make_trainer(max_time={"minutes": 5})
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert len(timers) == 1 and timers[0].time_remaining() == 300.0
    trainer.fit(Counting(train_length=4))
    assert 0 < timers[0].time_elapsed("train") < 300.0


def test_a_users_timer_replaces_the_one_max_time_would_add(make_trainer):
    from fulmen.callbacks import Timer

    mine = Timer(duration="00:00:01:00")
    trainer = make_trainer(max_time={"minutes": 5}, callbacks=[mine])
    assert [c for c in trainer.callbacks if isinstance(c, Timer)] == [mine]


def test_removing_the_timer_lifts_the_time_limit(make_trainer):
    from fulmen.callbacks import Timer

    trainer = make_trainer(max_time={"seconds": 0}, max_epochs=2, limit_val_batches=0)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, Timer)]
    trainer.fit(Counting(train_length=4))
    assert trainer.current_epoch == 2


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


@pytest.mark.parametrize("fn", ["fit", "validate", "test", "predict"])
def test_each_stage_starts_with_the_gradients_cleared(make_trainer, fn):
    """As Lightning, every run calls `zero_grad()` on the module before its loop: stale gradients are gone."""
    seen = []

    class Model(BoringModel):
        def on_train_start(self):
            seen.append(self.layer.weight.grad)

        on_validation_start = on_test_start = on_predict_start = on_train_start

    model = Model()
    model.layer.weight.grad = torch.ones_like(model.layer.weight)
    trainer = make_trainer(
        limit_train_batches=1, limit_val_batches=0, limit_test_batches=1, limit_predict_batches=1
    )
    getattr(trainer, fn)(model)
    assert seen == [None]

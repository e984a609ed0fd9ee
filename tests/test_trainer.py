"""trainer.py: the members Lightning users read (counts, state flags, init_module, print,
estimated_stepping_batches), barebones, and what every run does first.

Loop behaviour is in test_loops.py, flag checks in test_flags.py."""

import contextlib
import io

import pytest
import torch
from test_loops import Counting, CountingTwoBatches
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.callbacks import Callback, EarlyStopping
from fulmen.demos import BoringModel, RandomDataset


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


def test_barebones_skips_the_sanity_check(tmp_path):
    """Parity with Lightning 2.6: barebones=True runs no sanity check."""
    model = CountingTwoBatches()
    trainer = L.Trainer(default_root_dir=tmp_path, barebones=True, max_epochs=1)
    trainer.fit(model)
    assert model.sanity_steps == 0


def test_estimated_stepping_batches_is_an_int_that_onecyclelr_accepts(make_trainer) -> None:
    """Parity with Lightning 2.6: estimated_stepping_batches is an int, usable as OneCycleLR's total_steps."""

    class OneCycle(BoringModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            total = self.trainer.estimated_stepping_batches
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total),
                    "interval": "step",
                },
            }

    trainer = make_trainer(max_epochs=3)
    model = OneCycle()
    trainer.fit(model, DataLoader(RandomDataset(32, 64), batch_size=8))
    assert trainer.estimated_stepping_batches == 24
    assert isinstance(trainer.estimated_stepping_batches, int)
    assert trainer.global_step == 24


def test_estimated_stepping_batches_is_capped_by_max_steps_once_attached(make_trainer) -> None:
    """Parity with Lightning 2.6: once the model is attached, max_steps caps estimated_stepping_batches."""
    trainer = make_trainer(max_epochs=3, max_steps=10)
    model = BoringModel()
    trainer.fit_loop.explicit_train = DataLoader(RandomDataset(32, 64), batch_size=8)
    trainer._attach(model, None, "fit")
    assert trainer.estimated_stepping_batches == 10


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
    val_batches = 0 if fn == "fit" else 1  # fit: no sanity check, so on_train_start is the first hook here
    trainer = make_trainer(
        limit_train_batches=1, limit_val_batches=val_batches, limit_test_batches=1, limit_predict_batches=1
    )
    getattr(trainer, fn)(model)
    assert seen == [None]


def test_batch_counts_are_ints_per_dataloader(make_trainer):
    trainer = make_trainer(limit_train_batches=5, limit_val_batches=3, limit_test_batches=4)
    trainer.fit(BoringModel())
    assert trainer.num_training_batches == 5 and isinstance(trainer.num_training_batches, int)
    assert trainer.num_val_batches == [3]
    assert trainer.num_sanity_val_batches == [2]
    assert trainer.val_check_batch == 5 and isinstance(trainer.val_check_batch, int)
    trainer.test(BoringModel(), verbose=False)
    assert trainer.num_test_batches == [4]


def test_predict_dataloaders_and_batch_counts(make_trainer):
    trainer = make_trainer()
    assert trainer.predict_dataloaders is None and trainer.num_predict_batches == []
    loaders = [DataLoader(RandomDataset(32, 8), batch_size=2), DataLoader(RandomDataset(32, 6), batch_size=2)]
    trainer.predict(BoringModel(), loaders)
    assert trainer.predict_dataloaders == loaders
    assert trainer.num_predict_batches == [4, 3]
    trainer.predict(BoringModel(), loaders[0])
    assert trainer.predict_dataloaders is loaders[0]


def test_early_stopping_callbacks_lists_every_one(make_trainer):
    first, second = EarlyStopping("a"), EarlyStopping("b")
    trainer = make_trainer(callbacks=[first, second])
    assert trainer.early_stopping_callbacks == [first, second]


def test_evaluating_is_true_only_during_evaluation(make_trainer):
    seen = {}

    class Record(Callback):
        def on_train_start(self, trainer, module):
            seen["train"] = trainer.evaluating

        def on_validation_start(self, trainer, module):
            seen.setdefault("validation", trainer.evaluating)

    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1, callbacks=[Record()])
    assert trainer.evaluating is False
    trainer.fit(BoringModel())
    assert seen == {"train": False, "validation": True}


def test_interrupted_after_keyboard_interrupt(make_trainer):
    class Interrupt(Callback):
        def on_train_batch_end(self, trainer, *args):
            raise KeyboardInterrupt

    trainer = make_trainer(callbacks=[Interrupt()])
    assert trainer.interrupted is False
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(BoringModel())
    assert trainer.interrupted is True
    trainer.validate(BoringModel(), verbose=False)
    assert trainer.interrupted is False


def test_enable_validation_follows_validation_step_and_limit(make_trainer):
    trainer = make_trainer(limit_train_batches=1)
    trainer.fit(BoringModel())
    assert trainer.enable_validation is True
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.enable_validation is False


def test_scaler_sampler_kwargs_and_sigterm_defaults(make_trainer):
    trainer = make_trainer()
    assert trainer.scaler is None
    assert trainer.distributed_sampler_kwargs is None
    assert trainer.received_sigterm is False


def test_print_writes_on_rank_zero(make_trainer):
    trainer = make_trainer()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer.print("loss", 3, sep="=")
    assert out.getvalue() == "loss=3\n"


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [
        ("32-true", torch.float32),
        ("64-true", torch.float64),
        ("bf16-true", torch.bfloat16),
        ("16-true", torch.float16),
    ],
)
def test_init_module_creates_weights_in_the_precision_dtype(make_trainer, precision, dtype):
    trainer = make_trainer(precision=precision)
    with trainer.init_module():
        layer = torch.nn.Linear(2, 2)
    assert layer.weight.dtype == dtype
    assert torch.get_default_dtype() == torch.float32


def test_init_module_empty_init_skips_initialization(make_trainer):
    trainer = make_trainer()
    before = torch.random.get_rng_state()
    with trainer.init_module(empty_init=True):
        torch.nn.Linear(4, 4)
    assert torch.equal(before, torch.random.get_rng_state())  # no random initializer ran
    with trainer.init_module(empty_init=False):
        torch.nn.Linear(4, 4)
    assert not torch.equal(before, torch.random.get_rng_state())


def test_enable_autolog_hparams_false_logs_no_hyperparameters(make_trainer, tmp_path):
    from fulmen.loggers import CSVLogger

    class WithHparams(BoringModel):
        def __init__(self, lr=0.1):
            super().__init__()
            self.save_hyperparameters()

    logger = CSVLogger(tmp_path, name="run")
    make_trainer(logger=logger, limit_train_batches=1, limit_val_batches=0, enable_autolog_hparams=False).fit(
        WithHparams()
    )
    assert (tmp_path / "run" / "version_0" / "hparams.yaml").read_text().strip() == "{}"
    logger = CSVLogger(tmp_path, name="on")
    make_trainer(logger=logger, limit_train_batches=1, limit_val_batches=0).fit(WithHparams())
    assert "lr: 0.1" in (tmp_path / "on" / "version_0" / "hparams.yaml").read_text()


def test_model_registry_is_accepted_with_a_warning(make_trainer):
    with pytest.warns(UserWarning, match="model_registry"):
        trainer = make_trainer(model_registry="my-model")
    assert trainer.model_registry == "my-model"


def test_trainer_accepts_lightning_2_6_flags():
    trainer = L.Trainer(enable_autolog_hparams=True, model_registry=None, logger=False)
    assert trainer.enable_autolog_hparams is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_init_module_creates_weights_on_the_gpu(make_trainer):
    trainer = make_trainer(accelerator="gpu", devices=1, precision="bf16-true")
    with trainer.init_module():
        layer = torch.nn.Linear(2, 2)
    assert layer.weight.device.type == "cuda" and layer.weight.dtype == torch.bfloat16


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

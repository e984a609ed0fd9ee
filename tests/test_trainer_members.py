"""Trainer members Lightning users read (counts, state flags, init_module, print) and the flags they pass."""

import contextlib
import io

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.callbacks import Callback, EarlyStopping
from fulmen.demos import BoringModel, RandomDataset


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

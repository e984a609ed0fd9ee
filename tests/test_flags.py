"""flags.py: value checks that name the flag and the valid choices, the 1.x spellings mapped with a
DeprecationWarning naming the 2.x one, and the flags barebones refuses."""

import inspect

import pytest
import torch
from test_loops import Counting

import fulmen as L
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


def test_barebones_with_checkpointing_is_an_error(tmp_path):
    with pytest.raises(Exception, match="enable_checkpointing"):
        L.Trainer(default_root_dir=tmp_path, barebones=True, enable_checkpointing=True)


def test_unknown_flag_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="not_a_flag"):
        L.Trainer(not_a_flag=3)


def test_bad_gradient_clip_algorithm_names_the_valid_ones():
    with pytest.raises(Exception, match="bogus") as info:
        L.Trainer(gradient_clip_algorithm="bogus")
    assert "norm" in str(info.value) and "value" in str(info.value)


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
        ({"log_every_n_steps": -1}, r"log_every_n_steps=-1 is not valid; use an int >= 0"),
        ({"val_check_interval": 0}, r"val_check_interval=0 is not valid; use an int >= 1"),
        ({"val_check_interval": -2}, r"val_check_interval=-2 is not valid"),
        ({"accumulate_grad_batches": 2.5}, r"accumulate_grad_batches=2.5 is not valid; use an int >= 1"),
        ({"num_sanity_val_steps": -2}, r"num_sanity_val_steps=-2 is not valid; use an int >= 0, or -1"),
        ({"reload_dataloaders_every_n_epochs": -1}, r"reload_dataloaders_every_n_epochs=-1 is not valid"),
        ({"fast_dev_run": "yes"}, r"fast_dev_run='yes' is not valid; use True, False or an int >= 0"),
        ({"fast_dev_run": -1}, r"fast_dev_run=-1 is not valid"),
        ({"gradient_clip_val": -1.0}, r"gradient_clip_val=-1.0 is not valid; use a number >= 0"),
        ({"gradient_clip_val": "0.5"}, r"gradient_clip_val='0.5' is not valid"),
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


def test_bad_limit_train_batches_names_the_flag(tmp_path):
    with pytest.raises(Exception, match="limit_train_batches"):
        trainer = L.Trainer(default_root_dir=tmp_path, limit_train_batches=1.5, logger=False)
        trainer.fit(BoringModel())


def test_log_every_n_steps_zero_trains_and_sends_no_step_values(make_trainer, memory_logger):
    """Parity with Lightning 2.6: 0 turns step logging off instead of dividing by zero."""
    from fulmen.demos import BoringModel

    class Logs(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("loss", out["loss"], on_step=True, on_epoch=True)
            return out

    trainer = make_trainer(
        logger=memory_logger, log_every_n_steps=0, limit_train_batches=4, limit_val_batches=0
    )
    trainer.fit(Logs())
    assert trainer.global_step == 4
    assert memory_logger.values("loss_step") == []
    assert len(memory_logger.values("loss_epoch")) == 1


def test_run_length_flags_sets_exactly_the_attributes_the_trainer_declares():
    """`Trainer.__init__` copies `run_length_flags` into its attributes: the two lists of names must agree."""
    from fulmen import Trainer
    from fulmen.flags import run_length_flags

    defaults = {
        name: p.default
        for name, p in inspect.signature(Trainer.__init__).parameters.items()
        if name != "self"
    }
    assert set(run_length_flags(defaults)) == set(Trainer.__annotations__)

"""The run plan (plan.py) and its one lookup rule (utilities.overriding): hooks count however attached."""

from unittest import mock

import pytest
import torch

import fulmen as L
from fulmen.demos import BoringDataModule, BoringModel
from fulmen.utilities import is_overridden, overriding


class _Base:
    def hook(self):
        return "default"


class _Override(_Base):
    def hook(self):
        return "override"


def test_overriding_finds_class_override_bound_to_instance():
    obj = _Override()
    assert overriding("hook", obj, _Base)() == "override"


def test_overriding_finds_instance_attribute_before_class():
    obj = _Base()
    obj.hook = lambda: "instance"
    assert overriding("hook", obj, _Base)() == "instance"


def test_overriding_ignores_default_and_none_and_rebound_default():
    plain, gone, rebound = _Base(), _Override(), _Base()
    gone.hook = None
    rebound.hook = rebound.hook  # the default's bound method, stored on the instance
    assert [is_overridden("hook", o, _Base) for o in (plain, gone, rebound)] == [False, False, False]


def test_hooks_attached_in_setup_and_on_fit_start_run(make_trainer):
    calls = []

    class Attacher(L.Callback):
        def setup(self, trainer, pl_module, stage):
            pl_module.on_train_epoch_start = lambda: calls.append("from setup")
            pl_module.configure_model = lambda: calls.append("configure_model from setup")

        def on_fit_start(self, trainer, pl_module):
            self.on_train_batch_end = lambda *args: calls.append("from on_fit_start")

    class Model(BoringModel):
        def on_fit_start(self):
            self.on_train_end = lambda: calls.append("from the module's on_fit_start")

    make_trainer(callbacks=[Attacher()], limit_train_batches=2, limit_val_batches=0).fit(Model())
    assert calls == [
        "configure_model from setup",
        "from setup",
        "from on_fit_start",
        "from on_fit_start",
        "from the module's on_fit_start",
    ]


def test_hook_attached_in_configure_model_runs(make_trainer):
    calls = []

    class Model(BoringModel):
        def configure_model(self):
            self.on_fit_start = lambda: calls.append("on_fit_start")
            self.on_train_batch_start = lambda batch, batch_idx: calls.append(batch_idx)

    make_trainer(limit_train_batches=2, limit_val_batches=0).fit(Model())
    assert calls == ["on_fit_start", 0, 1]


def test_patched_step_hook_runs_and_turns_the_direct_step_off(make_trainer):
    model = BoringModel()
    trainer = make_trainer(limit_train_batches=3, limit_val_batches=0)
    with mock.patch.object(model, "on_before_backward") as hook:
        trainer.fit(model)
    assert hook.call_count == 3
    assert trainer._plan.direct_optimizer is None
    assert all(isinstance(c.args[0], torch.Tensor) for c in hook.call_args_list)


def test_default_fit_takes_the_direct_step(make_trainer):
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert isinstance(trainer._plan.direct_optimizer, torch.optim.Optimizer)


def test_datamodule_transfer_hook_assigned_on_instance_runs(make_trainer):
    dm = BoringDataModule()
    seen = []

    def after(batch, dataloader_idx):
        seen.append(dataloader_idx)
        return batch

    dm.on_after_batch_transfer = after
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=0)
    trainer.fit(BoringModel(), datamodule=dm)
    assert seen == [0, 0]
    assert trainer._plan.fast_transfer is False


def test_instance_clipping_hook_runs_before_each_step(make_trainer):
    model = BoringModel()
    steps = []
    model.configure_gradient_clipping = lambda optimizer, **kwargs: steps.append(kwargs)
    make_trainer(limit_train_batches=2, limit_val_batches=0).fit(model)
    assert steps == [{"gradient_clip_val": None, "gradient_clip_algorithm": "norm"}] * 2


def test_is_overridden_takes_lightnings_optional_instance_and_parent():
    """Lightning's signature: no instance is never overridden; the parent is inferred for its bases."""

    class Model(L.LightningModule):
        def training_step(self, batch, batch_idx):
            return None

    class Quiet(L.Callback):
        pass

    model, callback = Model(), Quiet()
    assert is_overridden("training_step", None) is False
    assert is_overridden("training_step", model) is True
    assert is_overridden("validation_step", model) is False
    assert is_overridden("on_train_start", callback) is False
    callback.on_train_start = lambda trainer, module: None
    assert is_overridden("on_train_start", callback) is True
    with pytest.raises(ValueError, match="pass `parent=`"):
        is_overridden("forward", object())

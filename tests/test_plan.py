"""The run plan (plan.py) and its one lookup rule (utilities.overriding): hooks count however attached."""

import functools
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
    assert (
        steps == [{"gradient_clip_val": None, "gradient_clip_algorithm": None}] * 2
    )  # the flags as given, as Lightning


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


def test_is_overridden_looks_through_wrappers_as_lightning_documents():
    """functools.wraps, partial and Mock(wraps=...) around the default are not overrides; a bare Mock neither."""
    model = BoringModel()
    default = model.on_train_start
    wrapped = functools.partial(lambda fn: fn(), default)
    functools.update_wrapper(wrapped, default)
    model.on_train_start = wrapped
    assert is_overridden("on_train_start", model) is False
    assert overriding("on_train_start", model, L.LightningModule) is wrapped  # the dispatch still calls it
    model.on_train_start = functools.partial(lambda: None)
    assert is_overridden("on_train_start", model) is True
    model.on_train_start = mock.Mock(wraps=default)
    assert is_overridden("on_train_start", model) is False
    model.on_train_start = mock.Mock(wraps=lambda: None)
    assert is_overridden("on_train_start", model) is True
    model.on_train_start = mock.Mock()
    assert is_overridden("on_train_start", model) is False


def test_datamodule_transfer_hook_wrapping_the_default_leaves_the_module_s(make_trainer):
    """As Lightning: the datamodule's transfer hook is used only when it is an override, not a wrapped default."""
    dm = BoringDataModule()
    seen = []

    def recorder(fn):
        @functools.wraps(fn)
        def record(*args):
            seen.append("dm")
            return fn(*args)

        return record

    dm.on_before_batch_transfer = recorder(dm.on_before_batch_transfer)

    class Model(BoringModel):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            seen.append("module")
            return batch

    make_trainer(limit_train_batches=2, limit_val_batches=0).fit(Model(), datamodule=dm)
    assert seen == ["module", "module"]


def test_resume_checkpoint_path_is_asked_only_of_callbacks_defining_it(make_trainer):
    """fulmen's own hook: a callback that wraps every Callback method sees no call Lightning would not make."""
    calls = []

    class Wrapping(L.Callback):
        def __init__(self):
            for name in ("resume_checkpoint_path", "on_train_start"):
                default = getattr(self, name)
                record = functools.partial(lambda n, fn, *a: calls.append(n) or fn(*a), name, default)
                setattr(self, name, functools.update_wrapper(record, default))

    make_trainer(callbacks=[Wrapping()], limit_train_batches=1, limit_val_batches=0).fit(BoringModel())
    assert calls == ["on_train_start"]


def test_steps_without_batch_idx_are_called_with_the_batch_only(make_trainer):
    """Parity with Lightning 2.6: a step that takes no batch_idx is called with the batch only."""
    # Lightning 2.6 passes batch_idx only to a step that takes it (its own GAN example has training_step(self, batch))
    from torch.utils.data import DataLoader

    from fulmen.demos import RandomDataset

    calls = []

    class Model(BoringModel):
        def training_step(self, batch):
            calls.append("train")
            return self.step(batch)

        def validation_step(self, batch):
            calls.append("val")

        def test_step(self, batch):
            calls.append("test")

        def predict_step(self, batch):
            calls.append("predict")
            return batch

    model = Model()
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model)
    trainer.test(model, DataLoader(RandomDataset(32, 1)), verbose=False)
    trainer.predict(model, DataLoader(RandomDataset(32, 1)))
    assert calls == ["train", "train", "val", "test", "predict"]

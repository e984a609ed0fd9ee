"""hooks.py and the loops: the exact order in which Trainer calls module and callback hooks (Lightning 2.x)."""

import contextlib
from unittest import mock

import pytest
import torch

import fulmen as L
from fulmen.demos import BoringModel

CALLBACK_HOOKS = [
    "setup",
    "teardown",
    "on_fit_start",
    "on_fit_end",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_start",
    "on_validation_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_start",
    "on_test_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_start",
    "on_predict_end",
    "on_predict_epoch_start",
    "on_predict_epoch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
]

MODULE_HOOKS = [
    *(name for name in CALLBACK_HOOKS if "sanity" not in name),
    "configure_callbacks",
    "prepare_data",
    "configure_model",
    "configure_optimizers",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "training_step",
    "validation_step",
    "test_step",
    "predict_step",
    "optimizer_zero_grad",
    "backward",
    "configure_gradient_clipping",
    "optimizer_step",
]


def _entry(owner, name, args, kwargs):
    if name in ("setup", "teardown"):
        stage = kwargs.get("stage", args[-1] if args else None)
        stage = getattr(stage, "value", stage)  # a str enum is fine too
        return f"{owner}.{name}({stage})"
    return f"{owner}.{name}"


# The same hooks, recorded three ways: overridden on a subclass, assigned on the instance, and patched
# with unittest.mock.patch.object. A user's hook runs whichever way it was attached (issue 10).
WAYS = ("class", "instance", "patch")


def _attach(obj, name, make_hook, way, patches):
    """Attach the recording hook `name` to `obj` (or its class) the given way."""
    if way == "class":
        setattr(type(obj), name, make_hook())
    elif way == "instance":
        hook = make_hook()
        setattr(obj, name, lambda *args, **kwargs: hook(obj, *args, **kwargs))
    else:
        hook = make_hook()
        patches.enter_context(
            mock.patch.object(obj, name, side_effect=lambda *args, **kwargs: hook(obj, *args, **kwargs))
        )


def _recording_callback(calls, way="class", patches=None):
    class Recorder(L.Callback):
        pass

    recorder = Recorder()
    for name in CALLBACK_HOOKS:

        def make_hook(_name=name):
            def hook(self, *args, **kwargs):
                calls.append(_entry("cb", _name, args, kwargs))
                return getattr(L.Callback, _name)(self, *args, **kwargs)

            return hook

        _attach(recorder, name, make_hook, way, patches)
    return recorder


def _recording_model(calls, way="class", patches=None):
    class Recorded(BoringModel):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch)

    model = Recorded()
    for name in MODULE_HOOKS:
        base = getattr(Recorded, name)

        def make_hook(_name=name, _base=base):
            def hook(self, *args, **kwargs):
                # every hook, including backward/optimizer_step/... calls the parent implementation
                calls.append(_entry("m", _name, args, kwargs))
                return _base(self, *args, **kwargs)

            return hook

        _attach(model, name, make_hook, way, patches)
    return model


def _pair(name):
    return [f"cb.{name}", f"m.{name}"]


TRANSFER = ["m.on_before_batch_transfer", "m.transfer_batch_to_device", "m.on_after_batch_transfer"]


def _eval_batch(stage):
    return [
        *TRANSFER,
        *_pair(f"on_{stage}_batch_start"),
        f"m.{stage}_step",
        *_pair(f"on_{stage}_batch_end"),
    ]


def _eval_epoch(stage, n_batches):
    batches = []
    for _ in range(n_batches):
        batches += _eval_batch(stage)
    return [
        *_pair(f"on_{stage}_start"),
        *_pair(f"on_{stage}_epoch_start"),
        *batches,
        *_pair(f"on_{stage}_epoch_end"),
        *_pair(f"on_{stage}_end"),
    ]


TRAIN_BATCH = [
    *TRANSFER,
    *_pair("on_train_batch_start"),
    # Lightning calls optimizer_step(closure); the closure runs the step and backward.
    "m.optimizer_step",
    "m.training_step",
    *_pair("on_before_zero_grad"),
    "m.optimizer_zero_grad",
    *_pair("on_before_backward"),
    "m.backward",
    *_pair("on_after_backward"),
    *_pair("on_before_optimizer_step"),
    "m.configure_gradient_clipping",
    *_pair("on_train_batch_end"),
]


def _run(make_trainer, fn, way="class", **trainer_kwargs):
    calls = []
    with contextlib.ExitStack() as patches:
        model = _recording_model(calls, way, patches)
        trainer = make_trainer(callbacks=[_recording_callback(calls, way, patches)], **trainer_kwargs)
        getattr(trainer, fn)(model)
    return calls


@pytest.mark.parametrize("way", WAYS)
def test_fit_hook_order(make_trainer, way):
    calls = _run(
        make_trainer,
        "fit",
        way,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
    )
    expected = [
        "m.configure_callbacks",
        "m.prepare_data",
        "cb.setup(fit)",
        "m.setup(fit)",
        "m.configure_model",
        "m.configure_optimizers",
        *_pair("on_fit_start"),
        "cb.on_sanity_check_start",
        "m.val_dataloader",
        *_eval_epoch("validation", 1),
        "cb.on_sanity_check_end",
        "m.train_dataloader",
        *_pair("on_train_start"),
        *_pair("on_train_epoch_start"),
        *TRAIN_BATCH,
        *TRAIN_BATCH,
        *_eval_epoch("validation", 1),
        *_pair("on_train_epoch_end"),
        *_pair("on_train_end"),
        *_pair("on_fit_end"),
        "cb.teardown(fit)",
        "m.teardown(fit)",
    ]
    assert calls == expected


def test_fit_without_sanity_check_skips_sanity_hooks(make_trainer):
    calls = _run(
        make_trainer,
        "fit",
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    assert "cb.on_sanity_check_start" not in calls
    assert "cb.on_sanity_check_end" not in calls
    # validation runs once, at the end of the epoch, before on_train_epoch_end
    assert calls.count("m.validation_step") == 1
    assert calls.index("m.validation_step") < calls.index("m.on_train_epoch_end")
    assert calls.index("m.training_step") < calls.index("m.validation_step")


def test_two_epochs_repeat_epoch_hooks(make_trainer):
    calls = _run(
        make_trainer,
        "fit",
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    assert calls.count("m.on_train_epoch_start") == 2
    assert calls.count("m.on_train_epoch_end") == 2
    assert calls.count("m.on_train_start") == 1
    assert calls.count("m.configure_optimizers") == 1
    assert calls.count("m.training_step") == 2


@pytest.mark.parametrize("way", WAYS)
def test_validate_hook_order(make_trainer, way):
    calls = _run(make_trainer, "validate", way, limit_val_batches=2)
    expected = [
        "m.configure_callbacks",
        "m.prepare_data",
        "cb.setup(validate)",
        "m.setup(validate)",
        "m.configure_model",
        "m.val_dataloader",
        *_eval_epoch("validation", 2),
        "cb.teardown(validate)",
        "m.teardown(validate)",
    ]
    assert calls == expected


@pytest.mark.parametrize("way", WAYS)
def test_test_hook_order(make_trainer, way):
    calls = _run(make_trainer, "test", way, limit_test_batches=2)
    expected = [
        "m.configure_callbacks",
        "m.prepare_data",
        "cb.setup(test)",
        "m.setup(test)",
        "m.configure_model",
        "m.test_dataloader",
        *_eval_epoch("test", 2),
        "cb.teardown(test)",
        "m.teardown(test)",
    ]
    assert calls == expected


@pytest.mark.parametrize("way", WAYS)
def test_predict_hook_order(make_trainer, way):
    calls = _run(make_trainer, "predict", way, limit_predict_batches=2)
    expected = [
        "m.configure_callbacks",
        "m.prepare_data",
        "cb.setup(predict)",
        "m.setup(predict)",
        "m.configure_model",
        "m.predict_dataloader",
        *_eval_epoch("predict", 2),
        "cb.teardown(predict)",
        "m.teardown(predict)",
    ]
    assert calls == expected


def test_manual_optimization_hooks_fire_from_manual_backward_and_step(make_trainer):
    calls = []

    class Manual(BoringModel):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def training_step(self, batch, batch_idx):
            calls.append("training_step")
            opt = self.optimizers()
            opt.zero_grad()
            calls.append("before manual_backward")
            self.manual_backward(self.step(batch))
            calls.append("before opt.step")
            opt.step()
            calls.append("after opt.step")

        def on_before_backward(self, loss):
            calls.append("on_before_backward")

        def backward(self, loss, *args, **kwargs):
            calls.append("backward")
            super().backward(loss, *args, **kwargs)

        def on_after_backward(self):
            calls.append("on_after_backward")

        def on_before_optimizer_step(self, optimizer):
            calls.append("on_before_optimizer_step")

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Manual())
    assert calls == [
        "training_step",
        "before manual_backward",
        "on_before_backward",
        "backward",
        "on_after_backward",
        "before opt.step",
        "on_before_optimizer_step",
        "after opt.step",
    ]
    assert trainer.global_step == 1


def test_checkpoint_and_early_stopping_declare_they_run_after_the_module():
    from fulmen.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint

    assert Checkpoint.runs_after_module_epoch_end and ModelCheckpoint.runs_after_module_epoch_end
    assert EarlyStopping.runs_after_module_epoch_end and not L.Callback.runs_after_module_epoch_end


def test_declared_monitoring_callback_runs_epoch_end_after_the_module(make_trainer):
    calls = []

    class Judge(L.Callback):
        runs_after_module_epoch_end = True

        def on_train_epoch_end(self, trainer, pl_module):
            calls.append("judge")

    class Plain(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            calls.append("plain")

    class Model(BoringModel):
        def on_train_epoch_end(self):
            calls.append("module")

    trainer = make_trainer(callbacks=[Judge(), Plain()], limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    assert calls == ["plain", "module", "judge"]

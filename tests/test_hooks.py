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


def _attach(obj, name, hook, way, patches):
    """Attach `hook` (a function of self) as `obj.<name>` the given way."""
    if way == "class":
        setattr(type(obj), name, hook)
    elif way == "instance":
        setattr(obj, name, lambda *args, **kwargs: hook(obj, *args, **kwargs))
    else:
        patches.enter_context(
            mock.patch.object(obj, name, side_effect=lambda *args, **kwargs: hook(obj, *args, **kwargs))
        )


def _record(obj, owner, names, calls, way, patches):
    """Attach to `obj`, the given way, a hook per name that appends "<owner>.<name>" to `calls` and then runs
    the class's own implementation (so backward, optimizer_step, ... still do their work)."""
    for name in names:
        _attach(obj, name, _recording_hook(calls, owner, name, getattr(type(obj), name)), way, patches)
    return obj


def _recording_hook(calls, owner, name, base):
    def hook(self, *args, **kwargs):
        calls.append(_entry(owner, name, args, kwargs))
        return base(self, *args, **kwargs)

    return hook


def _recording_callback(calls, way="class", patches=None):
    class Recorder(L.Callback):
        pass

    return _record(Recorder(), "cb", CALLBACK_HOOKS, calls, way, patches)


def _recording_model(calls, way="class", patches=None):
    class Recorded(BoringModel):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch)

    return _record(Recorded(), "m", MODULE_HOOKS, calls, way, patches)


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


def _expected(fn, body):
    """The full call list of `trainer.<fn>(model)`: setup, `body`, teardown."""
    return [
        "m.configure_callbacks",
        "m.prepare_data",
        f"cb.setup({fn})",
        f"m.setup({fn})",
        "m.configure_model",
        *body,
        f"cb.teardown({fn})",
        f"m.teardown({fn})",
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
    expected = _expected(
        "fit",
        [
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
        ],
    )
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


# trainer method -> (stage in the hook names, the dataloader hook, the batch-limit flag)
EVALUATIONS = {
    "validate": ("validation", "val_dataloader", "limit_val_batches"),
    "test": ("test", "test_dataloader", "limit_test_batches"),
    "predict": ("predict", "predict_dataloader", "limit_predict_batches"),
}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("fn", list(EVALUATIONS))
def test_evaluation_hook_order(make_trainer, fn, way):
    stage, dataloader_hook, limit = EVALUATIONS[fn]
    calls = _run(make_trainer, fn, way, **{limit: 2})
    assert calls == _expected(fn, [f"m.{dataloader_hook}", *_eval_epoch(stage, 2)])


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

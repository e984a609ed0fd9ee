"""trainer.state and the stage flags at every hook, as Lightning 2.6 reports them (observed with its Trainer)."""

import pytest
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset
from fulmen.states import RunningStage, TrainerFn, TrainerState, TrainerStatus

# hook -> (training, validating, testing, predicting, sanity_checking, stage), for each Trainer method
_T = (True, False, False, False, False, "train")
_V = (False, True, False, False, False, "validate")
_S = (False, False, False, False, True, "sanity_check")
_TE = (False, False, True, False, False, "test")
_P = (False, False, False, True, False, "predict")

FIT_SANITY = {
    "setup": _T,
    "on_fit_start": _T,
    "on_sanity_check_start": _S,
    "on_validation_start": _S,
    "on_validation_batch_start": _S,
    "on_validation_end": _S,
    "on_sanity_check_end": _S,
    "on_train_start": _T,
    "on_train_epoch_start": _T,
    "on_train_batch_start": _T,
    "on_train_epoch_end": _T,
    "on_train_end": _T,
    "on_fit_end": _T,
    "teardown": _T,
}
FIT_NO_SANITY = {
    **FIT_SANITY,
    "on_validation_start": _V,
    "on_validation_batch_start": _V,
    "on_validation_end": _V,
}
for _hook in ("on_sanity_check_start", "on_sanity_check_end"):
    del FIT_NO_SANITY[_hook]


class _Recorder(L.Callback):
    """Records the flags at the first call of each hook."""

    def __init__(self, hooks):
        self.seen = {}
        for hook in hooks:
            setattr(self, hook, self._make(hook))

    def _make(self, hook):
        def record(trainer, *args, **kwargs):
            state = trainer.state
            assert state.status == TrainerStatus.RUNNING
            assert not state.finished
            self.seen.setdefault(
                hook,
                (
                    trainer.training,
                    trainer.validating,
                    trainer.testing,
                    trainer.predicting,
                    trainer.sanity_checking,
                    state.stage,
                ),
            )

        return lambda trainer, *args, **kwargs: record(trainer)


def _loader():
    return DataLoader(RandomDataset(32, 8), batch_size=2)


def _run(make_trainer, method, expected, **flags):
    recorder = _Recorder(expected)
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=2, callbacks=[recorder], **flags)
    getattr(trainer, method)(BoringModel(), _loader(), *([_loader()] if method == "fit" else []))
    return trainer, recorder.seen


@pytest.mark.parametrize("sanity", [2, 0])
def test_flags_at_every_fit_hook(make_trainer, sanity):
    expected = FIT_SANITY if sanity else FIT_NO_SANITY
    trainer, seen = _run(make_trainer, "fit", expected, num_sanity_val_steps=sanity)
    assert seen == expected
    assert trainer.state.fn is TrainerFn.FITTING


@pytest.mark.parametrize(
    ("method", "flags", "hooks"),
    [
        ("validate", _V, ["setup", "on_validation_start", "on_validation_batch_start", "teardown"]),
        ("test", _TE, ["setup", "on_test_start", "on_test_batch_start", "on_test_end", "teardown"]),
        (
            "predict",
            _P,
            ["setup", "on_predict_start", "on_predict_batch_start", "on_predict_end", "teardown"],
        ),
    ],
)
def test_flags_at_every_evaluation_hook(make_trainer, method, flags, hooks):
    expected = dict.fromkeys(hooks, flags)
    trainer, seen = _run(make_trainer, method, expected)
    assert seen == expected
    assert trainer.state.fn == method


@pytest.mark.parametrize("method", ["fit", "validate", "test", "predict"])
def test_after_a_run_the_state_is_finished_with_no_stage(make_trainer, method):
    trainer, _ = _run(make_trainer, method, {})
    assert trainer.state.status is TrainerStatus.FINISHED
    assert trainer.state.finished and not trainer.state.stopped
    assert trainer.state.stage is None
    assert not (trainer.training or trainer.validating or trainer.testing or trainer.predicting)


def test_after_an_exception_the_state_is_interrupted(make_trainer):
    class Failing(BoringModel):
        def training_step(self, batch, batch_idx):
            raise ValueError("boom")

    seen = {}

    class OnException(L.Callback):
        def on_exception(self, trainer, module, exc):
            seen["during"] = (trainer.state.status, trainer.state.stage, trainer.training)

    trainer = make_trainer(callbacks=[OnException()])
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(Failing(), _loader())
    assert seen["during"] == (TrainerStatus.INTERRUPTED, RunningStage.TRAINING, True)
    assert trainer.state.status is TrainerStatus.INTERRUPTED
    assert trainer.state.stopped and not trainer.state.finished
    assert trainer.state.stage is None


def test_a_new_trainer_is_initializing():
    trainer = L.Trainer(logger=False, enable_progress_bar=False)
    assert trainer.state == TrainerState(TrainerStatus.INITIALIZING, None, None)
    assert not trainer.training and not trainer.sanity_checking


def test_setup_gets_the_trainer_fn_enum(make_trainer):
    stages = []

    class Model(BoringModel):
        def setup(self, stage):
            stages.append(stage)

    make_trainer().test(Model(), _loader(), verbose=False)
    assert stages == ["test"]
    assert type(stages[0]) is TrainerFn


def test_stage_flag_setters_switch_the_stage(make_trainer):
    trainer = make_trainer()
    trainer.validating = True
    assert trainer.state.stage is RunningStage.VALIDATING
    trainer.training = False  # not the current stage: nothing changes
    assert trainer.state.stage is RunningStage.VALIDATING
    trainer.validating = False
    assert trainer.state.stage is None


def test_enums_are_strings_that_compare_case_insensitively():
    assert isinstance(TrainerFn.FITTING, str)
    assert TrainerFn.FITTING == "fit" and TrainerFn.FITTING == "FIT"
    assert {"fit": 1}[TrainerFn.FITTING] == 1
    assert TrainerFn.FITTING != TrainerFn.VALIDATING
    assert str(TrainerFn.FITTING) == "TrainerFn.FITTING" == f"{TrainerFn.FITTING}"
    assert TrainerFn.from_str("fitting") is TrainerFn.FITTING
    with pytest.raises(ValueError, match="TrainerFn"):
        TrainerFn.from_str("nope")


def test_running_stage_properties():
    assert RunningStage.SANITY_CHECKING.evaluating and not RunningStage.TRAINING.evaluating
    assert RunningStage.SANITY_CHECKING.dataloader_prefix == "val"
    assert RunningStage.VALIDATING.dataloader_prefix == "val"
    assert RunningStage.TESTING.dataloader_prefix == "test"
    assert TrainerStatus.FINISHED.stopped and not TrainerStatus.RUNNING.stopped


def test_hooks_assigned_on_a_callback_instance_run(make_trainer):
    calls = []
    callback = L.Callback()
    callback.on_fit_start = lambda trainer, module: calls.append(trainer.state.fn)
    make_trainer(callbacks=[callback], limit_train_batches=1).fit(BoringModel(), _loader())
    assert calls == ["fit"]

"""callbacks/defaults.py: which callbacks a run gets, and in which order."""

import datetime

import pytest

from fulmen.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    OnExceptionCheckpoint,
    ProgressBar,
    Timer,
)
from fulmen.callbacks.defaults import monitoring_last, trainer_callbacks, with_module_callbacks
from fulmen.utilities import MisconfigurationException

QUIET = dict(
    progress_bar=False, model_summary=False, max_time=None, checkpointing=False, checkpointing_refused=False
)


def _types(callbacks):
    return [type(c) for c in callbacks]


def test_the_flags_add_a_progress_bar_a_summary_and_a_checkpoint_last():
    user = [LearningRateMonitor()]
    got = trainer_callbacks(
        user, **{**QUIET, "progress_bar": True, "model_summary": True, "checkpointing": True}
    )
    assert got[0] is user[0]
    assert sum(isinstance(c, ProgressBar) for c in got) == 1
    assert sum(isinstance(c, ModelSummary) for c in got) == 1
    assert isinstance(got[-1], ModelCheckpoint)


def test_a_users_checkpoint_callback_replaces_the_default_one():
    mine = OnExceptionCheckpoint(dirpath=".")
    got = trainer_callbacks([mine], **{**QUIET, "checkpointing": True})
    assert got == [mine]


def test_progress_bar_false_removes_a_users_bar():
    from fulmen.callbacks import TQDMProgressBar

    assert trainer_callbacks([TQDMProgressBar()], **QUIET) == []


def test_max_time_adds_a_step_timer_unless_the_user_has_one():
    budget = datetime.timedelta(minutes=5)
    (timer,) = trainer_callbacks([], **{**QUIET, "max_time": budget})
    assert isinstance(timer, Timer) and timer.time_remaining() == 300.0
    mine = Timer(duration="00:00:01:00")
    assert trainer_callbacks([mine], **{**QUIET, "max_time": budget}) == [mine]


def test_a_checkpoint_callback_with_checkpointing_refused_is_an_error():
    with pytest.raises(MisconfigurationException, match="enable_checkpointing=False"):
        trainer_callbacks([ModelCheckpoint()], **{**QUIET, "checkpointing_refused": True})


def test_checkpoint_callbacks_move_after_the_others_in_their_order():
    first, second = ModelCheckpoint(), ModelCheckpoint()
    stop, plain = EarlyStopping(monitor="x"), Callback()
    assert monitoring_last([first, stop, second, plain]) == [stop, plain, first, second]


def test_configure_callbacks_replaces_the_trainers_callbacks_of_the_same_type():
    kept, replaced, ckpt = LearningRateMonitor(), EarlyStopping(monitor="a"), ModelCheckpoint()
    new = EarlyStopping(monitor="b")
    got = with_module_callbacks([kept, replaced, ckpt], [new])
    assert got == [kept, new, ckpt]


def test_configure_callbacks_may_return_one_callback_or_nothing():
    base = [LearningRateMonitor()]
    assert with_module_callbacks(base, None) is base
    extra = Callback()
    assert with_module_callbacks(base, extra) == [base[0], extra]

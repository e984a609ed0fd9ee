"""callbacks/timer.py: Timer, the callback that keeps max_time."""

import datetime

import pytest
from test_loops import Counting

from fulmen.callbacks import Timer
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


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


def test_timer_stops_training_when_budget_is_spent(make_trainer):
    timer = Timer(duration=datetime.timedelta(seconds=0), verbose=False)
    trainer = make_trainer(callbacks=[timer], max_epochs=5, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.global_step == 0  # the budget was already spent when fit started
    assert timer.time_elapsed("train") > 0
    assert timer.end_time("train") >= timer.start_time("train")
    assert timer.time_remaining() <= 0


def test_timer_checks_after_each_step(make_trainer, monkeypatch):
    class Clock:
        now = 100.0

        def monotonic(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr("fulmen.callbacks.timer.time", clock)

    class OneSecondSteps(BoringModel):
        def training_step(self, batch, batch_idx):
            clock.now += 1.0
            return super().training_step(batch, batch_idx)

    timer = Timer(duration={"seconds": 2.5})
    trainer = make_trainer(callbacks=[timer], max_epochs=5, limit_val_batches=0)
    trainer.fit(OneSecondSteps())
    assert trainer.global_step == 3  # 1 s, 2 s: go on; 3 s >= 2.5 s: stop
    assert timer.time_elapsed() == 3.0


def test_timer_measures_every_stage_and_resumes_its_count(make_trainer):
    timer = Timer(duration="00:01:00:00", interval="epoch")
    trainer = make_trainer(callbacks=[timer], limit_train_batches=2, limit_val_batches=2)
    model = BoringModel()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    assert trainer.global_step == 2
    assert timer.time_elapsed("validate") > 0 and timer.time_elapsed("test") > 0
    assert timer.time_remaining() == pytest.approx(3600 - timer.time_elapsed("train"))
    state = timer.state_dict()
    resumed = Timer()
    resumed.load_state_dict(state)
    assert resumed.time_elapsed("train") == pytest.approx(state["time_elapsed"]["train"])
    with pytest.raises(MisconfigurationException, match="unknown stage"):
        timer.time_elapsed("training")

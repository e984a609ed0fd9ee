"""callbacks/timer.py: Timer, the callback that keeps max_time."""

from test_loops import Counting


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

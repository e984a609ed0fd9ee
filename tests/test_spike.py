"""SpikeDetection: a loss far above its running mean stops training and records the batches to skip."""

import json
import math

import pytest

from fulmen.callbacks import SpikeDetection
from fulmen.callbacks.spike import TrainingSpikeException
from fulmen.demos import BoringModel


class ScriptedLoss(BoringModel):
    """training_step returns the next value of `losses` (a differentiable tensor with that value)."""

    def __init__(self, losses):
        super().__init__()
        self.losses = list(losses)

    def training_step(self, batch, batch_idx):
        base = self.layer(batch).sum() * 0.0
        return base + self.losses[self.global_step]


def _fit(make_trainer, losses, **kwargs):
    spike = SpikeDetection(**kwargs)
    trainer = make_trainer(
        max_steps=len(losses), limit_train_batches=len(losses), limit_val_batches=0, callbacks=[spike]
    )
    trainer.fit(ScriptedLoss(losses))
    return spike, trainer


def test_a_spike_raises_and_writes_the_batch_and_the_one_before(make_trainer, tmp_path):
    with pytest.raises(TrainingSpikeException, match="Training spike detected in batch 4"):
        _fit(make_trainer, [1.0, 1.1, 0.9, 1.0, 10.0, 1.0])
    assert json.loads((tmp_path / "skip_batches.json").read_text()) == [3, 4]


def test_improvements_and_small_rises_are_not_spikes(make_trainer):
    spike, trainer = _fit(make_trainer, [5.0, 4.0, 4.5, 3.0, 0.5, 2.5])
    assert spike.bad_batches == [] and trainer.global_step == 6
    assert spike.running_mean == pytest.approx(sum([5.0, 4.0, 4.5, 3.0, 0.5, 2.5]) / 6)


def test_window_limits_the_reference_mean(make_trainer):
    spike, _ = _fit(make_trainer, [100.0, 1.0, 1.0, 1.0], window=2, rtol=None, atol=50.0)
    assert spike.running_mean == 1.0  # the 100 fell out of the window


def test_atol_and_rtol_must_both_hold(make_trainer):
    # 3.5 is 2.5 above the mean of 1: beyond rtol=2 (2.0) but within atol=3, so no spike
    spike, _ = _fit(make_trainer, [1.0, 1.0, 3.5], atol=3.0, rtol=2.0)
    assert spike.bad_batches == []


def test_warmup_batches_are_never_spikes(make_trainer):
    spike, _ = _fit(make_trainer, [1.0, 50.0, 1.0], warmup=2)
    assert spike.bad_batches == []


def test_non_finite_loss_is_a_spike_when_finite_only(make_trainer, tmp_path):
    with pytest.raises(TrainingSpikeException, match="batch 2"):
        _fit(make_trainer, [1.0, 1.0, math.nan], exclude_batches_path=tmp_path / "skip")
    assert json.loads((tmp_path / "skip" / "skip_batches.json").read_text()) == [1, 2]


def test_max_mode_treats_drops_as_spikes(make_trainer):
    with pytest.raises(TrainingSpikeException, match="batch 3"):
        _fit(make_trainer, [10.0, 11.0, 12.0, 0.1], mode="max", rtol=0.5)


def test_state_round_trip():
    spike = SpikeDetection(window=3)
    for value in (1.0, 2.0, 3.0, 4.0):
        spike._recent.append(value)
    spike.last_val = 4.0
    fresh = SpikeDetection(window=3)
    fresh.load_state_dict(spike.state_dict())
    assert fresh.running_mean == 3.0 and fresh.last_val == 4.0

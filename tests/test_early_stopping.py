"""EarlyStopping: patience, min_delta, modes, thresholds, non-finite values, missing metrics, state."""

import math
import re

import pytest
import torch

from fulmen.callbacks import EarlyStopping
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


class SeriesModel(BoringModel):
    """Logs `metric` = series[epoch] in validation."""

    def __init__(self, series):
        super().__init__()
        self.series = series

    def validation_step(self, batch, batch_idx):
        self.log("metric", float(self.series[self.current_epoch]))


@pytest.fixture
def fit(make_trainer):
    """Fit a `SeriesModel(series)` for len(series) epochs with EarlyStopping(monitor, **es_kwargs); one
    training and one validation batch an epoch. Returns the callback and the trainer."""

    def run(series, monitor="metric", **es_kwargs):
        es = EarlyStopping(monitor=monitor, **es_kwargs)
        trainer = make_trainer(
            max_epochs=len(series),
            limit_train_batches=1,
            limit_val_batches=1,
            num_sanity_val_steps=0,
            callbacks=[es],
        )
        trainer.fit(SeriesModel(series))
        return es, trainer

    return run


def test_stops_after_patience_checks_without_improvement(fit):
    es, trainer = fit([1.0, 0.5, 0.6, 0.7, 0.55, 0.4, 0.3], patience=3)
    assert trainer.current_epoch == 5  # epochs 2, 3, 4 did not beat 0.5: stop at the end of epoch 4
    assert es.stopped_epoch == 4 and es.wait_count == 3
    assert float(es.best_score) == 0.5


def test_min_delta_requires_a_large_enough_improvement(fit):
    es, trainer = fit([1.0, 0.95, 0.91, 0.5, 0.4], patience=2, min_delta=0.1)
    assert es.stopped_epoch == 2 and float(es.best_score) == 1.0


def test_max_mode_tracks_increasing_metric(fit):
    es, trainer = fit([0.1, 0.2, 0.3, 0.3, 0.3, 0.3], patience=2, mode="max")
    assert es.stopped_epoch == 4 and float(es.best_score) == pytest.approx(0.3)


def test_stopping_threshold_stops_as_soon_as_it_is_reached(fit):
    es, trainer = fit([0.9, 0.5, 0.05, 0.01], stopping_threshold=0.1)
    assert es.stopped_epoch == 2 and trainer.current_epoch == 3


def test_divergence_threshold_stops_when_metric_blows_up(fit):
    es, trainer = fit([0.9, 5.0, 100.0, 0.1], divergence_threshold=10.0)
    assert es.stopped_epoch == 2


def test_non_finite_metric_stops_at_once(fit):
    es, trainer = fit([0.9, math.nan, 0.1, 0.1])
    assert es.stopped_epoch == 1


def test_non_finite_metric_is_ignored_without_check_finite(fit):
    es, trainer = fit([0.9, math.nan, 0.1, 0.1], check_finite=False, patience=5)
    assert trainer.current_epoch == 4 and float(es.best_score) == pytest.approx(0.1)


def test_missing_metric_raises_listing_the_logged_names(fit):
    with pytest.raises(RuntimeError, match=r"EarlyStopping\(monitor='val_acc'\).*\['metric'\]"):
        fit([1.0, 1.0], monitor="val_acc")


def test_missing_metric_with_strict_false_keeps_training(fit):
    es, trainer = fit([1.0, 1.0, 1.0], monitor="val_acc", strict=False)
    assert trainer.current_epoch == 3 and es.wait_count == 0


def test_state_dict_round_trip_restores_patience_bookkeeping():
    es = EarlyStopping(monitor="m", patience=4)
    es.wait_count, es.stopped_epoch, es.best_score = 2, 7, torch.tensor(0.25)
    other = EarlyStopping(monitor="m")
    other.load_state_dict(es.state_dict())
    assert (other.wait_count, other.stopped_epoch, float(other.best_score), other.patience) == (2, 7, 0.25, 4)
    assert other.state_key == "EarlyStopping{'monitor': 'm', 'mode': 'min'}"


def test_invalid_mode_is_a_clear_error():
    # Lightning's wording leads (users grep for it), fulmen's hint naming the argument follows
    with pytest.raises(MisconfigurationException, match=r"^`mode` can be min, max, got avg: .*mode='avg'"):
        EarlyStopping(monitor="m", mode="avg")


# ---------------------------------------------------------------- stopping_reason (Lightning 2.6)
from fulmen.callbacks.early_stopping import EarlyStoppingReason  # noqa: E402


def test_stopping_reason_is_not_stopped_while_the_metric_improves(fit):
    es, _ = fit([1.0, 0.9, 0.8], patience=3)
    assert es.stopping_reason is EarlyStoppingReason.NOT_STOPPED
    assert es.stopping_reason_message is None


@pytest.mark.parametrize(
    ("series", "es_kwargs", "reason", "message"),
    [
        pytest.param(
            [1.0, 1.1, 1.2, 1.3],
            {"patience": 2},
            EarlyStoppingReason.PATIENCE_EXHAUSTED,
            r"^Monitored metric metric did not improve in the last 2 records",
            id="patience-exhausted",
        ),
        pytest.param(
            [0.9, 0.05, 0.01],
            {"stopping_threshold": 0.1},
            EarlyStoppingReason.STOPPING_THRESHOLD,
            r"^Stopping threshold reached: metric = ",
            id="stopping-threshold",
        ),
        pytest.param(
            [0.9, 5.0, 0.1],
            {"divergence_threshold": 2.0},
            EarlyStoppingReason.DIVERGENCE_THRESHOLD,
            r"^Divergence threshold reached: metric = ",
            id="divergence-threshold",
        ),
        pytest.param(
            [0.9, math.nan, 0.1], {}, EarlyStoppingReason.NON_FINITE_METRIC, "is not finite", id="non-finite"
        ),
    ],
)
def test_stopping_reason_and_message(fit, series, es_kwargs, reason, message):
    es, _ = fit(series, **es_kwargs)
    assert es.stopping_reason is reason
    assert re.search(message, es.stopping_reason_message)


def test_stopping_reason_round_trips_through_state_dict(fit):
    es, _ = fit([1.0, 1.1, 1.2], patience=2)
    fresh = EarlyStopping(monitor="metric")
    fresh.load_state_dict(es.state_dict())
    assert fresh.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert fresh.stopping_reason_message == es.stopping_reason_message
    assert EarlyStoppingReason.PATIENCE_EXHAUSTED.value == 3  # the number Lightning 2.6 stores


def test_state_without_a_reason_loads_as_not_stopped():
    es = EarlyStopping(monitor="metric")
    es.load_state_dict({"wait_count": 1, "stopped_epoch": 0, "best_score": torch.tensor(0.5), "patience": 3})
    assert es.stopping_reason is EarlyStoppingReason.NOT_STOPPED

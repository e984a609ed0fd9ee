"""loggers/lifecycle.py: which loggers a run gets, what they hear at its start, how they finish."""

import pytest

from fulmen.loggers import CSVLogger
from fulmen.loggers.lifecycle import LoggerFinalizeError, finalize_loggers, log_hyperparams, run_loggers
from fulmen.loggers.logger import DummyLogger, Logger


class Recording(Logger):
    """Records the calls the life cycle makes; `fail` makes finalize raise."""

    def __init__(self, fail=False):
        super().__init__()
        self.calls, self.fail = [], fail

    def log_metrics(self, metrics, step=None):
        self.calls.append(("log_metrics", metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        self.calls.append(("log_hyperparams", dict(params)))

    def save(self):
        self.calls.append(("save",))

    def finalize(self, status):
        self.calls.append(("finalize", status))
        if self.fail:
            raise OSError("disk full")


class Owner:
    """A module or datamodule as the life cycle sees it: opted in to hyperparameter logging or not."""

    def __init__(self, opted_in, **hparams):
        self._log_hyperparams, self.hparams_initial = opted_in, hparams


@pytest.mark.parametrize(
    "flag, quiet, expected",
    [(False, False, []), (None, True, []), (True, True, []), (None, False, [CSVLogger])],
    ids=["off", "quiet-default", "quiet-true", "default"],
)
def test_the_logger_flag_gives_the_default_logger_or_none(tmp_path, monkeypatch, flag, quiet, expected):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # no tensorboard: the CSV logger
    got = run_loggers(flag, str(tmp_path), fast_dev_run=False, quiet=quiet)
    assert [type(lg) for lg in got] == expected


def test_given_loggers_are_kept_in_order(tmp_path):
    first, second = Recording(), Recording()
    assert run_loggers(first, str(tmp_path), fast_dev_run=False, quiet=False) == [first]
    assert run_loggers([first, second], str(tmp_path), fast_dev_run=False, quiet=False) == [first, second]


def test_fast_dev_run_logs_to_a_dummy_logger_unless_logging_is_off(tmp_path):
    (dummy,) = run_loggers(Recording(), str(tmp_path), fast_dev_run=True, quiet=True)
    assert isinstance(dummy, DummyLogger)
    assert run_loggers(False, str(tmp_path), fast_dev_run=True, quiet=True) == []


def test_hyperparameters_of_opted_in_owners_are_sent_merged():
    lg = Recording()
    log_hyperparams([lg], Owner(True, lr=0.1), Owner(True, batch_size=8))
    assert lg.calls == [("log_hyperparams", {"lr": 0.1, "batch_size": 8}), ("save",)]


def test_without_save_hyperparameters_no_hyperparameters_are_sent():
    lg = Recording()
    log_hyperparams([lg], Owner(False, lr=0.1), None)
    assert lg.calls == [("save",)]


def test_a_logger_failing_at_the_end_of_a_good_run_fails_it_naming_the_logger():
    good, bad = Recording(), Recording(fail=True)
    with pytest.raises(LoggerFinalizeError, match=r"Recording: OSError: disk full") as info:
        finalize_loggers([bad, good], "success")
    assert isinstance(info.value.__cause__, OSError)
    assert good.calls == [("finalize", "success")]  # the others still finish


def test_a_logger_failing_while_the_run_fails_only_warns():
    bad = Recording(fail=True)
    with pytest.warns(UserWarning, match="could not finish while the run was failing"):
        finalize_loggers([bad], "failed")
    assert bad.calls == [("finalize", "failed")]

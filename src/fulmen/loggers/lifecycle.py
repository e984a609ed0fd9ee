"""A run's loggers over its life: which ones it gets, what they hear at its start, how they finish.

The Trainer calls `run_loggers` when it is built, `log_hyperparams` when a run starts and
`finalize_loggers` when it ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fulmen.loggers import default_logger
from fulmen.loggers.logger import DummyLogger
from fulmen.utilities import rank_zero_warn


class LoggerFinalizeError(RuntimeError):
    """A logger failed to finish writing its files at the end of an otherwise successful run."""


def run_loggers(flag: Any, root_dir: str, *, fast_dev_run: bool, quiet: bool) -> list[Any]:
    """The loggers for `Trainer(logger=flag)`: a list, empty when logging is off."""
    if fast_dev_run and flag is not False:
        # as in Lightning: `self.logger.experiment.add_*` calls keep working and write nothing
        return [DummyLogger()]
    if flag is False or (quiet and flag in (None, True)):
        return []
    if flag is None or flag is True:
        return [default_logger(root_dir)]
    if isinstance(flag, Iterable):
        return list(flag)
    return [flag]


def log_hyperparams(loggers: list[Any], module: Any, datamodule: Any) -> None:
    """Send the saved hyperparameters (and the graph, where a logger takes one) to every logger."""
    params: dict[str, Any] = {}
    # As in Lightning, only objects that called `save_hyperparameters` (with logger=True) are logged; with
    # none, loggers get no `log_hyperparams` call at all (so no placeholder `hp_metric` either).
    opted_in = False
    if getattr(module, "_log_hyperparams", False):
        params.update(module.hparams_initial)
        opted_in = True
    if datamodule is not None and getattr(datamodule, "_log_hyperparams", False):
        params.update(datamodule.hparams_initial)
        opted_in = True
    for lg in loggers:
        if opted_in:
            lg.log_hyperparams(params)
        if hasattr(lg, "log_graph"):
            lg.log_graph(module)
        lg.save()


def finalize_loggers(loggers: list[Any], status: str) -> None:
    """Finalize every logger; on success a logger that failed fails the run (its rows would be lost)."""
    failed: list[tuple[Any, Exception]] = []
    for lg in loggers:
        try:
            lg.finalize(status)
        except Exception as err:
            failed.append((lg, err))
    if not failed:
        return
    where = "; ".join(
        f"{type(lg).__name__}: {type(err).__name__}: {str(err).rstrip('.')}" for lg, err in failed
    )
    if status != "success":  # the run's own exception is already on its way; don't mask it
        rank_zero_warn(f"A logger could not finish while the run was failing ({where}).")
        return
    raise LoggerFinalizeError(
        f"The run finished (checkpoints are on disk) but a logger could not write its files: {where}. Its "
        "metrics may be lost; check the logger's save_dir (permissions, free space) and rerun."
    ) from failed[0][1]

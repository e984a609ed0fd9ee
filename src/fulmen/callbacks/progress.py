"""Progress bars: a tqdm bar per stage, refreshed a few times a second, showing prog_bar metrics.

When stdout is not a terminal (CI logs, files) the bar prints one line per epoch instead of
thousands of carriage-return updates.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from fulmen.callbacks.callback import Callback
from fulmen.utilities.lazy import lazy_names


class ProgressBar(Callback):
    """Base class for progress bars; `get_metrics` gives what the bar shows.

    `trainer` and `pl_module` are the Trainer and module of the run, from `setup` on (as in Lightning).
    """

    _trainer: Any = None

    def __init__(self) -> None:
        self._enabled = True

    @property
    def trainer(self) -> Any:
        """The Trainer this bar belongs to; set when the run calls `setup`."""
        if self._trainer is None:
            raise TypeError(f"The `{type(self).__name__}.trainer` reference has not been set yet.")
        return self._trainer

    @property
    def pl_module(self) -> Any:
        """The LightningModule being run."""
        return self.trainer.lightning_module

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Remember the Trainer, for `self.trainer` in subclasses' hooks."""
        self._trainer = trainer

    def disable(self) -> None:
        """Stop showing the bar."""
        self._enabled = False

    def enable(self) -> None:
        """Show the bar again."""
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """True while the bar is shown."""
        return self._enabled

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        """The metrics logged with prog_bar=True, plus the logger's version as `v_num`."""
        metrics: dict[str, Any] = dict(trainer.progress_bar_metrics)
        logger = trainer.logger
        version = getattr(logger, "version", None) if logger is not None else None
        if version is not None:
            metrics["v_num"] = version[-4:] if isinstance(version, str) else version
        return metrics

    # Hooks the loops call directly (cheap: no dispatch through the callback table).
    def _on_train_batch(self, trainer: Any) -> None:
        pass

    def _on_eval_batch(self, trainer: Any, stage: str, sanity: bool) -> None:
        pass


def _in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel, where tqdm.auto draws a widget that updates in place."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class TQDMProgressBar(ProgressBar):
    """The default bar. `refresh_rate` batches between updates, and at most one redraw per 0.2 s."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__()
        self.refresh_rate = refresh_rate
        self.process_position = process_position
        self.leave = leave
        self.min_interval = 0.2
        self._bar: Any = None
        self._count = 0
        self._shown = 0
        self._last = 0.0
        self._total: float = math.inf
        self._interactive = sys.stdout.isatty() or _in_notebook()
        self._epoch_start = 0.0

    @property
    def total_train_batches(self) -> float:
        """Training batches in the epoch (inf if unknown)."""
        return self._total

    def _new_bar(self, desc: str, total: float, leave: bool = True) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            desc=desc,
            total=None if math.isinf(total) else int(total),
            position=self.process_position,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}",
        )

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not self._enabled or not trainer.is_global_zero:
            return
        self._total = trainer.num_training_batches
        self._count = self._shown = 0
        self._last = time.monotonic()
        self._epoch_start = self._last
        if not self._interactive:
            return
        desc = f"Epoch {trainer.current_epoch}"
        if self._bar is not None and not self.leave:
            # one bar for the whole fit, as in Lightning: reset for the new epoch, left on screen at the end
            self._bar.reset(total=None if math.isinf(self._total) else int(self._total))
            self._bar.set_description(desc, refresh=False)
        else:
            self._close()  # leave=True: the finished epoch's bar stays above the new one
            self._bar = self._new_bar(desc, self._total)

    def _on_train_batch(self, trainer: Any) -> None:
        self._count += 1
        if self._bar is None or self._count % self.refresh_rate:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval and self._count != self._total:
            return
        self._last = now
        self._bar.update(self._count - self._shown)
        self._shown = self._count
        self._bar.set_postfix_str(self._postfix(trainer), refresh=True)

    def _postfix(self, trainer: Any) -> str:
        return ", ".join(
            f"{k}={_fmt(v)}" for k, v in self.get_metrics(trainer, trainer.lightning_module).items()
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not self._enabled or not trainer.is_global_zero:
            return
        if self._bar is not None:
            self._bar.update(self._count - self._shown)
            self._shown = self._count
            self._bar.set_postfix_str(self._postfix(trainer), refresh=True)
        else:
            seconds = time.monotonic() - self._epoch_start
            print(
                f"Epoch {trainer.current_epoch}: {self._count} batches in {seconds:.1f}s | {self._postfix(trainer)}",
                flush=True,
            )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._close()

    # ------------------------------------------------------------------ evaluation
    def _start_eval(self, trainer: Any, desc: str, loop: Any) -> None:
        self._eval_count = 0
        self._eval_bar: Any = None
        if not (self._enabled and self._interactive and trainer.is_global_zero):
            return
        counts = loop.num_batches(sanity=trainer.sanity_checking)
        total = sum(counts)
        # inside fit the validation bar goes away when done; a bar of validate()/test() stays, as in Lightning
        self._eval_bar = self._new_bar(desc, total, leave=trainer.state.fn != "fit")

    def _end_eval(self) -> None:
        bar = getattr(self, "_eval_bar", None)
        if bar is not None:
            bar.update(self._eval_count - bar.n)
            bar.refresh()
            bar.close()
            self._eval_bar = None

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        desc = "Sanity Checking" if trainer.sanity_checking else "Validation"
        self._start_eval(trainer, desc, trainer.validate_loop)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._end_eval()

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._start_eval(trainer, "Testing", trainer.test_loop)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._end_eval()

    def _on_eval_batch(self, trainer: Any, stage: str, sanity: bool) -> None:
        self._eval_count = getattr(self, "_eval_count", 0) + 1
        bar = getattr(self, "_eval_bar", None)
        if bar is None:
            return
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            bar.update(self._eval_count - bar.n)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:  # noqa: D102
        self._end_eval()
        self._close()


# `lightning.pytorch.callbacks.progress.RichProgressBar`: loaded on first use (rich is optional)
__getattr__, __dir__ = lazy_names(__name__, {"RichProgressBar": "fulmen.callbacks.rich_progress"}, globals())

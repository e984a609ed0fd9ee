"""RichProgressBar and RichModelSummary: the `rich` package's bars, tables and colours.

The bar draws a `rich.progress.Progress` (one task per running stage) above a table of the metrics
logged with `prog_bar=True`, inside a `rich.live.Live` that is refreshed by hand (no background thread),
at most every `refresh_rate` batches and 10 times a second. When the console is neither a terminal
nor a notebook (CI logs, files) it prints one line per epoch instead. Only rank 0 draws.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fulmen.callbacks.model_summary import ModelSummary, Summary
from fulmen.callbacks.progress import ProgressBar
from fulmen.utilities.model_summary import get_human_readable_count as _human


def _require_rich(what: str) -> None:
    try:
        import rich  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{what} needs the `rich` package: `pip install rich` (or use TQDMProgressBar / ModelSummary)."
        ) from err


@dataclass
class RichProgressBarTheme:
    """Styles (rich style strings) of the bar's parts."""

    description: str = "bold"
    progress_bar: str = "#6206E0"
    progress_bar_finished: str = "#6206E0"
    progress_bar_pulse: str = "#6206E0"
    batch_progress: str = ""
    time: str = "dim"
    processing_speed: str = "dim underline"
    metrics: str = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


class _MetricsTable:
    """A renderable that shows the bar's current metrics as a one-row table."""

    def __init__(self, theme: RichProgressBarTheme) -> None:
        self.theme = theme
        self.metrics: dict[str, Any] = {}

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(box=None, padding=(0, 2), show_edge=False, header_style=self.theme.metrics)
        if not self.metrics:
            return table
        for name in self.metrics:
            table.add_column(name, justify="right")
        table.add_row(*(_format(v, self.theme.metrics_format) for v in self.metrics.values()))
        return table


def _format(value: Any, spec: str) -> str:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


class RichProgressBar(ProgressBar):
    """A progress bar drawn with `rich`, with a table of the `prog_bar=True` metrics under it.

    Args:
        refresh_rate: batches between redraws (0 disables the bar).
        leave: keep each finished epoch's bar on screen.
        theme: colours and number format.
        console_kwargs: passed to `rich.console.Console` (e.g. `{"file": f, "force_terminal": True}`).
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        leave: bool = False,
        theme: RichProgressBarTheme | None = None,
        console_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _require_rich("RichProgressBar")
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self.theme = theme or RichProgressBarTheme()
        self._console_kwargs = console_kwargs or {}
        self._console: Any = None
        self._progress: Any = None
        self._live: Any = None
        self._table = _MetricsTable(self.theme)
        self._train_task: Any = None
        self._eval_task: Any = None
        self._count = 0
        self._eval_count = 0
        self._last = 0.0
        self._epoch_start = 0.0
        self.min_interval = 0.1
        if refresh_rate == 0:
            self.disable()

    @property
    def refresh_rate(self) -> int:
        """Batches between redraws."""
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:  # noqa: D102
        return self._enabled and self._refresh_rate > 0

    @property
    def console(self) -> Any:
        """The `rich.console.Console` the bar draws on (created on first use)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._console_kwargs)
        return self._console

    @property
    def interactive(self) -> bool:
        """True in a terminal or a notebook, where the bar redraws in place."""
        return bool(self.console.is_terminal or self.console.is_jupyter)

    # ------------------------------------------------------------------ drawing
    def _start(self) -> bool:
        """Open the live display if this process draws; False where nothing is drawn."""
        if not self.is_enabled:
            return False
        if self._live is not None:
            return True
        if not self.interactive:
            return False
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        theme = self.theme
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}", style=theme.description),
            BarColumn(
                complete_style=theme.progress_bar,
                finished_style=theme.progress_bar_finished,
                pulse_style=theme.progress_bar_pulse,
            ),
            TextColumn("{task.completed}/{task.fields[total_text]}", style=theme.batch_progress),
            TimeElapsedColumn(),
            TextColumn("<", style=theme.time),
            TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}", style=theme.processing_speed),
            console=self.console,
            auto_refresh=False,
        )
        self._live = Live(
            Group(self._progress, self._table),
            console=self.console,
            auto_refresh=False,
            transient=False,  # the last epoch's bar and metrics stay on screen after fit, as in Lightning
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        return True

    def _stop(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
        self._live = self._progress = None
        self._train_task = self._eval_task = None

    def _add_task(self, description: str, total: float | None) -> Any:
        count = None if total is None or math.isinf(total) else int(total)
        return self._progress.add_task(
            description, total=count, total_text="?" if count is None else str(count), speed=""
        )

    def _show(self, trainer: Any, task: Any, completed: int) -> None:
        elapsed = max(time.monotonic() - self._epoch_start, 1e-9)
        self._progress.update(task, completed=completed, speed=f"{completed / elapsed:.2f}it/s")
        self._table.metrics = self.get_metrics(trainer, trainer.lightning_module)
        self._live.refresh()

    # ------------------------------------------------------------------ training
    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if trainer.is_global_zero and self._start():
            self._eval_count = 0
            self._epoch_start = time.monotonic()
            self._eval_task = self._add_task("Sanity Checking", _eval_total(trainer, "validate", True))

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if self._progress is not None and self._eval_task is not None:
            self._progress.remove_task(self._eval_task)
            self._eval_task = None
            self._live.refresh()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.is_global_zero or not self.is_enabled:
            return
        self._count = 0
        self._last = self._epoch_start = time.monotonic()
        if not self._start():
            return
        if self._train_task is not None and not self._leave:
            self._progress.remove_task(self._train_task)
        self._train_task = self._add_task(f"Epoch {trainer.current_epoch}", trainer.num_training_batches)
        self._live.refresh()

    def _on_train_batch(self, trainer: Any) -> None:
        self._count += 1
        if self._train_task is None or self._count % self._refresh_rate:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval:
            return
        self._last = now
        self._show(trainer, self._train_task, self._count)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.is_global_zero or not self.is_enabled:
            return
        if self._train_task is not None:
            self._show(trainer, self._train_task, self._count)
            return
        seconds = time.monotonic() - self._epoch_start
        metrics = self.get_metrics(trainer, pl_module)
        text = self.theme.metrics_text_delimiter.join(
            f"{k}={_format(v, self.theme.metrics_format)}" for k, v in metrics.items()
        )
        self.console.print(
            f"Epoch {trainer.current_epoch}: {self._count} batches in {seconds:.1f}s | {text}",
            markup=False,
            highlight=False,
        )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._stop()

    # ------------------------------------------------------------------ evaluation and prediction
    def _eval_start(self, trainer: Any, description: str, stage: str) -> None:
        if not trainer.is_global_zero or not self._start():
            return
        if trainer.state.fn != "fit":
            self._epoch_start = time.monotonic()
        self._eval_count = 0
        self._eval_task = self._add_task(description, _eval_total(trainer, stage, False))
        self._live.refresh()

    def _eval_end(self, trainer: Any) -> None:
        if self._progress is None or self._eval_task is None:
            return
        if trainer.state.fn == "fit":  # back to the epoch's bar: drop the finished validation bar
            self._progress.remove_task(self._eval_task)
            self._eval_task = None
            if self._train_task is not None:
                self._show(trainer, self._train_task, self._count)
        else:
            self._show(trainer, self._eval_task, self._eval_count)
            self._stop()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.sanity_checking:
            self._eval_start(trainer, "Validation", "validate")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.sanity_checking:
            self._eval_end(trainer)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._eval_start(trainer, "Testing", "test")

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._eval_end(trainer)

    def _on_eval_batch(self, trainer: Any, stage: str, sanity: bool) -> None:
        self._eval_count += 1
        if self._eval_task is None or self._eval_count % self._refresh_rate:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval:
            return
        self._last = now
        self._show(trainer, self._eval_task, self._eval_count)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._eval_start(trainer, "Predicting", "predict")

    def on_predict_batch_end(self, trainer: Any, *args: Any) -> None:  # noqa: D102
        self._on_eval_batch(trainer, "predict", False)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self._eval_end(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:  # noqa: D102
        self._stop()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_console=None, _live=None, _progress=None, _train_task=None, _eval_task=None)
        return state


def _eval_total(trainer: Any, stage: str, sanity: bool) -> float | None:
    """Batches the coming evaluation runs (None when unknown)."""
    loop: Any = {"validate": trainer.validate_loop, "test": trainer.test_loop}.get(stage)
    if loop is None:
        loop = getattr(trainer, "predict_loop", None)
    try:
        total = float(sum(loop.num_batches(sanity) if sanity else loop.num_batches()))
    except Exception:  # a loop without a count (prediction, iterable datasets)
        return None
    return None if math.isinf(total) else total


class RichModelSummary(ModelSummary):
    """ModelSummary drawn as a `rich` table (`max_depth` levels of submodules; -1 for all)."""

    def __init__(self, max_depth: int = 1, **console_kwargs: Any) -> None:
        _require_rich("RichModelSummary")
        super().__init__(max_depth=max_depth)
        self._console_kwargs = console_kwargs

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.is_global_zero:
            return
        self.summary = Summary(pl_module, self._max_depth)
        self.render(self.summary)

    def render(self, summary: Summary) -> None:
        """Print the table and the totals of `summary`."""
        from rich.console import Console
        from rich.table import Table

        table = Table(header_style="bold magenta")
        for name, justify in (("", "right"), ("Name", "left"), ("Type", "left"), ("Params", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        table.add_column("Mode", justify="left")
        for i, layer in enumerate(summary.layers):
            mode = "train" if layer.training else "eval"
            table.add_row(str(i), layer.name, layer.layer_type, _human(layer.num_parameters), mode)
        console = Console(**self._console_kwargs)
        console.print(table)
        totals = Table.grid(padding=(0, 1))
        totals.add_column(justify="right", style="bold")
        totals.add_column()
        totals.add_row(_human(summary.trainable_parameters), "Trainable params")
        totals.add_row(_human(summary.non_trainable_parameters), "Non-trainable params")
        totals.add_row(_human(summary.total_parameters), "Total params")
        totals.add_row(f"{summary.model_size_mb:.3f}", "Total estimated model params size (MB)")
        totals.add_row(str(summary.training_modes), "Modules in train mode")
        totals.add_row(str(summary.eval_modes), "Modules in eval mode")
        console.print(totals)

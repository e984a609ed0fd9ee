"""Profilers: where the time of a run goes, per action (each hook, the step, backward, the dataloader).

`Trainer(profiler="simple" | "advanced" | "pytorch" | a Profiler)` picks one. The trainer reports
actions to it through `profile(name)` (a context manager around `start(name)` / `stop(name)`); at
the end of each stage `describe()` prints `summary()` and writes it to `<log_dir>/<stage>-profile.txt`.

A disabled profiler (`PassThroughProfiler`, the default) costs nothing: the trainer checks
`profiler.enabled` once per run and only then wraps the step methods with timing code
(`_profiled_run`); otherwise the loops run exactly as they do without a profiler.

User code can time its own sections: `with self.trainer.profiler.profile("my_action"): ...`.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from fulmen.out_of_scope import XLAProfiler  # noqa: F401  # out of scope; importable as in Lightning
from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


class Profiler:
    """Base class: subclasses implement `start`, `stop` and `summary`; the rest is shared."""

    enabled = True

    def __init__(self, dirpath: str | os.PathLike[str] | None = None, filename: str | None = None) -> None:
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename
        self._stage: str | None = None
        self._local_rank = 0
        self._log_dir: str | None = None
        self.output_path: str | None = None  # the last report written by `describe`

    # ------------------------------------------------------------------ what subclasses implement
    def start(self, action_name: str) -> None:
        """Begin timing `action_name`."""
        raise NotImplementedError

    def stop(self, action_name: str) -> None:
        """End timing `action_name`."""
        raise NotImplementedError

    def summary(self) -> str:
        """A human-readable report of what was recorded."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @contextlib.contextmanager
    def profile(self, action_name: str) -> Generator[str, None, None]:
        """Time the body of a `with` block as `action_name`."""
        self.start(action_name)
        try:
            yield action_name
        finally:
            self.stop(action_name)

    def profile_iterable(self, iterable: Iterable[Any], action_name: str) -> Generator[Any, None, None]:
        """Yield from `iterable`, timing each `next()` as `action_name` (e.g. the dataloader)."""
        iterator: Iterator[Any] = iter(iterable)
        while True:
            self.start(action_name)
            try:
                value = next(iterator)
            except StopIteration:
                self.stop(action_name)
                return
            except BaseException:
                self.stop(action_name)
                raise
            self.stop(action_name)
            yield value

    def setup(self, stage: str, local_rank: int = 0, log_dir: str | None = None) -> None:
        """Called by the trainer when a stage ("fit", "validate", ...) starts."""
        self._stage = stage
        self._local_rank = local_rank
        self._log_dir = log_dir

    def teardown(self, stage: str | None) -> None:
        """Called by the trainer when the stage ends (after `describe`)."""
        self._stage = None

    def report_path(self) -> str | None:
        """Where `describe` writes: `<dirpath or log_dir>/<stage>-<filename or 'profile'>.txt`."""
        folder = self.dirpath or self._log_dir
        if folder is None:
            return None
        name = f"{self._stage or 'run'}-{self.filename or 'profile'}"
        if self._local_rank:
            name += f"-rank{self._local_rank}"
        return os.path.join(folder, name + ".txt")

    def describe(self) -> None:
        """Print the summary (rank 0) and write it to `report_path()`."""
        text = self.summary()
        if not text:
            return
        path = self.report_path()
        if path is not None:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            self.output_path = path
        if self._local_rank == 0:
            where = f" (written to {path})" if path else ""
            print(f"{(self._stage or 'run').upper()} profile{where}\n{text}", flush=True)


class PassThroughProfiler(Profiler):
    """The default: records nothing, and the trainer does not even call it in the loops."""

    enabled = False

    def start(self, action_name: str) -> None:
        """Do nothing."""

    def stop(self, action_name: str) -> None:
        """Do nothing."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager[Any]:  # type: ignore[override]
        """A context that does nothing."""
        return contextlib.nullcontext(action_name)

    def summary(self) -> str:
        """Nothing was recorded."""
        return ""


class SimpleProfiler(Profiler):
    """Wall time per action: a table of mean, count, total and share of the run, largest total first."""

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        extended: bool = True,
    ) -> None:
        super().__init__(dirpath, filename)
        self.extended = extended  # False: only the mean and total columns
        self._started: dict[str, float] = {}
        self._stats: dict[str, list[float]] = {}  # action -> [count, total seconds, max seconds]
        self._run_start = time.perf_counter()

    def setup(self, stage: str, local_rank: int = 0, log_dir: str | None = None) -> None:
        """Start a fresh record for `stage`."""
        super().setup(stage, local_rank, log_dir)
        self._started.clear()
        self._stats.clear()
        self._run_start = time.perf_counter()

    def start(self, action_name: str) -> None:
        """Note the start time of `action_name`."""
        if action_name in self._started:
            raise ValueError(
                f"SimpleProfiler: {action_name!r} was started again before it stopped; give nested "
                "sections different names."
            )
        self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        """Add the time since `start(action_name)` to its statistics."""
        end = time.perf_counter()
        begin = self._started.pop(action_name, None)
        if begin is None:
            raise ValueError(f"SimpleProfiler: stop({action_name!r}) was called without start().")
        elapsed = end - begin
        stats = self._stats.get(action_name)
        if stats is None:
            self._stats[action_name] = [1.0, elapsed, elapsed]
        else:
            stats[0] += 1.0
            stats[1] += elapsed
            if elapsed > stats[2]:
                stats[2] = elapsed

    def recorded(self) -> dict[str, dict[str, float]]:
        """The statistics as numbers: {action: {"count", "total", "mean", "max"}}."""
        return {
            name: {"count": c, "total": t, "mean": t / c, "max": m} for name, (c, t, m) in self._stats.items()
        }

    def summary(self) -> str:
        """The table, sorted by total time; the share is of the wall time since the stage began."""
        run_total = time.perf_counter() - self._run_start
        rows = sorted(self._stats.items(), key=lambda item: item[1][1], reverse=True)
        header: tuple[str, ...] = ("Action", "Mean (s)", "Count", "Total (s)", "Share of run")
        lines: list[tuple[str, ...]] = [("Total run", "-", "-", f"{run_total:.5f}", "100.0 %")]
        for name, (count, total, _) in rows:
            share = 100.0 * total / run_total if run_total > 0 else 0.0
            lines.append((name, f"{total / count:.6f}", f"{int(count)}", f"{total:.5f}", f"{share:.1f} %"))
        if not self.extended:
            header = (header[0], header[1], header[3])
            lines = [(line[0], line[1], line[3]) for line in lines]
        widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]

        def fmt(cells: tuple[str, ...]) -> str:
            first = cells[0].ljust(widths[0])
            rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
            return f"| {first}  {rest} |"

        rule = "-" * len(fmt(header))
        return "\n".join([rule, fmt(header), rule, *(fmt(line) for line in lines), rule])


class AdvancedProfiler(Profiler):
    """cProfile per action: the functions that took the time inside each action.

    Nested actions are profiled separately: while an inner action runs, the outer action's profiler
    is paused, so each action's report shows the calls made directly under it.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        line_count_restriction: int | float = 20,
        sort_by: str = "cumulative",
        dump_stats: bool = False,
    ) -> None:
        super().__init__(dirpath, filename)
        self.line_count_restriction = line_count_restriction
        self.sort_by = sort_by
        self.dump_stats = dump_stats  # also write each action's raw stats to a .prof file (snakeviz, pstats)
        self.stats_paths: list[str] = []
        self._profilers: dict[str, Any] = {}
        self._stack: list[str] = []

    def setup(self, stage: str, local_rank: int = 0, log_dir: str | None = None) -> None:
        """Start a fresh record for `stage`."""
        super().setup(stage, local_rank, log_dir)
        self._profilers.clear()
        self._stack.clear()

    def start(self, action_name: str) -> None:
        """Pause the enclosing action's cProfile (if any) and run this action's."""
        import cProfile

        if action_name in self._stack:
            raise ValueError(
                f"AdvancedProfiler: {action_name!r} was started again before it stopped; give nested "
                "sections different names."
            )
        if self._stack:
            self._profilers[self._stack[-1]].disable()
        prof = self._profilers.get(action_name)
        if prof is None:
            prof = self._profilers[action_name] = cProfile.Profile()
        self._stack.append(action_name)
        prof.enable()

    def stop(self, action_name: str) -> None:
        """Stop this action's cProfile and resume the enclosing one."""
        if not self._stack or self._stack[-1] != action_name:
            raise ValueError(
                f"AdvancedProfiler: stop({action_name!r}) does not match the innermost running action "
                f"({self._stack[-1] if self._stack else None!r})."
            )
        self._profilers[action_name].disable()
        self._stack.pop()
        if self._stack:
            self._profilers[self._stack[-1]].enable()

    def summary(self) -> str:
        """For each action, the top functions by `sort_by` (pstats' report)."""
        import pstats

        parts = []
        for name, prof in self._profilers.items():
            stream = io.StringIO()
            stats = pstats.Stats(prof, stream=stream).strip_dirs()
            stats.sort_stats(self.sort_by).print_stats(self.line_count_restriction)
            parts.append(f"Profile of action: {name}\n{stream.getvalue().strip()}\n")
        return "\n".join(parts)

    def describe(self) -> None:
        """The report, and with `dump_stats` one `<report>-<action>.prof` file per action."""
        super().describe()
        path = self.report_path()
        if not self.dump_stats or path is None:
            return
        base = path[: -len(".txt")]
        for name, prof in self._profilers.items():
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
            stats_path = f"{base}-{safe}.prof"
            prof.dump_stats(stats_path)
            self.stats_paths.append(stats_path)


class PyTorchProfiler(Profiler):
    """`torch.profiler` over the run: operator-level times, a Chrome trace, optionally TensorBoard traces.

    Each action is also a `record_function` range named after it, so the trace shows the hooks, the
    step, backward and the optimizer step as labelled spans. The profiler's schedule advances once per
    training/validation/test/predict step.
    """

    _STEP_ACTIONS = frozenset({"training_step", "validation_step", "test_step", "predict_step"})

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        schedule: Any = None,
        export_to_chrome: bool = True,
        export_to_tensorboard: bool = False,
        record_functions: bool = True,
        sort_by_key: str | None = None,
        row_limit: int = 20,
        group_by_input_shapes: bool = False,
        table_kwargs: dict[str, Any] | None = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath, filename)
        self.group_by_input_shapes = group_by_input_shapes
        self.table_kwargs = dict(table_kwargs or {})
        if group_by_input_shapes:
            profiler_kwargs.setdefault("record_shapes", True)
        self.schedule = schedule
        self.export_to_chrome = export_to_chrome
        self.export_to_tensorboard = export_to_tensorboard
        self.record_functions = record_functions
        self.sort_by_key = sort_by_key
        self.row_limit = row_limit
        self.profiler_kwargs = profiler_kwargs
        self.trace_paths: list[str] = []
        self._profiler: Any = None
        self._ranges: dict[str, Any] = {}
        self._summary = ""

    def _folder(self) -> str:
        return self.dirpath or self._log_dir or os.getcwd()

    def _on_trace_ready(self, prof: Any) -> None:
        folder = self._folder()
        os.makedirs(folder, exist_ok=True)
        # torch saves a trace once, so the TensorBoard copy is made from the Chrome trace file.
        index = len(self.trace_paths)
        name = f"{self._stage or 'run'}-{self.filename or 'trace'}-{index}"
        if self._local_rank:
            name += f"-rank{self._local_rank}"
        path = os.path.join(folder, name + ".pt.trace.json")
        prof.export_chrome_trace(path)
        if self.export_to_tensorboard:
            import shutil
            import socket

            tb_folder = os.path.join(folder, "tensorboard")
            os.makedirs(tb_folder, exist_ok=True)
            # the TensorBoard profiler plugin reads "<worker>.<timestamp>.pt.trace.json"
            worker = f"{socket.gethostname()}_{os.getpid()}"
            shutil.copyfile(path, os.path.join(tb_folder, f"{worker}.{time.time_ns()}.pt.trace.json"))
        if self.export_to_chrome:
            self.trace_paths.append(path)
        else:
            os.remove(path)

    def setup(self, stage: str, local_rank: int = 0, log_dir: str | None = None) -> None:
        """Start `torch.profiler` for `stage`."""
        import inspect

        import torch
        import torch.profiler

        super().setup(stage, local_rank, log_dir)
        kwargs = dict(self.profiler_kwargs)
        if "activities" not in kwargs:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            kwargs["activities"] = activities
        if "acc_events" in inspect.signature(torch.profiler.profile).parameters:
            kwargs.setdefault("acc_events", True)  # keep every cycle's events for the summary
        schedule = self.schedule or torch.profiler.schedule(wait=1, warmup=1, active=3, repeat=1)
        self._summary = ""
        self._ranges.clear()
        self._profiler = torch.profiler.profile(
            schedule=schedule, on_trace_ready=self._on_trace_ready, **kwargs
        )
        self._profiler.start()

    def start(self, action_name: str) -> None:
        """Open a `record_function` range named `action_name`."""
        if not self.record_functions or self._profiler is None:
            return
        import torch

        rf = torch.autograd.profiler.record_function(action_name)
        rf.__enter__()
        self._ranges.setdefault(action_name, []).append(rf)

    def stop(self, action_name: str) -> None:
        """Close the range; after a step action, advance the profiler's schedule."""
        if self._profiler is None:
            return
        stack = self._ranges.get(action_name)
        if stack:
            stack.pop().__exit__(None, None, None)
        if action_name in self._STEP_ACTIONS:
            self._profiler.step()

    def _finish(self) -> None:
        prof = self._profiler
        if prof is None:
            return
        self._profiler = None
        for stack in self._ranges.values():
            while stack:
                stack.pop().__exit__(None, None, None)
        prof.stop()
        try:
            averages = prof.key_averages(group_by_input_shape=self.group_by_input_shapes)
        except Exception:  # no step reached the schedule's active phase
            self._summary = (
                "torch.profiler recorded no steps (the run was shorter than the schedule's wait+warmup)."
            )
            return
        sort_by = self.sort_by_key or (
            "cuda_time_total"
            if any(getattr(e, "device_time_total", 0) for e in averages)
            else "cpu_time_total"
        )
        self._summary = averages.table(sort_by=sort_by, row_limit=self.row_limit, **self.table_kwargs)

    def summary(self) -> str:
        """torch.profiler's operator table (stops the profiler if it still runs)."""
        self._finish()
        return self._summary

    def teardown(self, stage: str | None) -> None:
        """Stop the profiler if `describe` did not."""
        self._finish()
        super().teardown(stage)


_PROFILERS: dict[str, type[Profiler]] = {
    "simple": SimpleProfiler,
    "advanced": AdvancedProfiler,
    "pytorch": PyTorchProfiler,
    "passthrough": PassThroughProfiler,
}


def resolve_profiler(value: Any) -> Profiler:
    """Turn the Trainer's `profiler=` flag (None, a name or a Profiler) into a Profiler."""
    if value is None:
        return PassThroughProfiler()
    if isinstance(value, Profiler):
        return value
    if isinstance(value, str) and value.lower() in _PROFILERS:
        return _PROFILERS[value.lower()]()
    raise MisconfigurationException(
        f"profiler={value!r} is not valid; use one of {list(_PROFILERS)[:3]}, a fulmen.profilers.Profiler "
        "instance, or None."
    )


@contextlib.contextmanager
def _profiled_run(trainer: Trainer, stage: str) -> Generator[None, None, None]:
    """While a stage runs with an enabled profiler: set the profiler up, then report and tear it down.

    What is timed is written where it happens: the run plan (plan.py) hands the loops timed step
    methods and batch transfer, and the loops time their epochs, batches and `next()` on the data.
    """
    profiler = trainer.profiler
    profiler.setup(stage, local_rank=trainer.global_rank, log_dir=trainer.log_dir)
    try:
        yield
    finally:
        profiler._log_dir = trainer.log_dir
        try:
            profiler.describe()
        finally:
            profiler.teardown(stage)

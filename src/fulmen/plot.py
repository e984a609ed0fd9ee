"""Training curves from a run's logs: `fulmen.plot(log_dir)` or `fulmen plot <log_dir>` on the command line.

Reads `metrics.csv` (CSVLogger) or, when a run only has TensorBoard event files, their scalars. Every
logged metric gets a panel; names that differ only by their stage (`train_loss`, `val_loss`,
`test/loss`) or by Lightning's `_step`/`_epoch` suffix share one panel, so train and validation
curves sit on the same axes. Drawn with matplotlib's Agg canvas on a private Figure: no window, and
no change to the user's pyplot state or backend.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

# One logged value: (global step, epoch or nan, value).
Point = tuple[int, float, float]

_STAGES = ("train", "training", "val", "valid", "validation", "test")
_STAGE_NAME = {"training": "train", "valid": "val", "validation": "val"}
_NOT_PLOTTED = {"step", "epoch", "hp_metric"}
_STAGE_COLOURS = {"train": "C0", "val": "C1", "test": "C2"}


def _latest_version(folder: str) -> str | None:
    versions = []
    for entry in os.listdir(folder):
        suffix = entry[len("version_") :]
        if entry.startswith("version_") and suffix.isdigit() and os.path.isdir(os.path.join(folder, entry)):
            versions.append((int(suffix), entry))
    return os.path.join(folder, max(versions)[1]) if versions else None


def _has_events(folder: str) -> bool:
    return any(name.startswith("events.out.tfevents") for name in os.listdir(folder))


def find_run(log_dir: str | os.PathLike[str]) -> str:
    """The file or folder to read: metrics.csv itself, a version folder, or the latest version under a root."""
    path = os.fspath(log_dir)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"fulmen.plot: {path!r} does not exist; pass a run's log folder (version_N).")
    for candidate in (path, os.path.join(path, "lightning_logs")):
        if not os.path.isdir(candidate):
            continue
        if os.path.isfile(os.path.join(candidate, "metrics.csv")) or _has_events(candidate):
            return candidate
        latest = _latest_version(candidate)
        if latest is not None:
            return find_run(latest)
    raise FileNotFoundError(
        f"fulmen.plot: found no metrics.csv, TensorBoard events or version_N folder in {path!r}; pass the "
        "folder a CSVLogger or TensorBoardLogger wrote (e.g. lightning_logs/version_0)."
    )


def read_metrics(log_dir: str | os.PathLike[str]) -> dict[str, list[Point]]:
    """Every logged series of a run as `{name: [(step, epoch, value), ...]}`, in logging order."""
    run = find_run(log_dir)
    csv_path = run if os.path.isfile(run) else os.path.join(run, "metrics.csv")
    if os.path.isfile(csv_path):
        return _read_csv(csv_path)
    return _read_events(run)


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv(path: str) -> dict[str, list[Point]]:
    series: dict[str, list[Point]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = _number(row.get("step"))
            epoch = _number(row.get("epoch"))
            for key, text in row.items():
                value = _number(text)
                if key is None or key in ("step", "epoch") or value is None:
                    continue
                points = series.setdefault(key, [])
                at = int(step) if step is not None else len(points)
                points.append((at, epoch if epoch is not None else math.nan, value))
    return series


def _read_events(folder: str) -> dict[str, list[Point]]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as err:
        raise ImportError(
            f"{folder!r} holds TensorBoard event files; reading them needs `pip install tensorboard` "
            "(or log with CSVLogger)."
        ) from err
    acc = EventAccumulator(folder, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    epoch_at: dict[int, float] = {}
    if "epoch" in tags:
        epoch_at = {s.step: s.value for s in acc.Scalars("epoch")}
    epochs = sorted(epoch_at.items())
    series: dict[str, list[Point]] = {}
    for tag in tags:
        if tag == "epoch":
            continue
        series[tag] = [(s.step, _epoch_for(s.step, epoch_at, epochs), s.value) for s in acc.Scalars(tag)]
    return series


def _epoch_for(step: int, exact: dict[int, float], ordered: list[tuple[int, float]]) -> float:
    if step in exact:
        return exact[step]
    for at, epoch in ordered:  # the first epoch whose logged step is at or after this step
        if at >= step:
            return epoch
    return math.nan


def split_name(name: str) -> tuple[str, str]:
    """`"val_loss"` -> `("loss", "val")`, `"train/acc_step"` -> `("acc", "train step")`, `"lr"` -> `("lr", "")`."""
    base, label = name, []
    for sep in ("_", "/", "-"):
        head, found, tail = base.partition(sep)
        if found and head.lower() in _STAGES and tail:
            label.append(_STAGE_NAME.get(head.lower(), head.lower()))
            base = tail
            break
    else:
        for sep in ("_", "/", "-"):
            head, found, tail = base.rpartition(sep)
            if found and tail.lower() in _STAGES and head:
                label.append(_STAGE_NAME.get(tail.lower(), tail.lower()))
                base = head
                break
    for suffix in ("_step", "_epoch"):
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            label.append(suffix[1:])
            break
    return base, " ".join(label)


def _by_epoch(points: list[Point]) -> list[tuple[float, float]]:
    sums: dict[float, list[float]] = {}
    for _, epoch, value in points:
        if not math.isnan(epoch):
            sums.setdefault(epoch, []).append(value)
    return [(epoch, sum(v) / len(v)) for epoch, v in sorted(sums.items())]


def figure(
    log_dir: str | os.PathLike[str],
    x: str = "step",
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Any:
    """The matplotlib `Figure` of a run's curves (see `plot` for the arguments), e.g. to show in a notebook."""
    if x not in ("step", "epoch"):
        raise ValueError(f"fulmen.plot(x={x!r}): choose 'step' or 'epoch'.")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("fulmen.plot needs matplotlib: `pip install matplotlib`.") from err

    run = find_run(log_dir)
    series = read_metrics(run)
    panels: dict[str, list[tuple[str, list[Point]]]] = {}
    for name, points in series.items():
        if name in _NOT_PLOTTED or not points:
            continue
        base, label = split_name(name)
        if metrics is not None and base not in metrics and name not in metrics:
            continue
        panels.setdefault(base, []).append((label or name, points))
    if not panels:
        wanted = f" matching {list(metrics)}" if metrics is not None else ""
        raise ValueError(f"fulmen.plot: {run!r} has no logged metrics{wanted}; found {sorted(series)}.")

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.3 * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    for i, (base, lines) in enumerate(sorted(panels.items())):
        ax = fig.add_subplot(rows, cols, i + 1)
        others = 0
        for label, points in sorted(lines, key=lambda item: _order(item[0])):
            if x == "epoch":
                xy = _by_epoch(points)
            else:
                xy = [(float(step), value) for step, _, value in points]
            if not xy:
                continue
            xs, ys = zip(*xy)
            # the same colour for a stage in every panel: train blue, val orange, test green
            colour = _STAGE_COLOURS.get(label.split(" ")[0])
            if colour is None:
                colour, others = f"C{3 + others % 7}", others + 1
            # one value per epoch (validation, *_epoch): dots joined by a line; per-step values: a thin line
            once_per_epoch = x == "epoch" or len(points) <= len({p[1] for p in points})
            if once_per_epoch:
                ax.plot(xs, ys, label=label, color=colour, marker="o", markersize=3.5, linewidth=1.6)
            else:
                ax.plot(xs, ys, label=label, color=colour, linewidth=0.9, alpha=0.75)
        ax.set_title(base)
        ax.set_xlabel(x)
        ax.grid(True, alpha=0.3)
        if len(lines) > 1 or lines[0][0] != base:
            ax.legend(fontsize="small")
    fig.suptitle(title if title is not None else os.path.relpath(run))
    fig.fulmen_run = run  # type: ignore[attr-defined]
    return fig


def plot(
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    x: str = "step",
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> str:
    """Draw every logged metric of a run against `x` ("step" or "epoch") and save the image.

    Args:
        log_dir: a run's folder (`lightning_logs/version_0`), the folder above its versions (the latest
            is used) or a metrics.csv file.
        out: the image to write; the format follows its suffix (.png, .svg, .pdf). Default:
            `metrics.png` in the run's folder.
        x: "step" (the global step each value was logged at) or "epoch" (values averaged per epoch).
        metrics: only these panels (base names such as "loss", or full names such as "val_acc").
        title: a title above the panels (default: the run's folder).
        dpi: resolution of raster formats.

    Returns:
        The path of the written image.
    """
    fig = figure(log_dir, x=x, metrics=metrics, title=title, dpi=dpi)
    run = fig.fulmen_run
    if out is None:
        out = os.path.join(run if os.path.isdir(run) else os.path.dirname(run), "metrics.png")
    target = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    fig.savefig(target)
    return target


def _order(label: str) -> tuple[int, bool, str]:
    """Legend order: train, val, test; per-step values before their epoch means."""
    stage = next((i for i, name in enumerate(("train", "val", "test")) if label.startswith(name)), 3)
    return stage, not label.endswith("step"), label


def main(argv: Sequence[str] | None = None) -> int:
    """`fulmen plot <log_dir> [-o out.png] [--x step|epoch] [--metrics loss,acc]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="fulmen plot", description="Draw a run's training curves to an image."
    )
    parser.add_argument(
        "log_dir", help="a run folder (lightning_logs/version_0), its parent, or a metrics.csv"
    )
    parser.add_argument(
        "-o", "--out", help="image to write (.png, .svg, .pdf); default metrics.png in the run"
    )
    parser.add_argument("--x", choices=("step", "epoch"), default="step", help="the horizontal axis")
    parser.add_argument("--metrics", help="comma-separated panels to draw (e.g. loss,acc)")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        path = plot(args.log_dir, out=args.out, x=args.x, metrics=wanted, title=args.title, dpi=args.dpi)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"fulmen plot: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


class _CallableModule(types.ModuleType):
    """Lets `fulmen.plot(...)` call the function while `fulmen.plot` stays importable as a module."""

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        return plot(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

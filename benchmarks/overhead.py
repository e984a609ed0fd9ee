"""How much does the Trainer cost? fulmen against a hand-written PyTorch loop, measured in one run.

    python benchmarks/overhead.py --quick                          # about 2 minutes
    python benchmarks/overhead.py --markdown benchmarks/RESULTS.md # the full run, about 8 minutes

Every measurement runs in a fresh subprocess (this file with ``--worker``), and the implementations
are interleaved (plain, fulmen bare, fulmen defaults, plain, ...) so that drift in the machine's
speed hits all of them alike. Each worker builds the same model from the same seed, trains on the
same synthetic MNIST-shaped tensors in the same shuffled order, and times only the steady state:
the clock starts when step ``--warmup`` begins (after its batch is fetched) and stops when training
ends, read inside the worker: for a Trainer in ``training_step`` itself and ``on_train_end``, so that
no timing hook runs on every step (a per-step hook would bill the framework for the benchmark's own
instrumentation, which the plain loop reads inline). The table reports the median seconds per step
over the repetitions and the ratio to the plain loop.

fulmen runs in two modes:
  bare      enable_progress_bar=False, logger=False, enable_checkpointing=False,
            enable_model_summary=False: the loop itself.
  defaults  progress bar, CSVLogger, a checkpoint every epoch (100 steps), model summary and
            ``self.log`` every step: what a user gets without touching a flag.
If ``lightning`` is importable it is measured the same way, in the same table.

Also measured, each in fresh processes: ``import torch`` against ``import torch; import fulmen``,
the time from process start to the end of the first optimizer step, and peak RSS (ru_maxrss).

Only the standard library is imported at the top: a worker imports torch (and the framework) itself,
so import and start-up times are not polluted by this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "
STEPS_PER_EPOCH = 100
SEED = 1234


@dataclass(frozen=True)
class Config:
    model: str  # "mlp" or "cnn"
    batch_size: int
    threads: int  # 0: torch's default

    @property
    def label(self) -> str:
        threads = "1 thread" if self.threads == 1 else "default threads"
        name = "MLP 784-128-64-10" if self.model == "mlp" else "small CNN"
        return f"{name}, batch {self.batch_size}, {threads}"


CONFIGS = [
    Config("mlp", 32, 1),
    Config("mlp", 32, 0),
    Config("mlp", 256, 1),
    Config("mlp", 256, 0),
    Config("cnn", 32, 0),
]
# Start-up time and peak RSS are read from the workers of this configuration.
STARTUP_CONFIG = Config("mlp", 32, 0)


# ----------------------------------------------------------------------------------------------
# Worker side: one training run, one process.
# ----------------------------------------------------------------------------------------------


def _build_model(kind: str):
    from torch import nn

    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _make_loader(batch_size: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(SEED)
    n = batch_size * STEPS_PER_EPOCH
    x = torch.randn(n, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(SEED),
    )


def _run_plain(model, loader, warmup: int, steps: int, t_spawn: float) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = warmup + steps
    step = 0
    t_start = first_step = None
    model.train()
    while step < total:
        for x, y in loader:
            if step == warmup:
                t_start = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if first_step is None:
                first_step = time.time() - t_spawn
            step += 1
            if step == total:
                break
    t_end = time.perf_counter()
    return {"sec_per_step": (t_end - t_start) / steps, "first_step_s": first_step}


def _run_framework(
    lib: str, mode: str, model, loader, warmup: int, steps: int, t_spawn: float
) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    if lib == "fulmen":
        import fulmen as L
        from fulmen.callbacks import Callback
        from fulmen.loggers import CSVLogger
    else:
        import lightning as L
        from lightning.pytorch.callbacks import Callback
        from lightning.pytorch.loggers import CSVLogger

    log_each_step = mode == "defaults"

    class BenchModule(L.LightningModule):
        """The plain loop's step; it also takes the plain loop's timestamps, so no timing hook runs per step."""

        def __init__(self, net) -> None:
            super().__init__()
            self.net = net
            self.calls = 0
            self.t_start = self.first_step = None

        def training_step(self, batch, batch_idx):
            if self.calls == warmup:  # the plain loop starts its clock at the same point of step `warmup`
                self.t_start = time.perf_counter()
            elif self.calls == 1:  # the first optimizer step is over
                self.first_step = time.time() - t_spawn
            self.calls += 1
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            if log_each_step:
                self.log("train_loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class StepTimer(Callback):
        """Stops the clock when training ends (the per-step timestamps are taken in training_step)."""

        def __init__(self) -> None:
            self.t_end = None

        def on_train_end(self, trainer, pl_module) -> None:
            self.t_end = time.perf_counter()

    total = warmup + steps
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as root:
        flags = dict(
            max_steps=total,
            max_epochs=total // STEPS_PER_EPOCH + 2,
            accelerator="cpu",
            devices=1,
            callbacks=[timer],
            default_root_dir=root,
            num_sanity_val_steps=0,
        )
        if mode == "bare":
            off = dict(enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
            flags.update(off, logger=False)
        else:
            flags.update(logger=CSVLogger(root))
        trainer = L.Trainer(**flags)
        module = BenchModule(model)
        trainer.fit(module, train_dataloaders=loader)
        if trainer.global_step != total:
            raise RuntimeError(f"{lib} ran {trainer.global_step} optimizer steps, expected {total}.")
        checkpoints = len(list(Path(root).rglob("*.ckpt")))
    return {
        "sec_per_step": (timer.t_end - module.t_start) / steps,
        "first_step_s": module.first_step,
        "checkpoints": checkpoints,
    }


def _worker_train(args: argparse.Namespace) -> dict[str, float]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    model = _build_model(args.model)
    loader = _make_loader(args.batch_size)
    if args.impl == "plain":
        result = _run_plain(model, loader, args.warmup, args.steps, args.t_spawn)
    else:
        lib, mode = args.impl.split("-")
        result = _run_framework(lib, mode, model, loader, args.warmup, args.steps, args.t_spawn)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result["threads"] = torch.get_num_threads()
    return result


def _worker_import(what: str) -> dict[str, float]:
    t0 = time.perf_counter()
    import torch  # noqa: F401

    t_torch = time.perf_counter() - t0
    if what != "torch":
        importlib.import_module(what)
    return {"torch_s": t_torch, "total_s": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------
# Driver side: spawn workers, interleave, summarize.
# ----------------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Run from a checkout without installing: make src/ importable in the workers.
    if importlib.util.find_spec("fulmen") is None and (REPO / "src" / "fulmen").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
        sys.path.insert(0, str(REPO / "src"))  # for the version line in the report
    return env


def _spawn(worker_args: list[str], env: dict[str, str]) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *worker_args]
    t_spawn = time.time()
    proc = subprocess.run(
        [*cmd, "--t-spawn", repr(t_spawn)], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(
        f"worker failed (rc={proc.returncode}): {' '.join(cmd)}\n"
        f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    )


def _impls(include_lightning: bool) -> list[str]:
    impls = ["plain", "fulmen-bare", "fulmen-defaults"]
    if include_lightning:
        impls += ["lightning-bare", "lightning-defaults"]
    return impls


def _measure(args: argparse.Namespace, impls: list[str], env: dict[str, str]) -> dict:
    configs = [CONFIGS[0], CONFIGS[1], CONFIGS[4]] if args.quick else CONFIGS
    if args.only:
        configs = [c for c in configs if args.only in c.label]
        if not configs:
            raise SystemExit(f"--only {args.only!r} matches none of: {[c.label for c in CONFIGS]}")
    train: dict[tuple[Config, str], list[dict[str, float]]] = {(c, i): [] for c in configs for i in impls}
    imports: dict[str, list[dict[str, float]]] = {m: [] for m in ["torch"] + _import_targets(impls)}
    for rep in range(args.reps):
        print(f"repetition {rep + 1}/{args.reps}", flush=True)
        for name in imports:  # import timing: torch alone vs torch + framework, interleaved
            imports[name].append(_spawn(["--import-only", name], env))
        for config in configs:
            # Rotate the starting implementation each repetition: nobody always goes first.
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for impl in order:
                worker_args = [
                    *("--impl", impl, "--model", config.model, "--batch-size", str(config.batch_size)),
                    *("--threads", str(config.threads), "--steps", str(args.steps)),
                    *("--warmup", str(args.warmup)),
                ]
                result = _spawn(worker_args, env)
                train[(config, impl)].append(result)
                ms = result["sec_per_step"] * 1e3
                print(f"  {config.label:45s} {impl:19s} {ms:8.3f} ms/step", flush=True)
    return {"configs": configs, "train": train, "imports": imports}


def _import_targets(impls: list[str]) -> list[str]:
    return sorted({impl.split("-")[0] for impl in impls if impl != "plain"})


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / med * 100:.0f}%" if len(values) > 1 else ""


def _tables(results: dict, impls: list[str]) -> list[str]:
    """Markdown tables (also readable as plain text)."""
    train = results["train"]
    lines = ["### Steady-state training step (median ms/step; ratio to plain PyTorch)", ""]
    header = ["configuration", *impls]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for config in results["configs"]:
        plain = _median([r["sec_per_step"] for r in train[(config, "plain")]])
        cells = [config.label]
        for impl in impls:
            values = [r["sec_per_step"] for r in train[(config, impl)]]
            med = _median(values)
            ratio = "" if impl == "plain" else f" ({med / plain:.2f}x)"
            cells.append(f"{med * 1e3:.3f}{ratio} {_spread(values)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "±: half the range over repetitions, relative to the median.", ""]
    # The minimum is the least disturbed run: on a busy machine it tracks the code's own cost better.
    lines += ["Fastest repetition (min ms/step; ratio to plain's min):", ""]
    lines.append("| configuration | " + " | ".join(impls) + " |")
    lines.append("|" + "---|" * len(header))
    for config in results["configs"]:
        plain = min(r["sec_per_step"] for r in train[(config, "plain")])
        cells = [config.label]
        for impl in impls:
            best = min(r["sec_per_step"] for r in train[(config, impl)])
            cells.append(f"{best * 1e3:.3f}" + ("" if impl == "plain" else f" ({best / plain:.2f}x)"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    # Each repetition runs every implementation back to back, so the ratio within a repetition cancels
    # the drift between repetitions; its median is the most stable figure on a noisy machine.
    lines += [
        "Paired ratio (median over repetitions of impl / plain of the same repetition; [min, max]):",
        "",
    ]
    lines.append("| configuration | " + " | ".join(i for i in impls if i != "plain") + " |")
    lines.append("|" + "---|" * len(impls))
    for config in results["configs"]:
        plain_runs = [r["sec_per_step"] for r in train[(config, "plain")]]
        cells = [config.label]
        for impl in impls[1:]:
            ratios = [r["sec_per_step"] / p for r, p in zip(train[(config, impl)], plain_runs)]
            cells.append(f"{_median(ratios):.3f}x [{min(ratios):.2f}, {max(ratios):.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for impl in impls:
        if impl.endswith("-defaults"):
            counts = sorted({r["checkpoints"] for (_, i), runs in train.items() if i == impl for r in runs})
            lines.append(
                f"{impl}: {'/'.join(map(str, counts))} checkpoint file(s) on disk at the end of each run."
            )
    lines.append("")

    lines += ["### Start-up and memory (medians, fresh processes)", ""]
    lines.append("| measurement | " + " | ".join(impls) + " |")
    lines.append("|" + "---|" * (len(impls) + 1))
    startup = STARTUP_CONFIG if STARTUP_CONFIG in results["configs"] else results["configs"][0]
    first = [_median([r["first_step_s"] for r in train[(startup, i)]]) for i in impls]
    rss = [_median([r["maxrss_mb"] for r in train[(startup, i)]]) for i in impls]
    lines.append(
        "| process start → end of first optimizer step (s) | " + " | ".join(f"{v:.2f}" for v in first) + " |"
    )
    lines.append("| peak RSS, ru_maxrss (MB) | " + " | ".join(f"{v:.0f}" for v in rss) + " |")
    lines += ["", f"(both read from the `{startup.label}` runs)", ""]

    imports = results["imports"]
    torch_only = _median([r["total_s"] for r in imports["torch"]])
    lines += ["| import | median seconds | added to `import torch` |", "|---|---|---|"]
    lines.append(f"| `import torch` | {torch_only:.3f} | |")
    for name in _import_targets(impls):
        total = _median([r["total_s"] for r in imports[name]])
        lines.append(f"| `import torch; import {name}` | {total:.3f} | +{total - torch_only:.3f} |")
    return lines


def _machine() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("fulmen", "lightning"):
        if importlib.util.find_spec(name) is not None:
            versions.append(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    fulmen_spec = importlib.util.find_spec("fulmen")
    if fulmen_spec is not None and fulmen_spec.origin:
        versions.append(f"fulmen imported from {Path(fulmen_spec.origin).parent}")
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if git.returncode == 0:
        versions.append(f"repository at commit {git.stdout.strip()}")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores (torch default threads: {torch.get_num_threads()})",
        f"- {', '.join(versions)}; {platform.platform()}",
    ]


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, --quick 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps/run (default 300, --quick 150)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before the clock starts")
    parser.add_argument("--quick", action="store_true", help="fewer configurations, repetitions and steps")
    parser.add_argument("--markdown", metavar="PATH", help="also write the results as Markdown to PATH")
    parser.add_argument("--no-lightning", action="store_true", help="skip lightning even if installed")
    parser.add_argument(
        "--only", metavar="TEXT", help='configurations whose label contains TEXT ("1 thread")'
    )
    # Worker mode (internal).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--import-only", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--t-spawn", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = _worker_import(args.import_only) if args.import_only else _worker_train(args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    args.reps = args.reps or (3 if args.quick else 5)
    args.steps = args.steps or (150 if args.quick else 300)
    env = _child_env()
    has_lightning = not args.no_lightning and importlib.util.find_spec("lightning") is not None
    impls = _impls(has_lightning)
    if not has_lightning:
        print("lightning is not installed: measuring plain PyTorch and fulmen only.")
    command = " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]])

    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: 1-minute load average is {load_before:.2f}; other processes will add noise.")
    start = time.perf_counter()
    results = _measure(args, impls, env)
    elapsed = time.perf_counter() - start
    load = f"1-minute load average {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"
    tables = _tables(results, impls)
    print()
    print("\n".join(tables))
    print(f"\n({elapsed:.0f}s in all; {load})")

    if args.markdown:
        doc = [
            "# fulmen overhead benchmark",
            "",
            "Generated by `benchmarks/overhead.py` (see its docstring for the method). Lower is better.",
            "",
            "## Machine",
            "",
            *_machine(),
            f"- command: `{command}` ({args.reps} repetitions, {args.warmup} warm-up + {args.steps} timed "
            f"steps per run, {elapsed:.0f}s in all)",
            f"- {load} (the benchmark's own worker adds about 1; more means competing processes)",
            "",
            "## Results",
            "",
            *(
                [
                    f"**Measured on a busy machine** (load {load_before:.1f} on {os.cpu_count()} cores): "
                    "absolute times are inflated and ratios noisy; rerun on an idle machine.",
                    "",
                ]
                if load_before > 1.0
                else []
            ),
            *tables,
            "",
        ]
        Path(args.markdown).write_text("\n".join(doc))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

"""GPU check for fulmen's precision modes: does mixed precision train, and what does fulmen cost on a GPU?

Run on a machine with CUDA (about three minutes on one H100, Lightning included when installed):

    PYTHONPATH=src python benchmarks/gpu_check.py

It prints three markdown tables and exits 1 if a training check failed:

1. Training checks. An MLP (784-128-64-10) and a small CNN train on learnable synthetic data under
   "16-mixed" and "bf16-mixed": the loss must fall, the weights stay fp32, the step runs in the half
   dtype, and for "16-mixed" the grad scaler must hold a finite scale and skip a step whose loss is
   inf (weights unchanged, scale halved).
2. Host synchronizations. A short fit per precision with CUDA's sync debug mode raising after the
   warm-up steps: names the first call inside a step that waits for the GPU ("none" is the goal).
3. Throughput. Time per step of a hand-written PyTorch loop, of fulmen and (when `lightning` is
   installed) of Lightning on the same model, data, optimizer and precision (fp32, bf16-mixed,
   16-mixed), measured alternately (plain, fulmen, lightning, plain, ...) several times; the table
   shows medians and the ratios to the plain loop. The batches are already on the GPU and no loop
   synchronizes with the host inside the timed window.

On a machine without CUDA it says so and exits 0. `--device cpu` runs the same code on the CPU with
tiny step counts ("16-mixed" through a CPU grad scaler) to check the script itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import fulmen as L  # noqa: E402
from fulmen.precision import MixedPrecision  # noqa: E402

# ------------------------------------------------------------------ models and data


def make_mlp() -> nn.Module:
    """The 784-128-64-10 MLP of the overhead benchmark."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def make_cnn() -> nn.Module:
    """Two conv blocks and a linear head on 1x28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


MODELS = {"mlp": make_mlp, "cnn": make_cnn}


class Batches:
    """A fixed list of (x, y) batches already on the device, iterated like a DataLoader."""

    def __init__(self, n: int, batch_size: int, device: torch.device, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        prototypes = torch.randn(10, 1, 28, 28, generator=generator)  # one noisy "digit" per class
        self.batches = []
        for _ in range(n):
            y = torch.randint(0, 10, (batch_size,), generator=generator)
            x = prototypes[y] + 2.0 * torch.randn(batch_size, 1, 28, 28, generator=generator)
            self.batches.append((x.to(device), y.to(device)))

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def framework_classes(pkg: Any) -> tuple[type, type]:
    """The benchmark's LightningModule and step clock, built on `pkg` (fulmen, or lightning to compare)."""

    class Classifier(pkg.LightningModule):  # type: ignore[misc,name-defined]
        """A LightningModule around one of MODELS, with the loss kept on the device (no .item())."""

        def __init__(self, net: nn.Module, lr: float = 0.01) -> None:
            super().__init__()
            self.net = net
            self.lr = lr
            self.losses: list[torch.Tensor] = []
            self.step_dtype: torch.dtype | None = None
            self.record = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            logits = self(x)
            loss = nn.functional.cross_entropy(logits, y)
            if self.record:
                self.step_dtype = logits.dtype
                self.losses.append(loss.detach())
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    class Clock(pkg.Callback):  # type: ignore[misc,name-defined]
        """Times the steps after `warmup`, synchronizing the device only at both ends of the window."""

        def __init__(self, warmup: int, device: str) -> None:
            self.warmup = warmup
            self.device = device
            self.start = self.end = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == self.warmup:
                sync(self.device)
                self.start = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            sync(self.device)
            self.end = time.perf_counter()

    return Classifier, Clock


Classifier, _Clock = framework_classes(L)


def quiet_trainer(device: str, precision: Any, pkg: Any = L, **kwargs: Any) -> Any:
    """A Trainer (of `pkg`) with the logger, progress bar, checkpointing and summary off."""
    return pkg.Trainer(
        accelerator=device,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def precision_flag(name: str, device: str) -> Any:
    """The `precision=` value; on the CPU, "16-mixed" is built by hand with a CPU grad scaler."""
    if name == "16-mixed" and device == "cpu":
        return MixedPrecision("16-mixed", "cpu")
    return name


# ------------------------------------------------------------------ 1. training checks


def check_training(model_name: str, precision: str, device: str, steps: int) -> dict[str, Any]:
    """Train under `precision`; report whether the loss fell and the dtypes and scaler behaved."""
    torch.manual_seed(0)
    data = Batches(steps, 64, torch.device(device))
    model = Classifier(MODELS[model_name]())
    model.record = True
    trainer = quiet_trainer(device, precision_flag(precision, device), max_steps=steps)
    trainer.fit(model, data)
    losses = torch.stack(model.losses).float().cpu()
    k = max(1, steps // 10)
    first, last = losses[:k].mean().item(), losses[-k:].mean().item()
    half = torch.float16 if precision == "16-mixed" else torch.bfloat16
    problems = []
    if not last < 0.9 * first:
        problems.append(f"loss did not fall ({first:.3f} -> {last:.3f})")
    if model.step_dtype != half:
        problems.append(f"step ran in {model.step_dtype}, expected {half}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        problems.append("weights are not fp32")
    scale = "-"
    plugin = trainer.precision_plugin
    if precision == "16-mixed":
        scaler = getattr(plugin, "scaler", None)
        if scaler is None:
            problems.append("no grad scaler")
        else:
            value = scaler.get_scale()
            scale = f"{value:g}"
            if not (0 < value < float("inf")):
                problems.append(f"scale is {value}")
            problems += check_overflow_skip(model, trainer, data)
    return {
        "model": model_name,
        "precision": precision,
        "first": first,
        "last": last,
        "scale": scale,
        "ok": not problems,
        "problems": "; ".join(problems) or "-",
    }


def check_overflow_skip(model: Classifier, trainer: L.Trainer, data: Batches) -> list[str]:
    """One more fit whose loss is inf: the step must be skipped and the scale halved."""

    class Overflow(Classifier):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return super().training_step(batch, batch_idx) * float("inf")

    broken = Overflow(model.net)
    scaler = trainer.precision_plugin.scaler  # type: ignore[attr-defined]
    scale_before = scaler.get_scale()
    weights_before = [p.detach().clone() for p in broken.parameters()]
    again = quiet_trainer(trainer.accelerator.name, trainer.precision_plugin, max_steps=1)
    again.fit(broken, data)
    problems = []
    if not all(torch.equal(a, b) for a, b in zip(weights_before, broken.parameters())):
        problems.append("an inf step changed the weights")
    if scaler.get_scale() != scale_before * scaler.get_backoff_factor():
        problems.append(f"scale went {scale_before} -> {scaler.get_scale()} after inf, expected a backoff")
    return problems


def check_no_sync(precision: str, device: str, steps: int = 30) -> str:
    """Train with CUDA's sync debug mode set to raise after a few warm-up steps: "none", or where it synchronized."""
    if device != "cuda":
        return "- (needs CUDA)"

    class Strict(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 5:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            torch.cuda.set_sync_debug_mode("default")

    data = Batches(steps, 32, torch.device(device), seed=2)
    trainer = quiet_trainer(device, precision, max_epochs=1, callbacks=[Strict()])
    try:
        trainer.fit(Classifier(MODELS["mlp"]()), data)
    except RuntimeError as err:
        torch.cuda.set_sync_debug_mode("default")
        import traceback

        frames = traceback.extract_tb(err.__traceback__)
        return (
            f"synchronized in {frames[-1].name} ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"
        )
    return "none"


# ------------------------------------------------------------------ 2. throughput


def sync(device: str) -> None:
    """Wait for the device (only around the timed window)."""
    if device == "cuda":
        torch.cuda.synchronize()


def plain_loop(model_name: str, precision: str, device: str, data: Batches, warmup: int) -> float:
    """Seconds per step of a hand-written loop with the same model, optimizer and precision."""
    torch.manual_seed(0)
    net = MODELS[model_name]().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None
    start = 0.0
    for i, (x, y) in enumerate(data):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        optimizer.zero_grad()
        if autocast_dtype is not None:
            with torch.autocast(device, dtype=autocast_dtype):
                loss = nn.functional.cross_entropy(net(x), y)
        else:
            loss = nn.functional.cross_entropy(net(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / (len(data) - warmup)


def framework_loop(
    model_name: str, precision: str, device: str, data: Batches, warmup: int, pkg: Any = L
) -> float:
    """Seconds per step of fulmen (or `pkg`) on the same setup, timed between two synchronizations."""
    module_class, clock_class = (Classifier, _Clock) if pkg is L else framework_classes(pkg)
    torch.manual_seed(0)
    clock = clock_class(warmup, device)
    model = module_class(MODELS[model_name]())
    flag = precision_flag(precision, device) if pkg is L else precision
    trainer = quiet_trainer(device, flag, pkg, max_epochs=1, callbacks=[clock])
    trainer.fit(model, data)
    return (clock.end - clock.start) / (len(data) - warmup)


def lightning_package() -> Any:
    """`lightning` (or `pytorch_lightning`) when installed, to measure it in the same run; else None."""
    for name in ("lightning", "pytorch_lightning"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def measure(
    model_name: str, batch_size: int, precision: str, device: str, steps: int, repeats: int, other: Any
) -> dict:
    """Alternate plain, fulmen (and `other`, e.g. lightning) runs `repeats` times; medians of seconds per step."""
    warmup = max(5, steps // 5)
    data = Batches(steps + warmup, batch_size, torch.device(device), seed=1)
    times: dict[str, list[float]] = {"plain": [], "fulmen": [], "other": []}
    for _ in range(repeats):
        times["plain"].append(plain_loop(model_name, precision, device, data, warmup))
        times["fulmen"].append(framework_loop(model_name, precision, device, data, warmup))
        if other is not None:
            times["other"].append(framework_loop(model_name, precision, device, data, warmup, other))
    medians = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    return {"model": model_name, "batch": batch_size, "precision": precision, **medians}


# ------------------------------------------------------------------ main


def main() -> int:
    """Run both parts and print the tables; 1 if a training check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=None, help="training steps per check")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device on this machine, nothing to check. Run it where torch.cuda.is_available()."
        )
        return 0
    steps = args.steps or (300 if device == "cuda" else 40)
    bench_steps = 500 if device == "cuda" else 30
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (script self-check)"
    print(f"# fulmen GPU check\n\ndevice: {name} · torch {torch.__version__} · fulmen {L.__version__}\n")

    modes = ["16-mixed", "bf16-mixed"]
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        modes = ["16-mixed"]
        print("(this GPU has no bf16: bf16-mixed is skipped)\n")
    results = [check_training(m, p, device, steps) for m in MODELS for p in modes]
    print("## Mixed-precision training\n")
    print("| model | precision | loss first 10% | loss last 10% | loss scale | result |")
    print("|---|---|---|---|---|---|")
    for r in results:
        verdict = "ok" if r["ok"] else f"FAIL: {r['problems']}"
        print(
            f"| {r['model']} | {r['precision']} | {r['first']:.3f} | {r['last']:.3f} | {r['scale']} | {verdict} |"
        )

    print("\n## Host synchronizations inside a training step (CUDA sync debug mode)\n")
    print("| precision | synchronizing call |")
    print("|---|---|")
    for precision in ["32-true", *modes]:
        print(f"| {precision} | {check_no_sync(precision, device)} |")
    print("\n(16-mixed: torch's GradScaler.step reads found_inf on the host, in a hand-written loop too.)")

    other = lightning_package() if device == "cuda" else None
    other_name = f"{other.__name__} {other.__version__}" if other is not None else "lightning (not installed)"
    print("\n## Throughput (median of alternating runs; lower ms/step is better)\n")
    print(
        f"| model | batch | precision | plain ms/step | fulmen ms/step | fulmen/plain | {other_name} / plain |"
    )
    print("|---|---|---|---|---|---|---|")
    cases = [("mlp", 32), ("mlp", 256), ("cnn", 64)]
    for model_name, batch in cases:
        for precision in ["32-true", *modes]:
            r = measure(model_name, batch, precision, device, bench_steps, args.repeats, other)
            print(
                f"| {model_name} | {batch} | {precision} | {1e3 * r['plain']:.3f} | {1e3 * r['fulmen']:.3f} "
                f"| {r['fulmen'] / r['plain']:.3f}x | {r['other'] / r['plain']:.2f}x |",
                flush=True,
            )
    failed = [r for r in results if not r["ok"]]
    print(f"\n{len(results) - len(failed)}/{len(results)} training checks passed.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

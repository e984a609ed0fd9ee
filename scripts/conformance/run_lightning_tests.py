"""Run Lightning 2.6's public-behaviour test files against fulmen (or against Lightning itself) and count.

    python scripts/conformance/run_lightning_tests.py LIGHTNING_SRC [--work DIR] [--against fulmen|lightning]
                                                     [--python PYTHON] [FILE ...]

LIGHTNING_SRC is a Lightning source tree (e.g. `git archive 2.6.5 tests/tests_pytorch | tar x`); nothing of it
is copied into fulmen. The chosen test files and Lightning's test helpers are copied to WORK (default
/tmp/fulmen-conformance), with two files of our own in place of Lightning's: a conftest.py (installs
lightning_alias.py for --against fulmen; the few fixtures these files use) and helpers/runif.py (skips what
needs CUDA, MPS, TPU, DeepSpeed or standalone runs; package conditions by what is installed). Each file runs
in its own pytest process; the table of passed/failed/skipped and a failure list go to stdout and
WORK/results.json. Run it with a Python that has torch, pytest, fulmen (or lightning), torchmetrics,
scikit-learn, omegaconf, jsonargparse, cloudpickle, pyyaml, tensorboard.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = (
    "callbacks/test_early_stopping.py",
    "callbacks/test_lr_monitor.py",
    "checkpointing/test_model_checkpoint.py",
    "trainer/logging_/test_train_loop_logging.py",
    "trainer/logging_/test_eval_loop_logging.py",
    "models/test_hooks.py",
)

CONFTEST = """
import os
import sys

if os.environ.get("CONFORMANCE_AGAINST") == "compat":  # fulmen's zero-change mode alone, as a user gets it
    import fulmen.compat

    fulmen.compat.install()
elif os.environ.get("CONFORMANCE_AGAINST", "fulmen") == "fulmen":
    sys.path.insert(0, {alias_dir!r})
    import lightning_alias

    lightning_alias.install([os.path.dirname(os.path.abspath(__file__))])

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_env_variables():
    saved = os.environ.copy()
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_process_group_left():
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture
def single_process_pg():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    torch.distributed.init_process_group("gloo")
    yield
    torch.distributed.destroy_process_group()


def _cuda_count(monkeypatch, n):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)


@pytest.fixture
def cuda_count_0(monkeypatch):
    _cuda_count(monkeypatch, 0)


@pytest.fixture
def cuda_count_1(monkeypatch):
    _cuda_count(monkeypatch, 1)


@pytest.fixture
def cuda_count_2(monkeypatch):
    _cuda_count(monkeypatch, 2)


@pytest.fixture
def mps_count_0(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def pytest_sessionfinish(session):
    if "lightning_alias" in sys.modules:
        out = os.environ.get("CONFORMANCE_MISSING_OUT")
        if out:
            import json

            with open(out, "w") as f:
                json.dump(sys.modules["lightning_alias"].MISSING, f)
"""

RUNIF = """
import importlib.util
import sys

import pytest
import torch
from packaging.version import Version

_HARDWARE = {"tpu", "mps", "standalone", "deepspeed", "bf16_cuda", "dynamo", "xla", "fsdp"}


def RunIf(**kwargs):
    reasons = []
    for key, value in kwargs.items():
        if key == "min_cuda_gpus":
            if torch.cuda.device_count() < value:
                reasons.append(f"{value} GPU(s)")
        elif key == "min_torch":
            if Version(torch.__version__.split("+")[0]) < Version(value):
                reasons.append(f"torch>={value}")
        elif key == "max_torch":
            if Version(torch.__version__.split("+")[0]) >= Version(value):
                reasons.append(f"torch<{value}")
        elif key == "min_python":
            if sys.version_info < tuple(int(p) for p in value.split(".")):
                reasons.append(f"python>={value}")
        elif key in ("skip_windows", "linux_only"):
            continue
        elif key in _HARDWARE:
            if value:
                reasons.append(key)
        elif value and importlib.util.find_spec(key) is None:
            reasons.append(key)
    return pytest.mark.skipif(bool(reasons), reason=f"Requires: [{' + '.join(reasons)}]")


_xfail_gloo_windows = pytest.mark.xfail(RuntimeError, strict=True, condition=False, reason="windows only")
"""


def prepare(src: Path, work: Path, files: list[str]) -> None:
    """Copy the test files and Lightning's helpers to `work`, with our conftest.py and runif.py."""
    tests = src / "tests" / "tests_pytorch"
    if not tests.is_dir():
        sys.exit(f"{src} has no tests/tests_pytorch: pass a Lightning source tree")
    if work.exists():
        shutil.rmtree(work)
    dest = work / "tests_pytorch"
    shutil.copytree(tests / "helpers", dest / "helpers")
    shutil.copy(tests / "__init__.py", dest / "__init__.py")
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tests / rel, target)
        for parent in target.parents:
            if parent == dest:
                break
            (parent / "__init__.py").touch()
    (dest / "conftest.py").write_text(CONFTEST.format(alias_dir=str(HERE)))
    (dest / "helpers" / "runif.py").write_text(RUNIF)


def run_file(
    python: str, work: Path, rel: str, against: str, fulmen_src: Path | None, collect_only: bool = False
) -> dict:
    """Run one test file in its own pytest process; the counts and each failure's first error line."""
    xml = work / (rel.replace("/", "_") + ".xml")
    missing = work / (rel.replace("/", "_") + ".missing.json")
    env = dict(os.environ, CONFORMANCE_AGAINST=against, CONFORMANCE_MISSING_OUT=str(missing))
    paths = [str(work)]
    if against == "fulmen":
        # sitecustomize installs the aliases in processes the tests start too (ddp_spawn)
        paths.append(str(HERE / "autoalias"))
        env["FULMEN_ALIAS_CALLERS"] = str(work)
        if fulmen_src is not None:
            paths.insert(0, str(fulmen_src))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [
        python,
        "-m",
        "pytest",
        f"tests_pytorch/{rel}",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
    ]
    cmd += ["-o", "addopts=", "--timeout=120"] if _has_timeout_plugin(python) else ["-o", "addopts="]
    if collect_only:
        cmd.append("--collect-only")
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    counts: dict = {"passed": 0, "failed": 0, "skipped": 0, "failures": {}}
    if collect_only:  # e.g. "53 tests collected in 2.1s" or "1 error in 0.5s"
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        counts["collected"] = lines[-1] if lines else proc.stderr[-300:]
        errors = [line for line in proc.stdout.splitlines() if line.startswith(("E   ", "ERROR"))]
        counts["failures"] = {f"<collection {i}>": line for i, line in enumerate(errors[:5])}
        return counts
    if not xml.exists():
        counts["failures"]["<collection>"] = proc.stdout[-2000:] + proc.stderr[-2000:]
        return counts
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if case.find("skipped") is not None:
            counts["skipped"] += 1
        elif bad is not None:
            counts["failed"] += 1
            counts["failures"][name] = (
                (bad.get("message") or "").strip().splitlines()[0][:300] if bad.get("message") else ""
            )
        else:
            counts["passed"] += 1
    if missing.exists():
        counts["missing_names"] = json.loads(missing.read_text())
    return counts


def _has_timeout_plugin(python: str) -> bool:
    probe = [python, "-c", "import pytest_timeout"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def main() -> None:
    """Prepare, run every file, print the table and write WORK/results.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lightning_src", type=Path)
    parser.add_argument("files", nargs="*", default=list(FILES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/fulmen-conformance"))
    parser.add_argument("--against", choices=("fulmen", "compat", "lightning"), default="fulmen")
    parser.add_argument("--collect-only", action="store_true", help="only count the tests each file collects")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--fulmen-src", type=Path, default=None, help="a fulmen src/ folder to test (default: installed)"
    )
    args = parser.parse_intermixed_args()
    prepare(args.lightning_src.resolve(), args.work, args.files)
    results = {
        rel: run_file(args.python, args.work, rel, args.against, args.fulmen_src, args.collect_only)
        for rel in args.files
    }
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(
        f"against {args.against}\n\n| file | passed | failed | skipped | pass rate (of run) |\n|---|---|---|---|---|"
    )
    for rel, r in results.items():
        if "collected" in r:
            print(f"| {rel} | {r['collected']} |")
            continue
        ran = r["passed"] + r["failed"]
        print(f"| {rel} | {r['passed']} | {r['failed']} | {r['skipped']} | {r['passed']}/{ran} |")
    for rel, r in results.items():
        for name, message in r["failures"].items():
            print(f"FAIL {rel}::{name}: {message}")


if __name__ == "__main__":
    main()

"""The package's layers (docs/architecture.md, "Layers"): no module imports one from a layer above it.

Every `import` of a fulmen module counts, at the top of a file or inside a function, except those
under `if TYPE_CHECKING:` (types only, never run). Within one layer any direction is allowed.
"""

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "fulmen"

# Lowest first. A module belongs to the longest entry that is it or a package above it ("fulmen"
# itself is only the package's __init__).
LAYERS: list[tuple[str, ...]] = [
    # 0. foundations: no fulmen imports beyond this layer
    (
        "fulmen.utilities",
        "fulmen.states",
        "fulmen.writer",
        "fulmen.combined_loader",
        "fulmen.progress",
        "fulmen.seed",
        "fulmen.flags",
        "fulmen.environments",
        "fulmen.accelerators",
        "fulmen.profilers",
        "fulmen.import_paths",
        "fulmen.out_of_scope",
        "fulmen.compat",
    ),
    # 1. values a run computes and keeps: numerics, logged results, optimizers, checkpoint files and state
    (
        "fulmen.precision",
        "fulmen.layer_sync",
        "fulmen.results",
        "fulmen.optim",
        "fulmen.hparams",
        "fulmen.epoch_replay",
        "fulmen.checkpoint",
        "fulmen.checkpoint_io",
        "fulmen.hparams_file",
        "fulmen.plugins",
        "fulmen.utilities.types",
    ),
    # 2. what users subclass, and where their data comes from
    (
        "fulmen.module",
        "fulmen.hparams_mixin",
        "fulmen.export",
        "fulmen.datamodule",
        "fulmen.compiled",
        "fulmen.data",
        "fulmen.callbacks.callback",
        "fulmen.callbacks.checkpoint",
        "fulmen.loggers.logger",
    ),
    # 3. the run machinery: devices and processes, hook dispatch, the run plan, the loops
    (
        "fulmen.strategies",
        "fulmen.preemption",
        "fulmen.hooks",
        "fulmen.plan",
        "fulmen.loops",
    ),
    # 4. concrete callbacks and loggers, and the tuner they drive
    ("fulmen.callbacks", "fulmen.loggers", "fulmen.tuner"),
    # 5. the Trainer, which builds the default callbacks and logger
    ("fulmen.trainer",),
    # 6. entry points
    ("fulmen.cli", "fulmen.demos", "fulmen.plot", "fulmen.__main__", "fulmen"),
]

# Upward imports made on purpose, each inside a function and with its reason.
ALLOWED_UPWARD = {
    # ModelCheckpoint asks whether the user's Trainer overrides save_checkpoint (one rule: is_overridden)
    ("fulmen.callbacks.model_checkpoint", "fulmen.trainer"),
    # the tuner's trial runs build a quiet fulmen Trainer on the same hardware as the user's
    ("fulmen.tuner", "fulmen.trainer"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(name: str) -> int:
    best = None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if name == prefix or (prefix != "fulmen" and name.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    assert best is not None, f"{name} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return best[1]


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def _imports(path: pathlib.Path, me: str | None = None) -> list[tuple[str, int]]:
    """(imported fulmen module, line) for every import that runs (not under TYPE_CHECKING)."""
    me = me or _module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names if a.name.startswith("fulmen"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                if not base.startswith("fulmen"):
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if _is_module(sub):
                        found.append((sub, child.lineno))
                    elif not (base == "fulmen" and alias.name == "__version__"):
                        found.append((base, child.lineno))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        me = _module_name(path)
        mine = _layer(me)
        for target, line in _imports(path):
            if _layer(target) > mine and (me, target) not in ALLOWED_UPWARD:
                out.append(
                    f"{path.relative_to(SRC.parent)}:{line}: {me} (layer {mine}) imports {target} "
                    f"(layer {_layer(target)})"
                )
    return out


def test_no_module_imports_from_a_layer_above_it():
    assert _violations() == []


def test_every_module_has_a_layer():
    for path in SRC.rglob("*.py"):
        _layer(_module_name(path))


@pytest.mark.parametrize(
    "source, target", [("fulmen.loops", "fulmen.trainer"), ("fulmen.module", "fulmen.loops")]
)
def test_the_check_sees_an_upward_import(tmp_path, source, target):
    path = tmp_path / "fulmen" / "x.py"
    path.parent.mkdir()
    path.write_text(f"def f():\n    import {target}\n")
    assert [name for name, _ in _imports(path, source)] == [target]
    assert _layer(target) > _layer(source)


# The seam of issue 10: outside trainer.py the Trainer is read through public attributes only. A Trainer
# is reached under these names (`trainer.x`, `t.x`, `self.trainer.x`, `self._trainer.x`).
_TRAINER_NAMES = {"trainer", "t"}
_TRAINER_ATTRIBUTES = {"trainer", "_trainer"}


def _private_trainer_reads(path: pathlib.Path) -> list[str]:
    """`<a Trainer>._name` in `path` (dunder names are Python's, not the Trainer's)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if _is_trainer(node.value):
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    for node in ast.walk(ast.parse(path.read_text())):  # getattr(trainer, "_name", ...)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and _is_trainer(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
            and not node.args[1].value.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno}: .{node.args[1].value}")
    return found


def _is_trainer(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in _TRAINER_NAMES) or (
        isinstance(node, ast.Attribute) and node.attr in _TRAINER_ATTRIBUTES
    )


def test_no_module_but_the_trainer_reads_a_private_trainer_attribute():
    reads = [
        r
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "trainer.py"
        for r in _private_trainer_reads(path)
    ]
    assert reads == []


def test_the_private_read_check_sees_each_way_of_reaching_the_trainer(tmp_path):
    path = tmp_path / "x.py"
    path.write_text(
        "trainer._a\nt._b\nself.trainer._c\nself._trainer._d\ntrainer.public\ntrainer.__class__\n"
        "getattr(trainer, '_e', None)\nhasattr(self.trainer, '_f')\ngetattr(trainer, 'public')\n"
    )
    assert [r.split(": ")[1] for r in _private_trainer_reads(path)] == [
        "._a",
        "._b",
        "._c",
        "._d",
        "._e",
        "._f",
    ]

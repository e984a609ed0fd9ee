"""Import aliases for running Lightning's own tests (and Lightning projects) against fulmen, unchanged.

This is a measuring tool, not fulmen's zero-change mode (that is `fulmen.compat`): it must let a test
file import even when fulmen lacks some internal name, so that the file's tests run one by one and each
fails (or passes) on its own behaviour. So, for every module under `lightning`, `lightning.pytorch`,
`pytorch_lightning`, `lightning.fabric` and `lightning_fabric`:

- a fulmen module of the same path (lightning.pytorch.callbacks.early_stopping ->
  fulmen.callbacks.early_stopping) or of the path in `RENAMED` is used as it is (so `mock.patch` by
  path patches fulmen itself);
- any other path gets a stand-in module whose attributes are looked up in fulmen's public modules;
  feature flags (`_RICH_AVAILABLE`, `_TORCH_GREATER_EQUAL_2_1`, `_IS_WINDOWS`) get their real values;
  a name found nowhere is a `Missing` placeholder class that raises `MissingInFulmen` when called,
  and is recorded in `MISSING` (the runner prints which ones the tests touched).

`install()` puts the finder first on `sys.meta_path`. Use it from a conftest.py or a script's first line.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Any

ROOTS = {
    "lightning.pytorch": "",
    "pytorch_lightning": "",
    "lightning.fabric": "",
    "lightning_fabric": "",
    "lightning": "",
}
# Lightning module paths (after the root) whose fulmen module has another path
RENAMED = {
    "core": "",
    "core.module": "module",
    "core.datamodule": "datamodule",
    "core.hooks": "hooks",
    "core.optimizer": "optim",
    "core.saving": "checkpoint",
    "demos.boring_classes": "demos",
    "trainer.states": "states",
    "trainer.trainer": "trainer",
    "utilities.exceptions": "utilities",
    "utilities.rank_zero": "utilities",
    "utilities.seed": "seed",
    "utilities.model_helpers": "utilities",
    "callbacks.progress.tqdm_progress": "callbacks.progress",
    "callbacks.progress.rich_progress": "callbacks.rich_progress",
    "callbacks.progress.progress_bar": "callbacks.progress",
    "loggers.csv_logs": "loggers.csv_logs",
}
# with FULMEN_ALIAS_SYNTHETIC_DEMOS=1, Lightning's demo module that downloads MNIST is served by
# synthetic/synthetic_demos.py (on sys.path), for fulmen and Lightning runs alike
SYNTHETIC_DEMOS = ("demos.mnist_datamodule",)
# where a name not found on its own module's path is looked for, in order
SEARCHED = (
    "fulmen",
    "fulmen.callbacks",
    "fulmen.loggers",
    "fulmen.utilities",
    "fulmen.states",
    "fulmen.demos",
    "fulmen.strategies",
    "fulmen.accelerators",
    "fulmen.precision",
    "fulmen.profilers",
    "fulmen.environments",
    "fulmen.plugins",
    "fulmen.seed",
    "fulmen.checkpoint",
    "fulmen.module",
    "fulmen.trainer",
)
# Lightning's deprecated names ("graveyard") that projects still import, and fulmen's name for the same thing
RENAMED_NAMES = {"TPUAccelerator": ("fulmen.accelerators", "XLAAccelerator")}
COMPAT = False  # whether fulmen.compat (the official zero-change mode) serves the paths it knows
REFUSED_BY_COMPAT: dict[str, str] = {}  # module -> compat's refusal (served here by stand-ins instead)
MISSING: dict[str, int] = {}  # "module.name" -> how often a test called it
CALLERS: list[str] = []  # folders whose code may import names fulmen lacks (as placeholders)


class MissingInFulmen(NotImplementedError):
    """A Lightning name that fulmen does not have was used."""


class Missing:
    """Stands for a Lightning name fulmen lacks: importable, but calling it raises MissingInFulmen."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        MISSING[cls.qualname] = MISSING.get(cls.qualname, 0) + 1
        raise MissingInFulmen(f"fulmen has no {cls.qualname}")


def _split(fullname: str) -> tuple[str, str] | None:
    for root in sorted(ROOTS, key=len, reverse=True):
        if fullname == root:
            return root, ""
        if fullname.startswith(root + "."):
            return root, fullname[len(root) + 1 :]
    return None


def _fulmen_module(rest: str) -> types.ModuleType | None:
    if os.environ.get("FULMEN_ALIAS_SYNTHETIC_DEMOS") == "1" and rest in SYNTHETIC_DEMOS:
        return importlib.import_module("synthetic_demos")
    target = RENAMED.get(rest, rest)
    name = f"fulmen.{target}" if target else "fulmen"
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _feature_flag(name: str) -> Any:
    if name == "_IS_WINDOWS":
        return False
    if "GREATER_EQUAL" in name:
        return True  # the current torch/torchmetrics are new
    if name.endswith("_AVAILABLE"):
        package = name[1 : -len("_AVAILABLE")].lower()
        if package in (
            "xla",
            "habana",
            "deepspeed",
            "bitsandbytes",
            "transformer_engine",
            "neptune",
            "comet",
        ):
            return False
        return importlib.util.find_spec(package) is not None
    return None


def _placeholder(module_name: str, name: str) -> Any:
    flag = _feature_flag(name)
    if flag is not None:
        return flag
    if name in os.environ.get("FULMEN_ALIAS_NOOP_NAMES", "").split(","):
        # asked for: a name fulmen lacks becomes a no-op function, to see what a project does after it
        MISSING[f"{module_name}.{name} (no-op)"] = 1
        return lambda *args, **kwargs: None
    if name in RENAMED_NAMES and os.environ.get("FULMEN_ALIAS_RENAMED_NAMES", "1") == "1":
        where, new_name = RENAMED_NAMES[name]
        MISSING[f"{module_name}.{name} (served as {where}.{new_name})"] = 1
        return getattr(importlib.import_module(where), new_name)
    return type(name, (Missing,), {"qualname": f"{module_name}.{name}"})


def _lenient(module: types.ModuleType, lightning_name: str) -> None:
    """Let code under CALLERS import names that fulmen's `module` lacks (they become placeholders)."""
    if getattr(module, "__getattr__", None) is not None and getattr(module.__getattr__, "_lenient", False):
        return
    own = module.__dict__.get("__getattr__")

    def __getattr__(name: str) -> Any:
        if own is not None:
            try:
                return own(name)
            except AttributeError:
                pass
        caller = sys._getframe(1).f_code.co_filename
        if name.startswith("__") or not any(caller.startswith(d) for d in CALLERS):
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        if os.environ.get("FULMEN_ALIAS_SYNTHETIC_DEMOS") == "1" and lightning_name.endswith(".demos"):
            synthetic = importlib.import_module("synthetic_demos")
            if hasattr(synthetic, name):
                return getattr(synthetic, name)
        return _placeholder(lightning_name, name)

    __getattr__._lenient = True  # type: ignore[attr-defined]
    module.__getattr__ = __getattr__  # type: ignore[method-assign]


class _StandIn(types.ModuleType):
    """A Lightning module fulmen has no counterpart of: names come from fulmen's public modules."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        flag = _feature_flag(name)
        if flag is not None:
            return flag
        searched = SEARCHED
        if os.environ.get("FULMEN_ALIAS_SYNTHETIC_DEMOS") == "1":
            searched = (*SEARCHED, "synthetic_demos")
        for module_name in searched:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(module, name):
                return getattr(module, name)
        placeholder = _placeholder(self.__name__, name)
        setattr(self, name, placeholder)
        return placeholder


class _Loader(importlib.abc.Loader):
    def __init__(self, module: types.ModuleType | None) -> None:
        self.module = module
        self.spec = getattr(module, "__spec__", None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if self.module is not None:
            _lenient(self.module, spec.name)
            return self.module
        stand_in = _StandIn(spec.name)
        stand_in.__path__ = []  # a package, so that deeper paths import too
        return stand_in

    def exec_module(self, module: types.ModuleType) -> None:
        if self.module is not None:
            # the import system stamped the alias's spec on fulmen's module: give it its own back
            module.__spec__ = self.spec


class _AfterCompat(importlib.abc.Loader):
    """fulmen.compat's loader, then the lenient fallback for names the module lacks."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        self.name = spec.name
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        _lenient(module, self.name)


def _compat_spec(fullname: str, path: Any, target: Any) -> Any:
    """fulmen.compat's own spec for `fullname`, or None where it serves nothing (or refuses: Fabric)."""
    if not COMPAT:
        return None
    from fulmen import import_paths

    try:
        spec = import_paths.FINDER.find_spec(fullname, path, target)
    except ModuleNotFoundError as refused:
        REFUSED_BY_COMPAT[fullname] = str(refused).split(":")[0]
        return None
    if spec is None:
        return None
    target = getattr(spec.loader, "target", None)
    if target is not None:  # compat rewrites a whole prefix: the fulmen module may not exist
        try:
            if importlib.util.find_spec(target) is None:
                return None
        except ImportError:
            return None
    spec.loader = _AfterCompat(spec.loader)
    return spec


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        split = _split(fullname)
        if split is None:
            return None
        parent_name, _, last = fullname.rpartition(".")
        parent = sys.modules.get(parent_name)
        known = vars(parent).get(last) if parent is not None else None
        placeholder = isinstance(known, type) and issubclass(known, Missing)
        if known is not None and not placeholder and not isinstance(known, types.ModuleType):
            # an attribute, not a module (mock.patch("lightning.pytorch.loggers.TensorBoardLogger.x") tries both)
            return None
        synthetic = os.environ.get("FULMEN_ALIAS_SYNTHETIC_DEMOS") == "1" and split[1] in SYNTHETIC_DEMOS
        spec = None if synthetic else _compat_spec(fullname, path, target)
        if spec is not None:
            return spec
        root, rest = split
        module = _fulmen_module(rest) if root != "lightning" or not rest else None
        if root == "lightning" and rest and rest.split(".")[0] not in ("pytorch", "fabric"):
            module = _fulmen_module(rest)
        spec = importlib.machinery.ModuleSpec(fullname, _Loader(module), is_package=True)
        return spec


FINDER = _Finder()


def _install_compat() -> bool:
    """fulmen's own zero-change mode (fulmen.compat), where this fulmen has it; its finder stays behind ours."""
    try:
        from fulmen import compat, import_paths
    except ImportError:
        return False
    compat.install()
    return import_paths.FINDER in sys.meta_path


def install(callers: list[str] | None = None) -> None:
    """Make Lightning's import paths resolve to fulmen in this process (first on sys.meta_path).

    `callers`: folders whose code may import names fulmen lacks, getting placeholders (the tests being run).
    """
    CALLERS.extend(str(c) for c in callers or [])
    for name in list(sys.modules):
        if _split(name) is not None and not isinstance(sys.modules[name], _StandIn):
            if not getattr(sys.modules[name], "__name__", "").startswith("fulmen"):
                raise ImportError(
                    f"the real Lightning is already imported ({name}); install the aliases first"
                )
    global COMPAT
    if FINDER not in sys.meta_path:
        COMPAT = os.environ.get("FULMEN_ALIAS_COMPAT", "1") == "1" and _install_compat()
        if COMPAT:
            from fulmen import import_paths

            # ours asks compat's first (see _compat_spec); compat's own stays on the path for fulmen.* paths
            sys.meta_path.remove(import_paths.FINDER)
            sys.meta_path.insert(0, import_paths.FINDER)
        sys.meta_path.insert(0, FINDER)
    try:  # lightning_utilities' rank_zero_only.rank is set by Lightning on import; projects read it
        from lightning_utilities.core.rank_zero import rank_zero_only

        if getattr(rank_zero_only, "rank", None) is None:
            rank_zero_only.rank = 0  # type: ignore[attr-defined]
    except ImportError:
        pass

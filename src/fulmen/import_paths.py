"""Lightning's import paths, served by fulmen: one table and the import hook that reads it.

The rule: ``lightning.pytorch.X.Y`` is ``fulmen.X.Y`` (``lightning`` is ``fulmen``, ``pytorch_lightning.X``
is ``fulmen.X``). fulmen's tree is flatter than Lightning's, so many of those paths are not files here:
``SERVED_PATHS`` says which fulmen module holds the names of each one, and an import hook (a meta-path
finder, installed by ``import fulmen``) makes ``import fulmen.utilities.rank_zero`` hand back that module
itself. Nothing is copied and nothing is imported before it is asked for, so ``import fulmen`` stays fast.

The Lightning names themselves (``lightning``, ``pytorch_lightning``) are served only in the opt-in
zero-change mode of :mod:`fulmen.compat`, which adds them as prefixes of the same table.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

# Lightning module path, written as its fulmen path by the rule -> the fulmen module serving its names.
# A path whose own file exists in fulmen (fulmen.callbacks.timer, fulmen.loggers.wandb, ...) needs no row.
SERVED_PATHS: dict[str, str] = {
    # lightning.pytorch itself, reached as an attribute or a prefix: fulmen.pytorch.X is fulmen.X
    "fulmen.pytorch": "fulmen",
    # accelerators
    "fulmen.accelerators.accelerator": "fulmen.accelerators",
    "fulmen.accelerators.cpu": "fulmen.accelerators",
    "fulmen.accelerators.cuda": "fulmen.accelerators",
    "fulmen.accelerators.mps": "fulmen.accelerators",
    "fulmen.accelerators.xla": "fulmen.accelerators",
    # callbacks (the package is real; these are Lightning's file names for fulmen's modules)
    "fulmen.callbacks.device_stats_monitor": "fulmen.callbacks.device_stats",
    "fulmen.callbacks.gradient_accumulation_scheduler": "fulmen.callbacks.gradient_accumulation",
    "fulmen.callbacks.progress.progress_bar": "fulmen.callbacks.progress",
    "fulmen.callbacks.progress.tqdm_progress": "fulmen.callbacks.progress",
    "fulmen.callbacks.progress.rich_progress": "fulmen.callbacks.rich_progress",
    "fulmen.callbacks.rich_model_summary": "fulmen.callbacks.rich_progress",
    "fulmen.callbacks.stochastic_weight_avg": "fulmen.callbacks.swa",
    "fulmen.callbacks.throughput_monitor": "fulmen.callbacks.throughput",
    # core: the module, the datamodule and their hooks
    "fulmen.core": "fulmen",
    "fulmen.core.module": "fulmen.module",
    "fulmen.core.datamodule": "fulmen.datamodule",
    "fulmen.core.hooks": "fulmen.module",
    "fulmen.core.mixins": "fulmen.hparams_mixin",
    "fulmen.core.mixins.hparams_mixin": "fulmen.hparams_mixin",
    "fulmen.core.optimizer": "fulmen.optim",
    "fulmen.core.saving": "fulmen.hparams_file",
    # demos
    "fulmen.demos.boring_classes": "fulmen.demos",
    "fulmen.demos.lstm": "fulmen.demos.text",
    "fulmen.demos.transformer": "fulmen.demos.text",
    # loggers
    "fulmen.loggers.litlogger": "fulmen.out_of_scope",
    # plugins: fulmen.plugins lists what `Trainer(plugins=...)` takes; each kind lives in its own module
    "fulmen.plugins.environments": "fulmen.environments",
    "fulmen.plugins.io": "fulmen.checkpoint_io",
    "fulmen.plugins.io.async_plugin": "fulmen.checkpoint_io",
    "fulmen.plugins.io.checkpoint_plugin": "fulmen.checkpoint_io",
    "fulmen.plugins.io.torch_plugin": "fulmen.checkpoint_io",
    "fulmen.plugins.io.wrapper": "fulmen.checkpoint_io",
    "fulmen.plugins.io.xla_plugin": "fulmen.checkpoint_io",
    "fulmen.plugins.layer_sync": "fulmen.layer_sync",
    "fulmen.plugins.precision": "fulmen.precision",
    "fulmen.plugins.precision.amp": "fulmen.precision",
    "fulmen.plugins.precision.double": "fulmen.precision",
    "fulmen.plugins.precision.fsdp": "fulmen.precision",
    "fulmen.plugins.precision.half": "fulmen.precision",
    "fulmen.plugins.precision.precision": "fulmen.precision",
    "fulmen.plugins.precision.bitsandbytes": "fulmen.out_of_scope",
    "fulmen.plugins.precision.deepspeed": "fulmen.out_of_scope",
    "fulmen.plugins.precision.transformer_engine": "fulmen.out_of_scope",
    "fulmen.plugins.precision.xla": "fulmen.out_of_scope",
    # profilers
    "fulmen.profilers.advanced": "fulmen.profilers",
    "fulmen.profilers.base": "fulmen.profilers",
    "fulmen.profilers.profiler": "fulmen.profilers",
    "fulmen.profilers.pytorch": "fulmen.profilers",
    "fulmen.profilers.simple": "fulmen.profilers",
    "fulmen.profilers.xla": "fulmen.out_of_scope",
    # strategies
    "fulmen.strategies.parallel": "fulmen.strategies.strategy",
    "fulmen.strategies.single_device": "fulmen.strategies.strategy",
    "fulmen.strategies.single_xla": "fulmen.strategies.xla",
    "fulmen.strategies.deepspeed": "fulmen.out_of_scope",
    "fulmen.strategies.model_parallel": "fulmen.out_of_scope",
    # trainer and tuner
    "fulmen.trainer.trainer": "fulmen.trainer",
    "fulmen.trainer.states": "fulmen.states",
    "fulmen.tuner.tuning": "fulmen.tuner",
    "fulmen.tuner.lr_finder": "fulmen.tuner",
    "fulmen.tuner.batch_size_scaling": "fulmen.tuner",
    # utilities
    "fulmen.utilities.combined_loader": "fulmen.combined_loader",
    "fulmen.utilities.compile": "fulmen.compiled",
    "fulmen.utilities.exceptions": "fulmen.utilities",
    "fulmen.utilities.warnings": "fulmen.utilities.rank_zero",
    "fulmen.utilities.grads": "fulmen.utilities.model_helpers",
    "fulmen.utilities.parameter_tying": "fulmen.utilities.model_helpers",
    "fulmen.utilities.migration.migration": "fulmen.utilities.migration",
    "fulmen.utilities.migration.utils": "fulmen.utilities.migration",
    "fulmen.utilities.model_summary.model_summary": "fulmen.utilities.model_summary",
    "fulmen.utilities.seed": "fulmen.seed",
}


def resolve(name: str, prefixes: dict[str, str] | None = None) -> str | None:
    """The real fulmen module serving `name` (a module path), or None when `name` is not served.

    Exact rows win; otherwise the longest served prefix is rewritten (``fulmen.pytorch.callbacks`` ->
    ``fulmen.callbacks``), and the result is looked up again, so aliases may chain.
    """
    table = SERVED_PATHS if prefixes is None else {**SERVED_PATHS, **prefixes}
    seen: set[str] = set()
    current = name
    while current not in seen:
        seen.add(current)
        if current in table:
            current = table[current]
            continue
        head, _, tail = current.rpartition(".")
        rewritten = None
        while head:
            if head in table:
                rewritten = f"{table[head]}.{tail}"
                break
            head, _, last = head.rpartition(".")
            tail = f"{last}.{tail}"
        if rewritten is None:
            break
        current = rewritten
    return None if current == name else current


def _parents_of_served() -> frozenset[str]:
    # real fulmen modules (plain files) that Lightning treats as packages: their served children need
    # them to have a __path__, or `import fulmen.trainer.states` stops at "fulmen.trainer is not a package"
    parents = {path.rpartition(".")[0] for path in SERVED_PATHS}
    return frozenset(p for p in parents if p not in SERVED_PATHS and p != "fulmen")


class _AliasLoader(importlib.abc.Loader):
    """Loads a served path by importing its fulmen module and handing that very module back."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:  # noqa: D102
        module = importlib.import_module(self.target)
        if not hasattr(module, "__path__"):
            module.__path__ = []  # type: ignore[attr-defined]  # so that deeper served paths import
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        # the module ran when it was first imported under its own name; the import system has just
        # stamped the alias's spec on it, so give it back its own (reload, repr and pickle read it)
        module.__spec__ = self._own_spec


class _PackageLoader(importlib.abc.Loader):
    """Runs a real fulmen module as usual, then gives it an empty __path__ so served children import."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:  # noqa: D102
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        module.__loader__ = self._loader  # tracebacks and inspect read the source through the real loader
        self._loader.exec_module(module)
        if not hasattr(module, "__path__"):
            module.__path__ = []  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class PathFinder(importlib.abc.MetaPathFinder):
    """The meta-path finder that serves the table (and, in zero-change mode, Lightning's own names)."""

    def __init__(self) -> None:
        self.prefixes: dict[str, str] = {}  # extra served roots, e.g. {"lightning": "fulmen"} (compat)
        self.refused: dict[str, str] = {}  # module path -> the out-of-scope feature it would need (compat)
        self._parents = _parents_of_served()
        self._busy: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for a served path (or a real module that served paths hang under), else None."""
        root = fullname.partition(".")[0]
        if root != "fulmen" and root not in self.prefixes and root not in self.refused:
            return None
        for refused, feature in self.refused.items():
            if fullname == refused or fullname.startswith(refused + "."):
                from fulmen.out_of_scope import message

                raise ModuleNotFoundError(
                    f"No module {fullname!r} in fulmen: {message(feature)}", name=fullname
                )
        if fullname in self._parents and fullname not in self._busy:
            self._busy.add(fullname)  # ask the other finders for the real file, without asking ourselves
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                self._busy.discard(fullname)
            if spec is None or spec.loader is None:
                return None
            spec.loader = _PackageLoader(spec.loader)
            return spec
        resolved = resolve(fullname, self.prefixes)
        if resolved is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(resolved), is_package=True)


FINDER = PathFinder()


def install() -> PathFinder:
    """Put the finder first on `sys.meta_path` (idempotent) and return it."""
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)
    return FINDER

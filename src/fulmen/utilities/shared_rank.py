"""Keep `lightning_utilities`' `rank_zero_only.rank` equal to fulmen's, as importing Lightning does.

Code written for Lightning decorates with `lightning_utilities.core.rank_zero.rank_zero_only` (for
example lightning-hydra-template's `RankedLogger`), which raises when its `rank` was never set.
Lightning sets it on import; fulmen sets it when that module is imported (a one-shot import hook, so
`import fulmen` does not pay for importing the package) and again whenever the Trainer learns its rank.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_TARGET = "lightning_utilities.core.rank_zero"


def sync(rank: int) -> None:
    """Set `lightning_utilities`' rank_zero_only.rank to `rank` if that module is loaded."""
    module = sys.modules.get(_TARGET)
    decorator = getattr(module, "rank_zero_only", None)
    if decorator is not None:
        decorator.rank = rank


class _SetRankOnImport(importlib.abc.MetaPathFinder):
    """Finds `lightning_utilities.core.rank_zero` as usual, and sets the rank once it has run."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            from fulmen.utilities.rank_zero import rank_zero_only

            module.rank_zero_only.rank = rank_zero_only.rank  # type: ignore[attr-defined]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Set the rank now if `lightning_utilities` is loaded, else when it is imported."""
    from fulmen.utilities.rank_zero import rank_zero_only

    if _TARGET in sys.modules:
        sync(rank_zero_only.rank)  # type: ignore[attr-defined]
    elif not any(isinstance(f, _SetRankOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _SetRankOnImport())

"""Zero-change mode: run an existing Lightning project on fulmen without editing a file.

Once installed, ``import lightning``, ``import lightning.pytorch as pl``, ``import pytorch_lightning as pl``
and every Lightning module path fulmen serves (fulmen.import_paths) resolve to fulmen, so do the
``_target_: lightning.pytorch.Trainer`` strings of Hydra and jsonargparse configs, which import by path.
It is never on unless asked for, in one of three ways:

- a command: ``fulmen exec train.py --args`` or ``python -m fulmen.compat train.py --args``
  (``-m package.module`` runs a module instead, e.g. ``fulmen exec -m pytest tests/``);
- one line at the top of an entry point or a ``conftest.py``: ``import fulmen.compat; fulmen.compat.install()``;
- for a test suite: ``pytest -p fulmen.compat`` (this module is also a pytest plugin).

If the real Lightning was already imported in the process, installing raises instead of mixing the two.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from typing import Any

from fulmen import import_paths

# the Lightning package names served, and the fulmen module each stands for (the rule)
ROOTS: dict[str, str] = {"lightning": "fulmen", "pytorch_lightning": "fulmen"}
# Lightning packages that are out of scope: importing them fails with this sentence
REFUSED: dict[str, str] = {
    "lightning.fabric": "Fabric",
    "lightning_fabric": "Fabric",
}
_ENV = "FULMEN_COMPAT"  # set by the runner, so that processes a launcher starts run in the same mode


class LightningAlreadyImportedError(ImportError):
    """The real Lightning is already imported in this process, so fulmen cannot stand in for it."""


def _real_lightning_modules() -> list[str]:
    roots = (*ROOTS, *REFUSED)
    found = []
    for name, module in list(sys.modules.items()):
        if name in roots or name.partition(".")[0] in roots:
            if module is not None and not getattr(module, "__name__", "").startswith("fulmen"):
                found.append(name)
    return sorted(found)


def is_installed() -> bool:
    """True when Lightning's names currently resolve to fulmen in this process."""
    return import_paths.FINDER in sys.meta_path and "lightning" in import_paths.FINDER.prefixes


def install() -> None:
    """Make `lightning`, `lightning.pytorch` and `pytorch_lightning` (and their served paths) import fulmen."""
    real = _real_lightning_modules()
    if real:
        raise LightningAlreadyImportedError(
            f"the real Lightning is already imported in this process ({', '.join(real[:3])}"
            f"{', ...' if len(real) > 3 else ''}), so fulmen's zero-change mode cannot take its place. "
            "Install it before anything imports lightning: first line of the entry point or conftest.py, "
            "or run the script with `fulmen exec script.py`."
        )
    finder = import_paths.install()
    finder.prefixes.update(ROOTS)
    finder.refused.update(REFUSED)


def uninstall() -> None:
    """Stop serving Lightning's names (modules already imported under them stay in sys.modules)."""
    finder = import_paths.FINDER
    for name in ROOTS:
        finder.prefixes.pop(name, None)
    for name in REFUSED:
        finder.refused.pop(name, None)


def script_prefix() -> list[str]:
    """Arguments to put before a script when re-running it in a new process ([] outside zero-change mode)."""
    return ["-m", "fulmen.compat"] if os.environ.get(_ENV) == "1" else []


def run(argv: Sequence[str]) -> int:
    """Install zero-change mode, then run `argv` (``script.py args`` or ``-m module args``) as __main__."""
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print("usage: fulmen exec SCRIPT [ARGS...]  |  fulmen exec -m MODULE [ARGS...]")
        return 0 if args else 2
    install()
    os.environ[_ENV] = "1"
    if args[0] == "-m":
        if len(args) < 2:
            print("fulmen exec -m: name the module to run", file=sys.stderr)
            return 2
        sys.argv = args[1:]
        sys.path.insert(0, os.getcwd())
        return _exit_code(lambda: runpy.run_module(args[1], run_name="__main__", alter_sys=True))
    script = args[0]
    if not os.path.exists(script):
        print(f"fulmen exec: no such script {script!r}", file=sys.stderr)
        return 2
    sys.argv = args
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    return _exit_code(lambda: runpy.run_path(script, run_name="__main__"))


def _exit_code(fn: Any) -> int:
    try:
        fn()
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def pytest_configure(config: Any) -> None:
    """`pytest -p fulmen.compat`: the test session runs in zero-change mode."""
    install()


def main() -> None:
    """`python -m fulmen.compat SCRIPT [ARGS...]`."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()

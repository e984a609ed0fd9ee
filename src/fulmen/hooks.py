"""Hook dispatch: every hook runs on the callbacks first, then on the LightningModule.

Which objects override which hook is resolved once per run, so the training loop pays for a dict
lookup and the calls it needs, never for `getattr` scans or no-op hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fulmen.callbacks.callback import Callback
from fulmen.module import LightningModule
from fulmen.utilities import overriding

if TYPE_CHECKING:
    from fulmen.trainer import Trainer

_UNLISTED: Any = object()


class HookDispatcher:
    """Calls hooks by name on the trainer's callbacks and module, with the overrides resolved up front."""

    def __init__(self, trainer: Trainer, module: LightningModule, callbacks: list[Callback]) -> None:
        self._trainer = trainer
        self._module = module
        self._callbacks = callbacks
        self._profiler = trainer.profiler if getattr(trainer.profiler, "enabled", False) else None
        # as Lightning: `self.log`/`self.log_dict` in a callback hook log through the module
        for cb in callbacks:
            cb.log = module.log  # type: ignore[attr-defined]
            cb.log_dict = module.log_dict  # type: ignore[attr-defined]
        self.resolve()

    def resolve(self) -> None:
        """Look every hook up again (instance first, then class): the run plan calls this at its fixed points."""

        names = [n for n in dir(Callback) if n.startswith("on_") or n in ("setup", "teardown")]
        listeners = {
            n: [(cb, fn) for cb in self._callbacks if (fn := overriding(n, cb, Callback)) is not None]
            for n in names
        }
        self._cb: dict[str, list[Callable[..., Any]]] = {
            n: [fn for _, fn in pairs] for n, pairs in listeners.items()
        }
        self._cb_regular: dict[str, list[Callable[..., Any]]] = {
            n: [fn for cb, fn in pairs if not cb.runs_after_module_epoch_end]
            for n, pairs in listeners.items()
        }
        self._cb_monitoring: dict[str, list[Callable[..., Any]]] = {
            n: [fn for cb, fn in pairs if cb.runs_after_module_epoch_end] for n, pairs in listeners.items()
        }
        module = self._module
        self._mod: dict[str, Callable[..., Any] | None] = {}
        for n in dir(LightningModule):
            if n.endswith(("_model_eval", "_model_train", "_model_zero_grad")):
                continue  # these default to model.eval()/train()/zero_grad(): always called, never skipped
            if n.startswith("on_") or n in ("setup", "teardown", "configure_model", "prepare_data"):
                self._mod[n] = overriding(n, module, LightningModule)

    def callbacks(self, name: str, *args: Any, monitoring: bool | None = None, **kwargs: Any) -> None:
        """Run callback hook `name` (all callbacks, or only the (non-)monitoring ones)."""
        table = self._cb if monitoring is None else (self._cb_monitoring if monitoring else self._cb_regular)
        fns = table[name]
        if not fns:
            return
        module = self._module
        # through __dict__: the name is set around every hook call, and __setattr__ is a Python call
        state = module.__dict__
        prev = state.get("_current_fx_name")
        state["_current_fx_name"] = name
        trainer = self._trainer
        if self._profiler is None:
            for fn in fns:
                fn(trainer, module, *args, **kwargs)
        else:
            for fn in fns:
                with self._profiler.profile(f"[Callback]{type(getattr(fn, '__self__', fn)).__name__}.{name}"):
                    fn(trainer, module, *args, **kwargs)
        state["_current_fx_name"] = prev

    def module(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run module hook `name` if the user overrode it (the defaults of these hooks do nothing)."""
        fn = self._mod.get(name, _UNLISTED)
        if fn is None:
            return None
        if fn is _UNLISTED:
            fn = getattr(self._module, name)
        module = self._module
        state = module.__dict__
        prev = state.get("_current_fx_name")
        state["_current_fx_name"] = name
        try:
            if self._profiler is None:
                return fn(*args, **kwargs)
            with self._profiler.profile(f"[LightningModule]{type(module).__name__}.{name}"):
                return fn(*args, **kwargs)
        finally:
            state["_current_fx_name"] = prev

    @property
    def active(self) -> frozenset[str]:
        """Names of the hooks someone listens to: the hot loop tests membership instead of calling."""
        names = {n for n, fns in self._cb.items() if fns} | {
            n for n, fn in self._mod.items() if fn is not None
        }
        return frozenset(names)

    def both(self, name: str, *args: Any) -> None:
        """Run hook `name` on the callbacks, then on the module."""
        self.callbacks(name, *args)
        self.module(name, *args)

"""LambdaCallback: a callback built from plain functions, one per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fulmen.callbacks.callback import Callback

_HOOKS = frozenset(
    n
    for n in dir(Callback)
    if (n.startswith("on_") or n in ("setup", "teardown")) and callable(getattr(Callback, n))
)


def _method(fn: Callable[..., Any]) -> Callable[..., Any]:
    def hook(self: Callback, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return hook


class LambdaCallback(Callback):
    """Run the given functions at the hooks of the same name: ``LambdaCallback(on_train_epoch_end=fn)``.

    Each function receives the hook's arguments (``trainer, pl_module, ...``). Only the hooks given are
    installed, so the others cost nothing.
    """

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        unknown = sorted(set(hooks) - _HOOKS)
        if unknown:
            raise TypeError(
                f"LambdaCallback got unknown hook name(s) {unknown}; valid names are the Callback hooks, "
                f"e.g. {sorted(_HOOKS)[:4]}."
            )
        for name, fn in hooks.items():
            if not callable(fn):
                raise TypeError(f"LambdaCallback({name}=...) must be a function, got {type(fn).__name__}.")
        # The trainer looks hooks up on the class (so that unused hooks cost nothing per step): give this
        # instance its own subclass holding exactly the hooks it was given.
        namespace: dict[str, Any] = {name: _method(fn) for name, fn in hooks.items()}
        namespace["__qualname__"] = "LambdaCallback"
        self.__class__ = type("LambdaCallback", (LambdaCallback,), namespace)
        self.hooks = dict(hooks)

    def __reduce__(self) -> tuple[Any, ...]:
        # the per-instance class cannot be pickled by name: rebuild from the hooks (for spawned processes)
        return (_rebuild, (self.hooks,))


def _rebuild(hooks: dict[str, Callable[..., Any]]) -> LambdaCallback:
    return LambdaCallback(**hooks)

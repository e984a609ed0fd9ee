"""`torch.compile` support: a compiled LightningModule trains, validates and checkpoints like an eager one.

`torch.compile(model)` returns a wrapper (`OptimizedModule`) that is not a LightningModule and whose
`state_dict` keys start with `_orig_mod.`. When such a wrapper is given to the Trainer, fulmen takes the
LightningModule inside it and compiles that module's `forward` with the same settings (backend, mode,
options). Everything else stays as it was: the steps and hooks run eagerly around the compiled
forward, `self.log` works, and checkpoints hold the module's own parameter names, so they load into an
eager model with `load_from_checkpoint` and resume into either kind.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from fulmen.module import LightningModule

_MARK = "_fulmen_compiled_forward"  # set on a module whose forward fulmen compiled


def _optimized_module_type() -> type | None:
    if "torch._dynamo" not in sys.modules:
        return None  # nothing was compiled in this process; importing dynamo would cost ~1 s
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except Exception:  # torch built without dynamo
        return None
    return OptimizedModule


def is_compiled(model: Any) -> bool:
    """True for the wrapper returned by `torch.compile(module)`."""
    cls = _optimized_module_type()
    return cls is not None and isinstance(model, cls)


def from_compiled(model: Any) -> Any:
    """Unwrap `torch.compile(lightning_module)` into the module, with its `forward` compiled the same way.

    Anything else (an eager module, a compiled plain nn.Module) is returned unchanged.
    """

    if not is_compiled(model):
        return model
    inner = model._orig_mod
    if not isinstance(inner, LightningModule):
        return model
    if inner.__dict__.get(_MARK) is None:
        compile_forward = model.dynamo_ctx  # the backend/mode/options torch.compile was called with
        eager_forward = type(inner).forward.__get__(inner)
        inner.__dict__["forward"] = compile_forward(eager_forward)
        inner.__dict__[_MARK] = eager_forward
    return inner


def to_uncompiled(module: nn.Module) -> nn.Module:
    """Undo `from_compiled`: the module's forward runs eagerly again."""
    if module.__dict__.pop(_MARK, None) is not None:
        module.__dict__.pop("forward", None)
    return module

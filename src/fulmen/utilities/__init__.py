"""Small helpers shared across fulmen: exceptions, rank-zero printing, moving batches, batch size.

Lightning's `utilities.*` modules map onto this package (see fulmen.import_paths): the names users
import from `lightning.pytorch.utilities` are all reachable from here.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fulmen.utilities.lazy import lazy_names
from fulmen.utilities.rank_zero import (
    LightningDeprecationWarning,
    PossibleUserWarning,
    WarningCache,
    disable_possible_user_warnings,
    rank_prefixed_message,
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
    set_global_rank,
)


class MisconfigurationException(Exception):
    """Raised when the user configured something fulmen cannot run (a flag, a hook's return value)."""


class SIGTERMException(SystemExit):
    """Raised (exit status 0) after the checkpoint that a SIGTERM asked for was written."""


class AttributeDict(dict):
    """A dict whose keys are also attributes (`hparams.lr`)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"no hyper-parameter named {key!r}; have {sorted(self)}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def apply_to_collection(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply `fn` to every tensor inside lists, tuples, namedtuples, dicts and dataclasses."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        return type(data)({k: apply_to_collection(v, fn) for k, v in data.items()})  # type: ignore[call-arg]
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_collection(v, fn) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_collection(v, fn) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_collection(getattr(data, f.name), fn) for f in dataclasses.fields(data) if f.init
        }
        return dataclasses.replace(data, **changes)
    if hasattr(data, "to") and callable(data.to) and not isinstance(data, torch.nn.Module):
        try:
            return fn(data)  # objects with their own .to(), e.g. a HF BatchEncoding
        except Exception:
            return data
    return data


def move_data_to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor in `batch` to `device` (non-blocking when the source is pinned)."""
    device = torch.device(device)

    def move(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            if t.device == device:
                return t
            return t.to(device, non_blocking=t.is_pinned() if device.type == "cuda" else False)
        return t.to(device)

    return apply_to_collection(batch, move)


def extract_batch_size(batch: Any) -> int | None:
    """Infer the batch size as the first dimension of the first tensor found in `batch`."""
    if isinstance(batch, torch.Tensor):
        return 1 if batch.ndim == 0 else int(batch.shape[0])
    if isinstance(batch, str):
        return len(batch)
    if isinstance(batch, Mapping):
        for value in batch.values():
            size = extract_batch_size(value)
            if size is not None:
                return size
        return None
    if isinstance(batch, Sequence):
        for value in batch:
            size = extract_batch_size(value)
            if size is not None:
                return size
        return None
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for f in dataclasses.fields(batch):
            size = extract_batch_size(getattr(batch, f.name))
            if size is not None:
                return size
    return None


_MISSING: Any = object()


def overriding(name: str, instance: object, parent: type) -> Callable[..., Any] | None:
    """What `instance.<name>` calls when it is not `parent`'s default implementation, else None.

    The one rule behind every "does anyone listen / may this be skipped?" decision: the attribute is
    looked up as Python would (the instance's `__dict__` first, then its class), so a function
    assigned on the instance, one set by `unittest.mock.patch.object` and a subclass override all
    count. An attribute set to None (`model.validation_step = None`) means: not defined.
    """
    own = getattr(instance, "__dict__", {}).get(name, _MISSING)
    if own is not _MISSING:
        if own is None:
            return None
        func = getattr(
            own, "__func__", own
        )  # a bound default re-assigned to the instance is still the default
        base = getattr(parent, name, None)
        if base is not None and getattr(func, "__code__", func) is getattr(base, "__code__", base):
            return None
        return own
    attr = getattr(type(instance), name, None)
    if attr is None:
        return None
    base = getattr(parent, name, None)
    if base is not None and getattr(attr, "__code__", attr) is getattr(base, "__code__", base):
        return None
    return getattr(instance, name)


def is_overridden(name: str, instance: object | None = None, parent: type | None = None) -> bool:
    """True when `instance.<name>` is not `parent`'s default: Lightning's question, with Lightning's answer.

    The attribute is found as `overriding` finds it (instance first, None means not defined), then, as
    Lightning documents, looked through a wrapper to what it wraps: `functools.wraps`/`update_wrapper`
    (``__wrapped__``), `functools.partial` (its ``func``) and ``Mock(wraps=...)`` (a Mock wrapping
    nothing is not an override). So a recorder wrapped around the default is not an override here,
    though the hook dispatch still calls it (it asks `overriding`, which counts whatever a call would
    run). `instance=None` is never overridden; `parent` may be left out for a LightningModule, a
    LightningDataModule or a Callback (their base class is then the default).
    """
    if instance is None:
        return False
    if parent is None:
        parent = _default_parent(instance)
    found = overriding(name, instance, parent)
    if found is None:
        return False
    inner = _unwrapped(found)
    if inner is None:
        return False
    inner = getattr(inner, "__func__", inner)
    base = getattr(parent, name, None)
    return base is None or getattr(inner, "__code__", inner) is not getattr(base, "__code__", base)


def _unwrapped(fn: Any) -> Any:
    """What a wrapper calls: ``__wrapped__``, then a Mock's ``wraps`` or a partial's ``func`` (one level each)."""
    fn = getattr(fn, "__wrapped__", fn)
    mock = sys.modules.get("unittest.mock")  # no Mock can exist unless unittest.mock was imported
    if mock is not None and isinstance(fn, mock.NonCallableMock):
        return fn._mock_wraps
    if isinstance(fn, functools.partial):
        return fn.func
    return fn


# where the bases whose hooks have defaults live; read from sys.modules so this low layer imports
# nothing above it (an instance of one of them means its module is already imported)
_HOOK_BASES = (
    ("fulmen.module", "LightningModule"),
    ("fulmen.datamodule", "LightningDataModule"),
    ("fulmen.callbacks.callback", "Callback"),
)


def _default_parent(instance: object) -> type:
    """The fulmen base class whose defaults `instance`'s hooks are compared with."""
    for module_name, class_name in _HOOK_BASES:
        base = getattr(sys.modules.get(module_name), class_name, None)
        if base is not None and isinstance(instance, base):
            return base
    raise ValueError(
        f"is_overridden: pass `parent=` for a {type(instance).__name__}; it is only inferred for a "
        "LightningModule, a LightningDataModule or a Callback."
    )


# names of `lightning.pytorch.utilities` that live in heavier or later modules: imported on first use
_LAZY: dict[str, str] = {
    "CombinedLoader": "fulmen.combined_loader",
    "GradClipAlgorithmType": "fulmen.utilities.enums",
    "LightningEnum": "fulmen.utilities.enums",
    "find_shared_parameters": "fulmen.utilities.model_helpers",
    "grad_norm": "fulmen.utilities.model_helpers",
    "is_picklable": "fulmen.utilities.model_helpers",
    "measure_flops": "fulmen.utilities.model_helpers",
    "set_shared_parameters": "fulmen.utilities.model_helpers",
    "is_shared_filesystem": "fulmen.utilities.data",
    "suggested_max_num_workers": "fulmen.utilities.data",
}

__all__ = [
    "AttributeDict",
    "LightningDeprecationWarning",
    "MisconfigurationException",
    "PossibleUserWarning",
    "SIGTERMException",
    "WarningCache",
    "apply_to_collection",
    "disable_possible_user_warnings",
    "extract_batch_size",
    "is_overridden",
    "move_data_to_device",
    "overriding",
    "rank_prefixed_message",
    "rank_zero_debug",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "set_global_rank",
    *_LAZY,
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())

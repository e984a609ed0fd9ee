"""Hyper-parameters in a checkpoint: stored as plain values that `torch.load(weights_only=True)` accepts.

Lightning pickles `self.hparams` as they are, so a checkpoint with a `pathlib.Path` or a
`functools.partial` hyper-parameter loads only with `weights_only=False`, which can run code. fulmen
writes every hyper-parameter as plain data instead:

- numbers, strings, tensors, lists, tuples, dicts: as they are;
- `pathlib` paths, numpy scalars and arrays, `argparse.Namespace`, OmegaConf `DictConfig`/`ListConfig`:
  a small tagged dict (`{"__fulmen_hparam__": "path", "value": "/data"}`), rebuilt on load;
- an `Enum` member, a dataclass instance, a `functools.partial`, a class or function: a tagged dict that
  names its target by import path (`"torch.optim.adam:Adam"`) with its arguments. On load the target is
  looked up among modules already imported (never importing one), and rebuilt only when it is an Enum
  member, lives in `torch.optim`/`torch.nn`, in the loading class's own top-level package, or was allowed
  with `torch.serialization.add_safe_globals`: a file cannot make the program call anything else. With
  `weights_only=False` (a trusted file) any importable target is rebuilt;
- anything else (an `nn.Module`, an open file, a custom object): left out, with a warning, and listed in
  the checkpoint so that `load_from_checkpoint` says exactly which arguments must be passed again.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import inspect
import pathlib
import sys
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from fulmen.checkpoint.files import CheckpointError
from fulmen.utilities import rank_zero_warn

TAG = "__fulmen_hparam__"
# checkpoint key: {name: "what it was"} for the hyper-parameters left out of "hyper_parameters"
UNSAVED_KEY = "fulmen_unsaved_hyper_parameters"

_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


class Unstorable(Exception):
    """A value with no safe plain form; the message says what it is."""


def to_checkpoint(hparams: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The storable form of `hparams`, and {name: what it was} for those that cannot be stored safely."""
    stored: dict[str, Any] = {}
    unsaved: dict[str, str] = {}
    for name, value in hparams.items():
        try:
            stored[str(name)] = encode(value)
        except Unstorable as err:
            unsaved[str(name)] = str(err)
    return stored, unsaved


def from_checkpoint(
    stored: Mapping[str, Any], home: str | None = None, trusted: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The hyper-parameters rebuilt from `stored`, and {name: why} for those that could not be rebuilt.

    Args:
        home: the module of the class being loaded; targets in its top-level package may be rebuilt.
        trusted: rebuild any target, importing its module if needed (for files you trust).
    """
    decoder = _Decoder(home, trusted)
    out: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name, value in stored.items():
        try:
            out[name] = decoder.decode(value)
        except Unstorable as err:
            failed[name] = str(err)
    return out, failed


def _describe(value: Any) -> str:
    kind = type(value)
    return f"a {kind.__module__}.{kind.__qualname__}"


def _reference(obj: Any) -> str:
    """`obj`'s import path as "module:qualname"; Unstorable when it cannot be found again by that path."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise Unstorable(f"{obj!r}, which has no import path")
    return f"{module}:{qualname}"


def _tagged(kind: str, **fields: Any) -> dict[str, Any]:
    return {TAG: kind, **fields}


def encode(value: Any) -> Any:
    """`value` as plain data (see the module docstring); raises Unstorable when it has no safe form."""
    kind = type(value)
    if kind in _LEAVES or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, enum.Enum):  # before str/int: str- and int-enums are also plain values
        return _tagged("enum", target=_reference(kind), name=value.name)
    if kind.__module__ == "numpy":  # before the plain types: np.float64 is a float subclass
        return _tagged("numpy", dtype=str(value.dtype), value=value.tolist())
    plain: Any
    for plain in (bool, int, float, complex, str, bytes):  # a subclass of a plain type: its plain value
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, Mapping) and not is_omegaconf(value):
        items = {_plain_key(k): encode(v) for k, v in value.items()}
        return OrderedDict(items) if isinstance(value, OrderedDict) else items
    if isinstance(value, (list, tuple, set, frozenset)):
        items_list = [encode(v) for v in value]
        if isinstance(value, list):
            return items_list
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple: its plain fields
            return _tagged("namedtuple", target=_reference(kind), fields=items_list)
        return tuple(items_list) if isinstance(value, tuple) else set(items_list)
    if isinstance(value, pathlib.PurePath):
        return _tagged("path", cls=kind.__name__, value=str(value))
    if isinstance(value, argparse.Namespace):
        return _tagged("namespace", value=encode(vars(value)))
    if is_omegaconf(value):
        from omegaconf import OmegaConf

        return _tagged("omegaconf", value=encode(OmegaConf.to_container(value, resolve=False)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return _tagged("dataclass", target=_reference(kind), fields=fields)
    if isinstance(value, functools.partial):
        return _tagged(
            "partial",
            target=_reference(value.func),
            args=[encode(a) for a in value.args],
            keywords={k: encode(v) for k, v in value.keywords.items()},
        )
    if isinstance(value, torch.nn.Module):
        raise Unstorable(f"{_describe(value)} (an nn.Module: its weights are in the state_dict)")
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return _tagged("reference", target=_reference(value))
    raise Unstorable(_describe(value))


def _plain_key(key: Any) -> Any:
    if type(key) in _LEAVES:
        return key
    if isinstance(key, enum.Enum):
        return key.name
    raise Unstorable(f"a mapping with a key of type {type(key).__name__} ({key!r})")


def is_omegaconf(value: Any) -> bool:
    """True for an OmegaConf DictConfig/ListConfig (checked without importing omegaconf)."""
    omegaconf = sys.modules.get("omegaconf")
    return omegaconf is not None and isinstance(value, (omegaconf.DictConfig, omegaconf.ListConfig))


_SAFE_PACKAGES = ("torch.optim", "torch.nn")


class _Decoder:
    """Rebuilds what `encode` stored, calling only targets that the rules in the module docstring allow."""

    def __init__(self, home: str | None, trusted: bool) -> None:
        self.home = (home or "").split(".")[0]
        self.trusted = trusted

    def decode(self, value: Any) -> Any:
        """The value `encode` stored; raises Unstorable when a target cannot be found or is not allowed."""
        if isinstance(value, dict):
            kind = value.get(TAG)
            if kind is None:
                items = {k: self.decode(v) for k, v in value.items()}
                return OrderedDict(items) if isinstance(value, OrderedDict) else items
            return getattr(self, f"_{kind}")(value)
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.decode(v) for v in value)
        if isinstance(value, set):
            return {self.decode(v) for v in value}
        return value

    def _resolve(self, reference: str, call: bool = True) -> Any:
        """The object at "module:qualname"; when it will be called, only if it is allowed (see above)."""
        module_name, _, qualname = reference.partition(":")
        module = sys.modules.get(module_name)
        if module is None and self.trusted:
            import importlib

            module = importlib.import_module(module_name)
        if module is None:
            raise Unstorable(
                f"{reference} (module {module_name!r} is not imported; import it before loading)"
            )
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise Unstorable(f"{reference} (not found in {module_name!r})")
        if call and not self.trusted and not self._allowed(module_name, obj):
            raise Unstorable(
                f"{reference}, which a checkpoint may not make the program call; if you trust it, allow it with "
                f"torch.serialization.add_safe_globals([{qualname.split('.')[-1]}]) or load with weights_only=False"
            )
        return obj

    def _allowed(self, module_name: str, obj: Any) -> bool:
        if module_name.startswith(_SAFE_PACKAGES) or (self.home and module_name.split(".")[0] == self.home):
            return True
        return any(obj is g or (isinstance(g, tuple) and obj is g[0]) for g in _safe_globals())

    def _enum(self, value: dict[str, Any]) -> Any:
        cls = self._resolve(value["target"], call=False)  # a member lookup calls nothing
        if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
            raise Unstorable(f"{value['target']} is not an Enum")
        return cls[value["name"]]

    def _dataclass(self, value: dict[str, Any]) -> Any:
        cls = self._resolve(value["target"])
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise Unstorable(f"{value['target']} is not a dataclass")
        return cls(**{k: self.decode(v) for k, v in value["fields"].items()})

    def _namedtuple(self, value: dict[str, Any]) -> Any:
        cls = self._resolve(value["target"])
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise Unstorable(f"{value['target']} is not a namedtuple")
        return cls(*[self.decode(v) for v in value["fields"]])

    def _partial(self, value: dict[str, Any]) -> Any:
        func = self._resolve(value["target"])
        args = [self.decode(a) for a in value["args"]]
        return functools.partial(func, *args, **{k: self.decode(v) for k, v in value["keywords"].items()})

    def _reference(self, value: dict[str, Any]) -> Any:
        return self._resolve(value["target"])

    def _path(self, value: dict[str, Any]) -> Any:
        cls = getattr(pathlib, value["cls"], None)
        if not (isinstance(cls, type) and issubclass(cls, pathlib.PurePath)):
            cls = pathlib.Path
        return cls(value["value"])

    def _numpy(self, value: dict[str, Any]) -> Any:
        import numpy as np

        return np.asarray(value["value"], dtype=np.dtype(value["dtype"]))[()]

    def _namespace(self, value: dict[str, Any]) -> Any:
        return argparse.Namespace(**self.decode(value["value"]))

    def _omegaconf(self, value: dict[str, Any]) -> Any:
        try:
            from omegaconf import OmegaConf
        except ImportError:
            raise Unstorable("an OmegaConf config (install omegaconf to load it)") from None
        return OmegaConf.create(self.decode(value["value"]))


def _safe_globals() -> list[Any]:
    get = getattr(torch.serialization, "get_safe_globals", None)
    return list(get()) if get is not None else []


# ---------------------------------------------------------------------------------------- checkpoint entries
_warned_unsaved: set[tuple[str, str]] = set()


def checkpoint_entries(owner: Any, prefix: str = "") -> dict[str, Any]:
    """The checkpoint keys for `owner.hparams` ("hparams_name", "hyper_parameters", ...), never raising.

    Args:
        prefix: "" for a LightningModule, "datamodule_" for a LightningDataModule.
    """
    hparams = owner.hparams
    if not hparams:
        return {}
    out: dict[str, Any] = {f"{prefix}hparams_name": owner._hparams_name or "kwargs"}
    if is_omegaconf(hparams):
        from omegaconf import OmegaConf

        out[f"{prefix}hparams_type"] = type(hparams).__name__
        hparams = OmegaConf.to_container(hparams, resolve=False)
    if not isinstance(hparams, Mapping):  # a ListConfig: one value
        hparams = {"value": hparams}
    stored, unsaved = to_checkpoint(hparams)
    out[f"{prefix}hyper_parameters"] = stored
    if unsaved:
        out[f"{prefix}{UNSAVED_KEY}"] = unsaved
        owner_name = type(owner).__name__
        for name, what in unsaved.items():
            if (owner_name, name) in _warned_unsaved or "nn.Module" in what:
                continue  # nn.Module arguments were warned about by save_hyperparameters
            _warned_unsaved.add((owner_name, name))

            rank_zero_warn(
                f"{owner_name}'s hyper-parameter {name!r} is {what}, which a checkpoint cannot hold safely; it is "
                f"left out of the checkpoint. Pass it again when loading: "
                f"{owner_name}.load_from_checkpoint(path, {name}=...)."
            )
    return out


def init_kwargs(
    cls: type,
    ckpt: Mapping[str, Any],
    overrides: Mapping[str, Any],
    prefix: str = "",
    hparams_file: Any = None,
    trusted: bool = False,
) -> dict[str, Any]:
    """The keyword arguments to rebuild `cls` from a checkpoint's hyper-parameters, as Lightning 2.6 passes them.

    The stored hyper-parameters (then `hparams_file`'s, then `overrides`) go to `__init__`; those its
    signature does not take are dropped with a warning, unless it takes **kwargs. Arguments that the
    checkpoint could not store and that are not passed again are named: an error when `__init__` needs
    them, a warning when their defaults are used instead.
    """

    stored = ckpt.get(f"{prefix}hyper_parameters") or {}
    loaded, failed = from_checkpoint(stored, home=cls.__module__, trusted=trusted)
    if hparams_file is not None:
        loaded.update(_read_yaml(hparams_file))
    hparams: Any = loaded
    saved_type = ckpt.get(f"{prefix}hparams_type")
    if saved_type in ("DictConfig", "ListConfig"):
        hparams = _to_config(loaded["value"] if saved_type == "ListConfig" else loaded)
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    name = ckpt.get(f"{prefix}hparams_name")
    if name and name != "kwargs" and name in params:  # saved from one __init__ argument: pass it back there
        kwargs = {name: hparams}
    else:
        kwargs = dict(hparams)
    kwargs.update(overrides)
    if not takes_any:
        dropped = [k for k in kwargs if k not in params or k == "self"]
        if dropped:
            rank_zero_warn(
                f"{cls.__name__}.load_from_checkpoint: {cls.__name__}.__init__ takes no argument(s) {dropped} "
                "(saved in the checkpoint or passed to load_from_checkpoint); they are not passed."
            )
            kwargs = {k: v for k, v in kwargs.items() if k not in dropped}
    lost = {**dict(ckpt.get(f"{prefix}{UNSAVED_KEY}") or {}), **failed}
    lost = {k: v for k, v in lost.items() if k not in overrides and (takes_any or k in params)}
    if lost:
        needed = [k for k in lost if k in params and params[k].default is inspect.Parameter.empty]
        detail = "; ".join(f"{k}: {v}" for k, v in lost.items())
        call = ", ".join(f"{k}=..." for k in lost)
        if needed:
            raise CheckpointError(
                f"{cls.__name__}.load_from_checkpoint needs {needed} passed again: the checkpoint could not store "
                f"or rebuild them ({detail}). Call {cls.__name__}.load_from_checkpoint(path, {call})."
            )
        rank_zero_warn(
            f"{cls.__name__}.load_from_checkpoint: the checkpoint could not store or rebuild {sorted(lost)} "
            f"({detail}); __init__'s defaults are used. Pass them again to use the trained values: "
            f"{cls.__name__}.load_from_checkpoint(path, {call})."
        )
    return kwargs


def _to_config(value: Any) -> Any:
    try:
        from omegaconf import OmegaConf
    except ImportError:
        return value  # saved from an OmegaConf config; without omegaconf the plain container is passed
    return OmegaConf.create(value)


def _read_yaml(path: Any) -> dict[str, Any]:
    import os

    import yaml

    with open(os.fspath(path)) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise CheckpointError(f"hparams_file={os.fspath(path)!r} must hold a YAML mapping of name: value.")
    return data

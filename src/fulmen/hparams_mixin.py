"""HyperparametersMixin: `save_hyperparameters()` and `hparams`, for LightningModule and LightningDataModule.

`save_hyperparameters()` reads the calling `__init__`'s arguments from its frame (and those of every
subclass `__init__` above it), so users need not repeat them; hparams.py turns what is saved into
checkpoint entries.
"""

from __future__ import annotations

import argparse
import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from fulmen.hparams import is_omegaconf
from fulmen.utilities import AttributeDict, rank_zero_warn


def _frame_args(frame: Any) -> dict[str, Any]:
    """The named arguments (and **kwargs) of the function running in `frame`, without `self`."""
    code = frame.f_code
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    local_vars = frame.f_locals
    args = {n: local_vars[n] for n in names[1:] if n in local_vars}
    if code.co_flags & inspect.CO_VARKEYWORDS:
        varkw = code.co_varnames[code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4)]
        args.update(local_vars.get(varkw, {}))
    return args


def _collect_init_args(frame: Any, ignore: Sequence[str]) -> dict[str, Any]:
    """The arguments of the `__init__` that called save_hyperparameters and of every subclass `__init__` above it.

    A base class's `save_hyperparameters()` thus keeps the arguments of the subclass being built
    (`Child(b=7)` saves b=7 and the child's own arguments); a subclass's value wins over the base's.
    """
    code = frame.f_code
    first = code.co_varnames[0] if code.co_argcount else None
    owner = frame.f_locals.get(first) if first else None
    chain = [_frame_args(frame)]
    outer = frame.f_back
    while owner is not None and outer is not None and outer.f_code.co_name == "__init__":
        outer_code = outer.f_code
        if not outer_code.co_argcount or outer.f_locals.get(outer_code.co_varnames[0]) is not owner:
            break
        chain.append(_frame_args(outer))
        outer = outer.f_back
    args: dict[str, Any] = {}
    for frame_args in chain:  # base first, then each subclass over it
        args.update(frame_args)
    for name in ignore:
        args.pop(name, None)
    return args


def _warn_module_hparams(hparams: Mapping[str, Any]) -> None:
    """Warn for each saved hyper-parameter that is an `nn.Module` (its weights are saved already)."""
    for name, value in hparams.items():
        if isinstance(value, nn.Module):
            rank_zero_warn(
                f"Attribute {name!r} is an instance of `nn.Module` and is already saved during checkpointing. "
                f"It is recommended to ignore them using `self.save_hyperparameters(ignore=[{name!r}])`."
            )


class HyperparametersMixin:
    """`save_hyperparameters()` and `hparams`, shared by LightningModule and LightningDataModule."""

    _hparams: Any
    _hparams_initial: Any
    # the __init__ argument that the saved object came from (None: the arguments themselves, "kwargs")
    _hparams_name: str | None = None

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Store the calling `__init__`'s arguments, the named ones, or one dict/Namespace/config in `self.hparams`."""
        if isinstance(ignore, str):
            ignore = [ignore]
        ignore = list(ignore or [])
        if frame is None:
            frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        init_args = _collect_init_args(frame, ignore)
        self._hparams_name = "kwargs"
        if len(args) == 1 and not isinstance(args[0], str):
            hp = args[0]
            # loading passes the stored object back through the __init__ argument it came from
            self._hparams_name = next((k for k, v in init_args.items() if v is hp), None)
            if isinstance(hp, argparse.Namespace):
                hp = vars(hp)
            if not isinstance(hp, Mapping) and not is_omegaconf(hp):
                raise ValueError(
                    f"save_hyperparameters({type(hp).__name__}) takes argument names, a dict, an "
                    "argparse.Namespace or an OmegaConf config."
                )
        elif args:
            missing = [a for a in args if a not in init_args]
            if missing:
                raise ValueError(f"save_hyperparameters: {missing} are not arguments of __init__")
            hp = {a: init_args[a] for a in args}
        else:
            hp = init_args
        self._hparams = hp if is_omegaconf(hp) else AttributeDict(hp)
        if isinstance(self._hparams, Mapping):
            _warn_module_hparams(self._hparams)
        self._hparams_initial = copy.deepcopy(self._hparams)
        self._log_hyperparams = logger

    @property
    def hparams(self) -> Any:
        """The hyper-parameters saved with `save_hyperparameters()` (an AttributeDict, or the saved config)."""
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        return self._hparams

    @property
    def hparams_initial(self) -> Any:
        """A copy of the hyper-parameters as they were when saved."""
        if not hasattr(self, "_hparams_initial"):
            return AttributeDict()
        return copy.deepcopy(self._hparams_initial)

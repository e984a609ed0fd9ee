"""Finding a hyper-parameter by name wherever the user keeps it: on the module, in its hparams, on the datamodule.

The tuner's `lr_find`/`scale_batch_size` and users' own code read and write a value such as ``lr`` or
``batch_size`` without knowing whether it is an attribute or a saved hyper-parameter.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fulmen.utilities import AttributeDict
from fulmen.utilities.model_helpers import is_picklable

__all__ = ["AttributeDict", "is_picklable", "lightning_getattr", "lightning_hasattr", "lightning_setattr"]


def _holders(model: Any, attribute: str) -> list[Any]:
    # in Lightning's order: the module, its hparams, the Trainer's datamodule, the datamodule's hparams
    holders: list[Any] = []
    trainer = getattr(model, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    for owner in (model, datamodule):
        if owner is None:
            continue
        if hasattr(owner, attribute):
            holders.append(owner)
        hparams = getattr(owner, "hparams", None)
        if isinstance(hparams, MutableMapping) and attribute in hparams:
            holders.append(hparams)
    return holders


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """True when `attribute` is on `model`, in `model.hparams`, or on the Trainer's datamodule (or its hparams)."""
    return bool(_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Any:
    """The value of `attribute` from the last of those places that has it (the datamodule wins over the model)."""
    holders = _holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute!r} is neither an attribute of the model nor in its hparams, nor on the datamodule."
        )
    holder = holders[-1]
    return holder[attribute] if isinstance(holder, MutableMapping) else getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set `attribute` to `value` in every one of those places that has it."""
    holders = _holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute!r} is neither an attribute of the model nor in its hparams, nor on the datamodule."
        )
    for holder in holders:
        if isinstance(holder, MutableMapping):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)

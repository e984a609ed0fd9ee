"""Questions asked of a model: overridden hooks, gradient norms, shared (tied) parameters, FLOPs; torchvision models by name."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fulmen.utilities import is_overridden

__all__ = [
    "find_shared_parameters",
    "get_torchvision_model",
    "grad_norm",
    "is_overridden",
    "is_picklable",
    "measure_flops",
    "set_shared_parameters",
]


def grad_norm(
    module: nn.Module, norm_type: float | int | str, group_separator: str = "/"
) -> dict[str, torch.Tensor]:
    """The p-norm of each parameter's gradient and of all gradients together, keyed for `self.log_dict`.

    Keys are ``grad_{p}_norm{sep}{name}`` per parameter and ``grad_{p}_norm_total`` for the norm of all
    gradients as one vector (``p`` is `norm_type` as a float, or ``inf``). Parameters without a gradient
    are left out.
    """
    norm = float(norm_type)
    if norm <= 0:
        raise ValueError(
            f"grad_norm(norm_type={norm_type!r}): the norm type must be a positive number or 'inf'."
        )
    label = "inf" if norm == float("inf") else str(norm)
    norms = {
        f"grad_{label}_norm{group_separator}{name}": p.grad.data.norm(norm)
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    if norms:
        norms[f"grad_{label}_norm_total"] = torch.tensor(list(norms.values())).norm(norm)
    return norms


def find_shared_parameters(module: nn.Module) -> list[list[str]]:
    """Groups of parameter names that refer to one tensor (tied weights), each group of two or more."""
    groups: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def set_shared_parameters(module: nn.Module, shared_params: list[list[str]]) -> nn.Module:
    """Tie again the parameters named in each group (as `find_shared_parameters` gave them) to the first one.

    Moving a module to some devices (XLA) or rebuilding it unties weights; this restores the ties.
    """
    for group in shared_params:
        first = module.get_parameter(group[0])
        for name in group[1:]:
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            setattr(owner, attr, first)
    return module


def is_picklable(obj: object) -> bool:
    """True when `obj` survives `pickle.dumps` (hyper-parameters must, to be saved in checkpoints)."""
    try:
        pickle.dumps(obj)
    except (pickle.PickleError, AttributeError, RecursionError, TypeError):
        return False
    return True


def measure_flops(
    model: nn.Module,
    forward_fn: Callable[[], torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """The floating-point operations of one `forward_fn()` call, plus its backward when `loss_fn` is given.

    Counted by `torch.utils.flop_counter.FlopCounterMode`; build the model and inputs under
    ``torch.device("meta")`` to count without computing.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        if loss_fn is None:
            forward_fn()
        else:
            loss_fn(forward_fn()).backward()
    return int(counter.get_total_flops())


def get_torchvision_model(model_name: str, **kwargs: Any) -> nn.Module:
    """The torchvision model called `model_name` (e.g. "resnet18"), built with `kwargs` (e.g. ``weights=``).

    Raises ModuleNotFoundError naming torchvision when it is not installed.
    """
    try:
        models = importlib.import_module("torchvision.models")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"get_torchvision_model({model_name!r}) needs torchvision, which is not installed: "
            "`pip install torchvision`."
        ) from err
    if hasattr(models, "get_model"):  # torchvision >= 0.14 looks names up in its registry
        return models.get_model(model_name, **kwargs)
    return getattr(models, model_name)(**kwargs)

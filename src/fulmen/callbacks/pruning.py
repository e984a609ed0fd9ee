"""ModelPruning: prune the model's weights during training with torch.nn.utils.prune.

At the end of each training epoch (or each validation epoch, with `prune_on_train_epoch_end=False`)
the chosen parameters are pruned by `amount` (a fraction, a count, or a function of the epoch), either
each on its own or all together (`use_global_unstructured`). With the lottery-ticket option the
weights that survive are reset to their values from before training. Pruning is made permanent (the
`weight_orig`/`weight_mask` pair becomes a plain `weight`) in every checkpoint and when training ends.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException, rank_zero_info

Trainer = Any
Module = Any

_STRUCTURED = ("ln_structured", "random_structured")
_UNSTRUCTURED = ("l1_unstructured", "random_unstructured")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _method_class(name: str) -> type:
    from torch.nn.utils import prune

    return {
        "ln_structured": prune.LnStructured,
        "l1_unstructured": prune.L1Unstructured,
        "random_structured": prune.RandomStructured,
        "random_unstructured": prune.RandomUnstructured,
    }[name]


def _is_pruning_method(fn: Any) -> bool:
    """True for a `torch.nn.utils.prune.BasePruningMethod` subclass."""
    from torch.nn.utils import prune

    return inspect.isclass(fn) and issubclass(fn, prune.BasePruningMethod)


class ModelPruning(Callback):
    """Prune parameters of the model at each epoch end (see the module docstring).

    Args:
        pruning_fn: "l1_unstructured", "random_unstructured", "ln_structured", "random_structured", a
            `torch.nn.utils.prune.BasePruningMethod` subclass, or a function `fn(module, name, amount)`.
        parameters_to_prune: (module, parameter name) pairs; empty means every module's `parameter_names`.
        parameter_names: the parameter names pruned when `parameters_to_prune` is empty ("weight", "bias").
        use_global_unstructured: prune all parameters together, by one global threshold (unstructured only).
        amount: a fraction in [0, 1] or a count of weights to prune, or a function of the epoch giving it.
        apply_pruning: whether to prune, or a function of the epoch saying so.
        make_pruning_permanent: remove the pruning re-parametrization at the end of training and in checkpoints.
        use_lottery_ticket_hypothesis: after pruning, reset the surviving weights to their initial values
            (or a function of the epoch saying whether to).
        resample_parameters: with the lottery ticket, reset to freshly drawn values instead of the initial ones.
        pruning_dim: the dimension pruned by the structured methods.
        pruning_norm: the norm used by "ln_structured".
        verbose: 0 silent, 1 the overall sparsity after each pruning, 2 also per parameter.
        prune_on_train_epoch_end: prune at the training epoch end; False prunes at the validation epoch end.
    """

    PARAMETER_NAMES = ("weight", "bias")
    _is_pruning_method = staticmethod(_is_pruning_method)  # Lightning's name for the check

    def __init__(
        self,
        pruning_fn: Callable[..., Any] | str,
        parameters_to_prune: Sequence[tuple[nn.Module, str]] | None = (),
        parameter_names: list[str] | None = None,
        use_global_unstructured: bool = True,
        amount: int | float | Callable[[int], int | float] = 0.5,
        apply_pruning: bool | Callable[[int], bool] = True,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = True,
        resample_parameters: bool = False,
        pruning_dim: int | None = None,
        pruning_norm: int | None = None,
        verbose: int = 0,
        prune_on_train_epoch_end: bool = True,
    ) -> None:
        self._use_global_unstructured = use_global_unstructured
        self._parameters_to_prune = list(parameters_to_prune or ())
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._parameter_names = list(parameter_names or self.PARAMETER_NAMES)
        self._original_layers: dict[int, dict[str, Any]] | None = None
        self._pruning_method_name: str | None = None
        for name in self._parameter_names:
            if name not in self.PARAMETER_NAMES:
                raise MisconfigurationException(
                    f"The provided `parameter_names` name: {name} isn't in {self.PARAMETER_NAMES}; "
                    f"ModelPruning(parameter_names=...) takes names from {list(self.PARAMETER_NAMES)}."
                )
        self._global_method: Any = None
        self.pruning_fn = self._make_pruning_fn(pruning_fn, pruning_dim, pruning_norm)
        if not (isinstance(amount, (int, float)) or callable(amount)) or isinstance(amount, bool):
            raise MisconfigurationException(
                f"ModelPruning(amount={amount!r}) is not valid; use an int, a float or a function of the epoch."
            )
        if not isinstance(apply_pruning, bool) and not callable(apply_pruning):
            raise MisconfigurationException(
                f"ModelPruning(apply_pruning={apply_pruning!r}) is not valid; use a bool or a function of the epoch."
            )
        if verbose not in (0, 1, 2):
            raise MisconfigurationException(f"ModelPruning(verbose={verbose!r}) is not valid; use 0, 1 or 2.")
        self.amount = amount
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        self._verbose = verbose

    def _make_pruning_fn(self, pruning_fn: Any, dim: int | None, norm: int | None) -> Callable[..., Any]:
        from torch.nn.utils import prune

        if isinstance(pruning_fn, str):
            name = pruning_fn.lower()
            if name not in _STRUCTURED + _UNSTRUCTURED:
                raise MisconfigurationException(
                    f"ModelPruning(pruning_fn={pruning_fn!r}) is not valid; use one of "
                    f"{list(_UNSTRUCTURED + _STRUCTURED)}, a BasePruningMethod subclass or a function."
                )
            if name in _STRUCTURED:
                if self._use_global_unstructured:
                    raise MisconfigurationException(
                        f"pruning_fn={name!r} is structured, but only the 'unstructured' PRUNING_TYPE is supported "
                        "with `use_global_unstructured=True` (it prunes by one global threshold); pass "
                        "use_global_unstructured=False."
                    )
                if dim is None:
                    raise MisconfigurationException(
                        f"pruning_fn={name!r} needs `pruning_dim` (the dimension to prune)."
                    )
                if name == "ln_structured" and norm is None:
                    raise MisconfigurationException(
                        "pruning_fn='ln_structured' needs `pruning_norm` (e.g. 1 or 2)."
                    )
            self._pruning_method_name = name
            if self._use_global_unstructured:
                self._global_method = _method_class(name)
                self._pruning_method_name = self._global_method.__name__
                return self._global_method
            fn = getattr(prune, name)
            kwargs: dict[str, Any] = {}
            if name in _STRUCTURED:
                kwargs["dim"] = dim
            if name == "ln_structured":
                kwargs["n"] = norm
            return partial(fn, **kwargs) if kwargs else fn
        if _is_pruning_method(pruning_fn):
            self._pruning_method_name = pruning_fn.__name__
            if self._use_global_unstructured:
                if getattr(pruning_fn, "PRUNING_TYPE", None) != "unstructured":
                    raise MisconfigurationException(
                        f"{pruning_fn.__name__}.PRUNING_TYPE must be 'unstructured' with use_global_unstructured=True."
                    )
                self._global_method = pruning_fn
                return pruning_fn
            method = pruning_fn

            def apply(module: nn.Module, name: str, amount: int | float) -> Any:
                return method.apply(module, name, amount=amount)

            return apply
        if callable(pruning_fn):
            if self._use_global_unstructured:
                raise MisconfigurationException(
                    "use_global_unstructured=True needs a pruning method, not a plain function: pass a name such as "
                    "'l1_unstructured', a BasePruningMethod subclass, or use_global_unstructured=False."
                )
            self._pruning_method_name = getattr(pruning_fn, "__name__", type(pruning_fn).__name__)
            return pruning_fn
        raise MisconfigurationException(
            f"ModelPruning(pruning_fn={pruning_fn!r}) is not valid; use a method name, a BasePruningMethod "
            "subclass or a function."
        )

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Resolve which parameters to prune and keep a copy of their initial values for the lottery ticket."""
        self._parameters_to_prune = self.sanitize_parameters_to_prune(
            pl_module, self._parameters_to_prune, self._parameter_names
        )
        if self._use_lottery_ticket_hypothesis:
            originals: dict[int, dict[str, Any]] = {}
            for i, (module, name) in enumerate(self._parameters_to_prune):
                entry = originals.setdefault(id(module), {"data": copy.deepcopy(module), "names": []})
                entry["names"].append((i, name))
            self._original_layers = originals

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Prune at the end of the training epoch (the default)."""
        if self._prune_on_train_epoch_end:
            self._run_pruning(trainer.current_epoch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Prune at the end of the validation epoch when `prune_on_train_epoch_end=False`."""
        if not self._prune_on_train_epoch_end and not trainer.sanity_checking:
            self._run_pruning(trainer.current_epoch)

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Make the pruning permanent when training ends (if asked)."""
        if self._make_pruning_permanent:
            self.make_pruning_permanent(pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None:
        """Write the pruned weights as plain parameters; the module keeps its masks to go on training."""
        if not self._make_pruning_permanent:
            return
        state = dict(checkpoint["state_dict"])
        for key in [k for k in state if k.endswith("_mask")]:
            base = key[: -len("_mask")]
            mask = state.pop(key)
            original = state.pop(base + "_orig")
            state[base] = original * mask.to(dtype=original.dtype)
        checkpoint["state_dict"] = state

    # ------------------------------------------------------------------ pruning
    def _run_pruning(self, epoch: int) -> None:
        prune_now = self._apply_pruning(epoch) if callable(self._apply_pruning) else self._apply_pruning
        amount = self.amount(epoch) if callable(self.amount) else self.amount
        if not prune_now or not amount:
            return
        self.apply_pruning(amount)
        lottery = self._use_lottery_ticket_hypothesis
        if lottery(epoch) if callable(lottery) else lottery:
            self.apply_lottery_ticket_hypothesis()

    def apply_pruning(self, amount: int | float) -> None:
        """Prune the chosen parameters by `amount`, globally or each on its own."""
        before = [self._pruned_stats(m, n) for m, n in self._parameters_to_prune] if self._verbose else []
        if self._global_method is not None:
            from torch.nn.utils import prune

            prune.global_unstructured(
                self._parameters_to_prune, pruning_method=self._global_method, **self._global_kwargs(amount)
            )
        else:
            for module, name in self._parameters_to_prune:
                self.pruning_fn(module, name=name, amount=amount)
        if self._verbose:
            after = [self._pruned_stats(m, n) for m, n in self._parameters_to_prune]
            self._log_sparsity(amount, before, after)

    def _global_kwargs(self, amount: int | float) -> dict[str, Any]:
        accepted = set(inspect.signature(self._global_method).parameters)
        return {"amount": amount} if "amount" in accepted else {}

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the surviving weights to their initial values (or fresh ones with `resample_parameters`)."""
        assert self._original_layers is not None
        for entry in self._original_layers.values():
            source = entry["data"]
            if self._resample_parameters and callable(getattr(source, "reset_parameters", None)):
                source = copy.deepcopy(source)
                source.reset_parameters()
            for i, name in entry["names"]:
                target, _ = self._parameters_to_prune[i]
                # a pruned parameter lives in `<name>_orig`; `<name>` is recomputed from it and the mask
                dst = getattr(target, name + "_orig", None)
                if dst is None:
                    dst = getattr(target, name)
                src = getattr(source, name)
                if isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor):
                    # a copy: sharing the stored tensor would let training overwrite the initial values
                    # (Lightning 2.6 shares it, so its later resets restore the first reset's trained weights)
                    dst.data = src.data.detach().clone().to(dst.device)

    @staticmethod
    def make_pruning_permanent(module: nn.Module) -> None:
        """Remove the pruning re-parametrization from every submodule: `weight` becomes a plain parameter."""
        from torch.nn.utils import prune

        for sub in module.modules():
            for key, hook in list(sub._forward_pre_hooks.items()):
                if isinstance(hook, prune.BasePruningMethod):
                    hook.remove(sub)
                    del sub._forward_pre_hooks[key]

    @staticmethod
    def _pruned_stats(module: nn.Module, name: str) -> tuple[int, int]:
        mask = getattr(module, name + "_mask", None)
        if mask is None:
            return 0, 1
        return int((mask == 0).sum()), mask.numel()

    def _log_sparsity(
        self, amount: int | float, before: list[tuple[int, int]], after: list[tuple[int, int]]
    ) -> None:
        total = sum(n for _, n in after)
        zeros_before, zeros_after = sum(z for z, _ in before), sum(z for z, _ in after)
        rank_zero_info(
            f"Applied `{self._pruning_method_name}`. Pruned: {zeros_before}/{total} ({zeros_before / total:.2%}) "
            f"-> {zeros_after}/{total} ({zeros_after / total:.2%})"
        )
        if self._verbose == 2:
            for (module, name), (z0, n0), (z1, n1) in zip(self._parameters_to_prune, before, after):
                rank_zero_info(
                    f"Applied `{self._pruning_method_name}` to `{type(module).__name__}.{name}` with amount={amount}. "
                    f"Pruned: {z0} ({z0 / n0:.2%}) -> {z1} ({z1 / n1:.2%})"
                )

    @staticmethod
    def sanitize_parameters_to_prune(
        pl_module: nn.Module,
        parameters_to_prune: Sequence[tuple[nn.Module, str]] = (),
        parameter_names: Sequence[str] = (),
    ) -> list[tuple[nn.Module, str]]:
        """The (module, name) pairs to prune: the given ones (checked), else every module's `parameter_names`."""
        names = list(parameter_names or ModelPruning.PARAMETER_NAMES)
        modules = [m for m in pl_module.modules() if not isinstance(m, _CONTAINERS)]
        if not parameters_to_prune:
            return [
                (m, name)
                for name in names
                for m in modules
                if isinstance(getattr(m, name, None), torch.Tensor) and m is not pl_module
            ]
        if not isinstance(parameters_to_prune, (list, tuple)):
            raise MisconfigurationException(
                "ModelPruning(parameters_to_prune=...) must be a list or tuple of (module, parameter name) pairs."
            )
        known = {id(m) for m in modules}
        missing = [
            f"{type(m).__name__}.{name}"
            for m, name in parameters_to_prune
            if id(m) not in known or not isinstance(getattr(m, name, None), torch.Tensor)
        ]
        if missing:
            raise MisconfigurationException(
                f"ModelPruning(parameters_to_prune=...) names parameters the model does not have: {missing}."
            )
        return list(parameters_to_prune)

"""Fine-tuning callbacks: freeze part of the model before training, unfreeze it later in new param groups.

`BaseFinetuning` holds the helpers (freeze, make trainable, add an unfrozen module to an optimizer as
a new param group) and the bookkeeping that lets a resumed run rebuild those param groups before the
optimizer state is loaded. Subclasses implement two methods:

- `freeze_before_training(pl_module)`: called in `setup`, freezes what should not train at first;
- `finetune_function(pl_module, epoch, optimizer)`: called at every training epoch start, per optimizer.

`BackboneFinetuning` is the ready-made one: it freezes `pl_module.backbone`, unfreezes it at a given
epoch with a small learning rate, and grows that rate each epoch up to the main group's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException, rank_zero_info, rank_zero_warn

Trainer = Any
Module = Any
Modules = nn.Module | Iterable[Any]


def multiplicative(epoch: int) -> float:
    """BackboneFinetuning's default `lambda_func`: double the backbone's learning rate every epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Freeze modules before training and unfreeze them into new optimizer param groups during it.

    Param groups added during training are recorded by parameter name in the callback's state, so a
    run resumed from a checkpoint re-creates them before the optimizer state is restored.
    """

    def __init__(self) -> None:
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    def state_dict(self) -> dict[str, Any]:
        """The param groups of every optimizer, with parameters stored by name."""
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the recorded param groups; they are re-created in `on_fit_start`."""
        self._restarting = True
        metadata = state_dict.get("internal_optimizer_metadata", state_dict)
        self._internal_optimizer_metadata = {int(k): list(v) for k, v in metadata.items()}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Freeze what should not train yet (`freeze_before_training`)."""
        self.freeze_before_training(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        """When resuming, add back the param groups that the saved optimizer state expects."""
        if not self._restarting:
            return
        named = dict(pl_module.named_parameters())
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            saved = self._internal_optimizer_metadata.get(opt_idx)
            if not saved:
                continue
            for group in saved[len(optimizer.param_groups) :]:
                missing = [name for name in group["params"] if name not in named]
                if missing:
                    raise MisconfigurationException(
                        f"{type(self).__name__} cannot restore a param group: the checkpoint names parameters "
                        f"{missing} that this model does not have. Resume with the same model."
                    )
                params = [named[name] for name in group["params"]]
                for p in params:  # they were trainable when the group was added
                    p.requires_grad = True
                optimizer.add_param_group(
                    {**{k: v for k, v in group.items() if k != "params"}, "params": params}
                )
        self._restarting = False

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Call `finetune_function` for every optimizer and record any param group it added."""
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, opt_idx, before, optimizer.param_groups)

    def _store(self, pl_module: Module, opt_idx: int, before: int, groups: list[dict[str, Any]]) -> None:
        names = {p: n for n, p in pl_module.named_parameters()}
        if opt_idx not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[opt_idx] = _groups_by_name(groups, names)
        elif len(groups) != before:
            self._internal_optimizer_metadata[opt_idx].extend(_groups_by_name(groups[before:], names))

    # ------------------------------------------------------------------ what subclasses implement
    def freeze_before_training(self, pl_module: Module) -> None:
        """Freeze the modules that should not train at first (override it)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `freeze_before_training(pl_module)`."
        )

    def finetune_function(self, pl_module: Module, epoch: int, optimizer: Optimizer) -> None:
        """Unfreeze modules or change learning rates as `epoch` begins (override it)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `finetune_function(pl_module, epoch, optimizer)`."
        )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def flatten_modules(modules: Modules) -> list[nn.Module]:
        """The leaf modules of `modules` (a module or a nested iterable), plus parents with own parameters."""
        if isinstance(modules, nn.ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable) and not isinstance(modules, nn.Module):
            found: list[nn.Module] = []
            for item in modules:
                found.extend(BaseFinetuning.flatten_modules(item))
            return found
        if not isinstance(modules, nn.Module):
            raise MisconfigurationException(
                f"Fine-tuning helpers take an nn.Module or an iterable of them, got {type(modules).__name__}."
            )
        return [m for m in modules.modules() if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(
        modules: Modules, train_bn: bool = True, requires_grad: bool = True
    ) -> Generator[nn.Parameter, None, None]:
        """Parameters of `modules` whose `requires_grad` equals `requires_grad` (BatchNorm's only if train_bn)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            # own parameters only: a parent with parameters appears in the list beside its children
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """Set requires_grad=True on every parameter of `modules` (BatchNorm tracks statistics again)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: nn.Module) -> None:
        """Freeze one module's own parameters; a BatchNorm also stops updating its running statistics."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze every module of `modules`; with `train_bn`, BatchNorm layers stay trainable."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: Optimizer, params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
        """The `params` that no param group of `optimizer` holds yet (a warning names the ones skipped)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = list(params)
        fresh = [p for p in params if id(p) not in held]
        if len(fresh) != len(params):
            rank_zero_warn(
                "The provided params to be frozen already exist within another group of this optimizer "
                f"({type(optimizer).__name__}): {len(params) - len(fresh)} of them are skipped. HINT: Did you init "
                "your optimizer in `configure_optimizers` from the trainable parameters only, e.g. "
                "`filter(lambda p: p.requires_grad, self.parameters())`? (BatchNorm layers that stay trainable "
                "while the rest is frozen are already in it; that is expected.)"
            )
        return fresh

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: Optimizer,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Unfreeze `modules` and add their parameters to `optimizer` as a new param group.

        Args:
            modules: the module(s) to unfreeze.
            optimizer: the optimizer that receives the new group.
            lr: the new group's learning rate; None takes the first group's divided by `initial_denom_lr`.
            initial_denom_lr: the divisor used when `lr` is None.
            train_bn: also add the BatchNorm layers' parameters.
        """
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
        fresh = BaseFinetuning.filter_on_optimizer(optimizer, params)
        if fresh:
            optimizer.add_param_group({"params": fresh, "lr": group_lr})


def _groups_by_name(groups: list[dict[str, Any]], names: dict[Any, str]) -> list[dict[str, Any]]:
    """Param groups with each parameter replaced by its name (what a checkpoint can hold)."""
    out = []
    for group in groups:
        entry = {k: v for k, v in group.items() if k != "params"}
        entry["params"] = [names[p] for p in group["params"] if p in names]
        out.append(entry)
    return out


class BackboneFinetuning(BaseFinetuning):
    """Freeze `pl_module.backbone`, unfreeze it at `unfreeze_backbone_at_epoch`, then raise its learning rate.

    At the unfreeze epoch the backbone joins the (first) optimizer as a new param group with learning rate
    `backbone_initial_lr`, or the main group's times `backbone_initial_ratio_lr`. At each later epoch its
    rate is multiplied by `lambda_func(epoch + 1)`, and with `should_align` it never exceeds the main rate.

    Args:
        unfreeze_backbone_at_epoch: the epoch at which the backbone starts training.
        lambda_func: the factor applied to the backbone's rate each epoch after that.
        backbone_initial_ratio_lr: the backbone's first rate as a fraction of the main group's.
        backbone_initial_lr: the backbone's first rate (overrides the ratio).
        should_align: cap the backbone's rate at the main group's.
        initial_denom_lr: passed on to `unfreeze_and_add_param_group`.
        train_bn: add the backbone's BatchNorm parameters to the new param group (while the backbone is
            frozen its BatchNorm layers stay trainable either way, as in Lightning).
        verbose: print the rates when they change.
        rounding: digits of the printed rates.
    """

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        """The recorded param groups and the backbone's current learning rate."""
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.previous_backbone_lr = state_dict.get("previous_backbone_lr")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "previous_backbone_lr"})

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Check that the module has a `backbone`, then freeze it."""
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise MisconfigurationException(
                f"BackboneFinetuning needs `{type(pl_module).__name__}.backbone` to be an nn.Module (the part to "
                "freeze, then fine-tune); set `self.backbone = ...` in __init__ or subclass BaseFinetuning."
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: Module) -> None:
        """Freeze the backbone; its BatchNorm layers stay trainable (`train_bn` applies when unfreezing)."""
        # as Lightning 2.6 does: train_bn only decides whether BatchNorm joins the new param group
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module: Module, epoch: int, optimizer: Optimizer) -> None:
        """Unfreeze the backbone at the chosen epoch, then grow its learning rate each epoch."""
        main_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            first = self.backbone_initial_lr
            if first is None:
                first = main_lr * self.backbone_initial_ratio_lr
            self.previous_backbone_lr = first
            self.unfreeze_and_add_param_group(
                pl_module.backbone,
                optimizer,
                first,
                initial_denom_lr=self.initial_denom_lr,
                train_bn=self.train_bn,
            )
            if self.verbose:
                rank_zero_info(
                    f"Current lr: {round(main_lr, self.rounding)}, Backbone lr: {round(first, self.rounding)}"
                )
        elif epoch > self.unfreeze_backbone_at_epoch and self.previous_backbone_lr is not None:
            nxt = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and nxt > main_lr:
                nxt = main_lr
            optimizer.param_groups[-1]["lr"] = nxt
            self.previous_backbone_lr = nxt
            if self.verbose:
                rank_zero_info(
                    f"Current lr: {round(main_lr, self.rounding)}, Backbone lr: {round(nxt, self.rounding)}"
                )

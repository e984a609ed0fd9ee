"""Numeric precision: one small class per mode, all behind the `Precision` interface.

A precision decides how the module and inputs are cast, the autocast context around the steps,
how the loss is scaled for backward, and how the optimizer steps (e.g. through a GradScaler).

| `precision=`   | class              | what it does                                                   |
|----------------|--------------------|----------------------------------------------------------------|
| "32-true"      | `Precision`        | nothing: fp32 weights and math                                 |
| "16-mixed"     | `MixedPrecision`   | fp16 autocast on the accelerator + a GradScaler (CUDA only)    |
| "bf16-mixed"   | `MixedPrecision`   | bf16 autocast (CPU or CUDA), no scaler                         |
| "16-true"      | `HalfPrecision`    | fp16 weights; float inputs cast to fp16                        |
| "bf16-true"    | `HalfPrecision`    | bf16 weights; float inputs cast to bf16                        |
| "64-true"      | `DoublePrecision`  | fp64 weights; float inputs cast to fp64                        |

Lightning users also pass these objects in `Trainer(plugins=[...])`, e.g.
`plugins=[MixedPrecision("bf16-mixed", "cpu")]`, and `FSDPPrecision(mode)` for an FSDP run (it
behaves as the class of its mode above; the FSDP strategy derives its mixed-precision policy from the
mode). `XLAPrecision` (TPU) is out of scope and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fulmen.out_of_scope import (  # noqa: F401  # Lightning's plugins.precision names, importable
    BitsandbytesPrecision,
    DeepSpeedPrecision,
    TransformerEnginePrecision,
    XLAPrecision,
)
from fulmen.utilities import MisconfigurationException, apply_to_collection, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.module import LightningModule


_NO_CONTEXT = contextlib.nullcontext()
_CLOSURE_OPTIONAL: dict[type, bool] = {}


def _closure_optional(optimizer: Optimizer) -> bool:
    """True for torch's own optimizers that call a closure once at most (all but LBFGS); cached per class."""
    cls = type(optimizer)
    known = _CLOSURE_OPTIONAL.get(cls)
    if known is None:
        step_owner = next((c for c in cls.__mro__ if "step" in c.__dict__), cls)
        known = step_owner.__module__.startswith("torch.optim.") and not issubclass(cls, torch.optim.LBFGS)
        _CLOSURE_OPTIONAL[cls] = known
    return known


class Precision:
    """Full fp32 training ("32-true"): the interface every precision mode implements."""

    name = "32-true"
    # the dtype the steps compute in under autocast (mixed modes); None: no autocast. FSDP's
    # MixedPrecisionPolicy takes it as its parameter dtype.
    autocast_dtype: torch.dtype | None = None

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module's parameters if the mode trains in a lower or higher dtype."""
        return module

    def convert_input(self, data: Any) -> Any:
        """Cast floating-point inputs if the mode needs it."""
        return data

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """Context around training/validation/test/predict steps (autocast for mixed modes)."""
        return _NO_CONTEXT  # fp32: a shared do-nothing context, the cheapest thing to enter each step

    def tensor_init_context(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which `Trainer.init_module` creates the model (the "-true" modes set the default dtype)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, module: LightningModule, *args: Any, **kwargs: Any) -> None:
        """Run backward through the module's `backward` hook (scaled for fp16)."""
        module.backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        module: LightningModule,
        closure: Callable[[], Any],
        after_closure: Callable[[], None],
        **kwargs: Any,
    ) -> Any:
        """Step `optimizer`; `closure` computes forward/backward, `after_closure` runs the pre-step hooks."""
        if not _closure_optional(optimizer):  # e.g. LBFGS, SAM: the optimizer calls the closure itself

            def wrapped() -> Any:
                result = closure()
                after_closure()
                return result

            return optimizer.step(closure=wrapped, **kwargs)
        # Run the closure here rather than inside optimizer.step: the same result, without the
        # enable_grad context and closure plumbing a plain loop does not pay for.
        result = closure()
        after_closure()
        out = optimizer.step(**kwargs)
        return result if out is None else out  # what step(closure) returns: the closure's loss

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Bring gradients back to their true scale before clipping (only fp16 scales them)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (e.g. the grad scaler's)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class MixedPrecision(Precision):
    """The "16-mixed" and "bf16-mixed" modes: fp32 weights, the steps run under `torch.autocast`.

    fp16 has a narrow range, so "16-mixed" multiplies the loss by a large factor before backward
    (a `torch.amp.GradScaler`), divides the gradients back before the hooks and clipping see them, and
    skips the optimizer step when they contain inf/nan (the scale is then lowered). bf16 has fp32's
    range and needs no scaler.
    """

    def __init__(
        self, precision: str, device: str = "cuda", scaler: torch.amp.GradScaler | None = None
    ) -> None:
        device_type = device
        if precision not in ("16-mixed", "bf16-mixed"):
            raise MisconfigurationException(
                f"MixedPrecision takes '16-mixed' or 'bf16-mixed', got {precision!r}."
            )
        self.name = precision
        self.device_type = device_type
        self.dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
        self.autocast_dtype = self.dtype
        if precision == "16-mixed" and scaler is None:
            scaler = torch.amp.GradScaler(device_type)
        if precision == "bf16-mixed" and scaler is not None:
            raise MisconfigurationException(
                "precision='bf16-mixed' does not scale the loss; remove the `scaler` argument."
            )
        self.scaler = scaler
        self._unscaled: set[int] = set()  # optimizers already unscaled in this step

    @contextlib.contextmanager  # type: ignore[override]
    def forward_context(self) -> Generator[None, None, None]:
        """Run the step under autocast to this mode's dtype."""
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def backward(self, loss: torch.Tensor, module: LightningModule, *args: Any, **kwargs: Any) -> None:
        """Backward on the scaled loss (fp16) or the loss itself (bf16)."""
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        module.backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        module: LightningModule,
        closure: Callable[[], Any],
        after_closure: Callable[[], None],
        **kwargs: Any,
    ) -> Any:
        """With a scaler: closure, unscale, hooks and clipping, then `scaler.step` (skips inf/nan) and update."""
        scaler = self.scaler
        if scaler is None:
            return super().optimizer_step(optimizer, module, closure, after_closure, **kwargs)
        if isinstance(optimizer, torch.optim.LBFGS):
            raise MisconfigurationException(
                "precision='16-mixed' cannot step LBFGS: it re-evaluates the closure, which the grad scaler "
                "does not support. Use precision='bf16-mixed' or '32-true' with LBFGS."
            )
        # The closure runs outside `optimizer.step` so that the gradients can be unscaled before the
        # hooks and clipping look at them, and so that the scaler can decide to skip the step.
        result = closure()
        if result is None and module.automatic_optimization:
            # training_step returned None: no backward ran, so there is nothing to unscale or step.
            after_closure()
            return None
        self.unscale_gradients(optimizer)
        after_closure()
        out = scaler.step(optimizer, **kwargs)
        scaler.update()
        self._unscaled.clear()
        return result if out is None else out

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Divide the gradients by the loss scale (once per step; later calls do nothing)."""
        if self.scaler is None or id(optimizer) in self._unscaled:
            return
        inner = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer wraps the real one
        self.scaler.unscale_(inner)
        self._unscaled.add(id(optimizer))
        self._unscaled.add(id(inner))

    def state_dict(self) -> dict[str, Any]:
        """The grad scaler's state (empty for bf16)."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the grad scaler's state."""
        if self.scaler is not None and state_dict:
            self.scaler.load_state_dict(state_dict)


class _DtypeMixin(Precision):
    """Shared by the "-true" modes: weights and float inputs in one dtype, new tensors default to it."""

    dtype: torch.dtype

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast every floating-point parameter and buffer to this mode's dtype."""
        return module.to(dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        """Cast floating-point tensors in the batch to this mode's dtype; ints and bools stay."""
        dtype = self.dtype

        def cast(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and torch.is_floating_point(t) and t.dtype != dtype:
                return t.to(dtype)
            return t

        return apply_to_collection(data, cast)

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """Tensors created inside the step (e.g. `torch.zeros(...)`) default to this mode's dtype."""
        return self.tensor_init_context()

    @contextlib.contextmanager  # type: ignore[override]
    def tensor_init_context(self) -> Generator[None, None, None]:
        """Tensors created in this context (a model's parameters too) default to this mode's dtype."""
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)


class HalfPrecision(_DtypeMixin):
    """The "16-true" and "bf16-true" modes: the whole module in fp16/bf16 (no fp32 master weights, no scaler)."""

    def __init__(self, precision: str = "16-true") -> None:
        if precision not in ("16-true", "bf16-true"):
            raise MisconfigurationException(
                f"HalfPrecision takes '16-true' or 'bf16-true', got {precision!r}."
            )
        self.name = precision
        self.dtype = torch.float16 if precision == "16-true" else torch.bfloat16


class DoublePrecision(_DtypeMixin):
    """The "64-true" mode: the module and float inputs in fp64 (for numerics that need it)."""

    name = "64-true"
    dtype = torch.float64


class FSDPPrecision(Precision):
    """The precision plugin Lightning pairs with FSDP: `precision` is one of "32-true", "16-mixed",
    "bf16-mixed", "16-true", "bf16-true"; it acts as that mode's plugin (a `scaler` only with "16-mixed")."""

    def __init__(self, precision: str = "32-true", scaler: torch.amp.GradScaler | None = None) -> None:
        if precision not in ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"):
            raise MisconfigurationException(
                f"FSDPPrecision(precision={precision!r}) is not valid; use '32-true', '16-mixed', 'bf16-mixed', "
                "'16-true' or 'bf16-true'."
            )
        if scaler is not None and precision != "16-mixed":
            raise MisconfigurationException(
                f"FSDPPrecision: a `scaler` only applies to '16-mixed', not {precision!r}."
            )
        self.name = precision
        self.scaler = scaler
        self._inner: Precision | None = None if precision != "32-true" else Precision()

    def _mode(self) -> Precision:
        if self._inner is None:  # the mixed modes need the device type: default to CUDA, where FSDP runs
            if self.name in ("16-true", "bf16-true"):
                self._inner = HalfPrecision(self.name)
            else:
                device = "cuda" if torch.cuda.is_available() else "cpu"
                scaler = self.scaler
                if self.name == "16-mixed" and scaler is None:
                    scaler = torch.amp.GradScaler(device)
                self._inner = MixedPrecision(self.name, device, scaler)
        return self._inner

    def convert_module(self, module: nn.Module) -> nn.Module:  # noqa: D102
        return self._mode().convert_module(module)

    def convert_input(self, data: Any) -> Any:  # noqa: D102
        return self._mode().convert_input(data)

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:  # noqa: D102
        return self._mode().forward_context()

    def backward(self, loss: torch.Tensor, module: LightningModule, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self._mode().backward(loss, module, *args, **kwargs)

    def optimizer_step(  # noqa: D102
        self,
        optimizer: Optimizer,
        module: LightningModule,
        closure: Callable[[], Any],
        after_closure: Callable[[], None],
        **kwargs: Any,
    ) -> Any:
        return self._mode().optimizer_step(optimizer, module, closure, after_closure, **kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:  # noqa: D102
        self._mode().unscale_gradients(optimizer)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return self._mode().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self._mode().load_state_dict(state_dict)


_VALID = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
_LEGACY = {16: "16-mixed", "16": "16-mixed", "bf16": "bf16-mixed", 32: "32-true", "32": "32-true"}
_LEGACY.update({64: "64-true", "64": "64-true"})


def resolve_precision(value: Any, device_type: str) -> Precision:
    """Build the Precision for the Trainer's `precision=` flag on `device_type` (legacy spellings mapped)."""
    if isinstance(value, Precision):
        return value
    if value is None:
        return Precision()
    key = value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        key = None
    if key in _LEGACY:
        mapped = _LEGACY[key]
        rank_zero_warn(
            f"precision={value!r} is the legacy spelling (kept for Lightning 1.x code); use "
            f"precision={mapped!r} instead.",
            stacklevel=5,  # the user's Trainer(...) line
        )
        key = mapped
    if key not in _VALID:
        raise MisconfigurationException(f"precision={value!r} is not valid; use one of {list(_VALID)}.")
    if key == "32-true":
        return Precision()
    if key == "64-true":
        return DoublePrecision()
    if key in ("16-true", "bf16-true"):
        return HalfPrecision(key)
    device_type = {"gpu": "cuda", "tpu": "xla"}.get(device_type, device_type)
    if key == "16-mixed" and device_type == "cpu":  # as Lightning: fp16 autocast has no CPU kernels
        rank_zero_warn(
            "You passed `Trainer(accelerator='cpu', precision='16-mixed')` but AMP with fp16 is not supported on "
            "CPU. Using `precision='bf16-mixed'` instead.",
            stacklevel=5,
        )
        key = "bf16-mixed"
    if key == "16-mixed" and device_type not in ("cuda",):
        raise MisconfigurationException(
            f"precision='16-mixed' needs a CUDA GPU (fp16 autocast with a grad scaler), but this run is on "
            f"{device_type!r}. Use precision='bf16-mixed' (mixed precision that works on CPU), '16-true' or "
            "'bf16-true', or run on accelerator='gpu'."
        )
    if key == "bf16-mixed" and device_type not in ("cpu", "cuda", "mps", "xla"):
        raise MisconfigurationException(
            f"precision='bf16-mixed' is not available on {device_type!r}; use accelerator='cpu' or 'gpu'."
        )
    if key == "bf16-mixed" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MisconfigurationException(
            "precision='bf16-mixed' needs a GPU with bf16 support (Ampere or newer); use '16-mixed' instead."
        )
    return MixedPrecision(key, device_type)

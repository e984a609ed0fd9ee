"""Numeric precision: one small class per mode, all behind the `Precision` interface.

A precision decides how the module and inputs are cast, the autocast context around the steps,
how the loss is scaled for backward, and how the optimizer steps (e.g. through a GradScaler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from fulmen.utilities import MisconfigurationException

if TYPE_CHECKING:
    from fulmen.module import LightningModule


class Precision:
    """Full fp32 training ("32-true"): the interface every precision mode implements."""

    name = "32-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module's parameters if the mode trains in a lower or higher dtype."""
        return module

    def convert_input(self, data: Any) -> Any:
        """Cast floating-point inputs if the mode needs it."""
        return data

    @contextlib.contextmanager
    def forward_context(self) -> Generator[None, None, None]:
        """Context around training/validation/test/predict steps (autocast for mixed modes)."""
        yield

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

        def wrapped() -> Any:
            result = closure()
            after_closure()
            return result

        return optimizer.step(closure=wrapped, **kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Bring gradients back to their true scale before clipping (only fp16 scales them)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (e.g. the grad scaler's)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


_VALID = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")


def resolve_precision(value: Any, device_type: str) -> Precision:
    """Build the Precision for the Trainer's `precision=` flag (legacy spellings are mapped)."""
    if isinstance(value, Precision):
        return value
    mapped = {32: "32-true", "32": "32-true", 64: "64-true", "64": "64-true"}.get(value, value)
    if mapped == "32-true":
        return Precision()
    if mapped not in _VALID and mapped not in (16, "16", "bf16"):
        raise MisconfigurationException(f"precision={value!r} is not valid; use one of {list(_VALID)}.")
    raise NotImplementedError(
        f"precision={value!r} is not built yet in this version of fulmen; use precision='32-true'."
    )

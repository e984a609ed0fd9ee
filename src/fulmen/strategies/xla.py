"""One TPU (or other XLA device) through `torch_xla`.

XLA tensors are lazy: operations are recorded into a graph that runs when `mark_step()` is called
(or a value is read on the host). Without a mark per step the graph of a whole epoch would grow in
memory, so this strategy marks the end of each optimizer step and of each evaluation step.
"""

from __future__ import annotations

from typing import Any

from fulmen.out_of_scope import XLAStrategy  # noqa: F401  # multi-device XLA: out of scope, importable
from fulmen.strategies.strategy import SingleDeviceStrategy


def _mark_step() -> None:
    import torch_xla.core.xla_model as xm

    xm.mark_step()


class SingleDeviceXLAStrategy(SingleDeviceStrategy):
    """One process on one XLA device; the graph is cut after every optimizer and evaluation step."""

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        """Step as usual, then run the recorded graph on the device."""
        out = super().optimizer_step(*args, **kwargs)
        _mark_step()
        return out

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """The module's validation_step, then run its graph."""
        out = super().validation_step(*args, **kwargs)
        _mark_step()
        return out

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """The module's test_step, then run its graph."""
        out = super().test_step(*args, **kwargs)
        _mark_step()
        return out

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """The module's predict_step, then run its graph."""
        out = super().predict_step(*args, **kwargs)
        _mark_step()
        return out

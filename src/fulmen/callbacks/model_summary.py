"""ModelSummary: a table of the module's layers, parameter counts and estimated size at fit start."""

from __future__ import annotations

from typing import Any

from torch import nn

from fulmen.callbacks.callback import Callback
from fulmen.utilities import rank_zero_info


def _human(n: float) -> str:
    for unit in ("", " K", " M", " B", " T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000.0
    return f"{n:.1f} P"


class LayerSummary:
    """One row of the summary: a named submodule and its parameter count."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.layer_type = type(module).__name__
        self.num_parameters = sum(p.numel() for p in module.parameters())
        self.training = module.training


class Summary:
    """The numbers ModelSummary prints, computed from a module."""

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        self.max_depth = max_depth
        self.layers: list[LayerSummary] = []
        if max_depth != 0:
            for name, mod in model.named_modules():
                if not name:
                    continue
                depth = name.count(".") + 1
                if max_depth == -1 or depth <= max_depth:
                    self.layers.append(LayerSummary(name, mod))
        params = list(model.parameters())
        self.total_parameters = sum(p.numel() for p in params)
        self.trainable_parameters = sum(p.numel() for p in params if p.requires_grad)
        self.non_trainable_parameters = self.total_parameters - self.trainable_parameters
        self.model_size_mb = sum(p.numel() * p.element_size() for p in params) / 1e6
        self.training_modes = sum(1 for m in model.modules() if m.training)
        self.eval_modes = sum(1 for m in model.modules() if not m.training)

    def __str__(self) -> str:
        rows = [("", "Name", "Type", "Params")]
        for i, layer in enumerate(self.layers):
            rows.append((str(i), layer.name, layer.layer_type, _human(layer.num_parameters)))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = []
        for j, r in enumerate(rows):
            lines.append(" | ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)))
            if j == 0:
                lines.append("-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"{_human(self.trainable_parameters):<10} Trainable params")
        lines.append(f"{_human(self.non_trainable_parameters):<10} Non-trainable params")
        lines.append(f"{_human(self.total_parameters):<10} Total params")
        lines.append(f"{self.model_size_mb:<10.3f} Total estimated model params size (MB)")
        return "\n".join(lines)


class ModelSummary(Callback):
    """Prints the layer table when fit starts (`max_depth` levels of submodules; -1 for all)."""

    def __init__(self, max_depth: int = 1) -> None:
        self._max_depth = max_depth
        self.summary: Summary | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        if not trainer.is_global_zero:
            return
        self.summary = Summary(pl_module, self._max_depth)
        rank_zero_info(str(self.summary))


def summarize(model: nn.Module, max_depth: int = 1) -> Summary:
    """Compute the summary of `model` without a Trainer."""
    return Summary(model, max_depth)

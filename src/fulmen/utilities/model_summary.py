"""The numbers behind the model summary table: each layer's type and parameter count, totals, size."""

from __future__ import annotations

from torch import nn

__all__ = [
    "LayerSummary",
    "ModelSummary",
    "get_formatted_model_size",
    "get_human_readable_count",
    "summarize",
]


def get_human_readable_count(number: float) -> str:
    """`number` with a K/M/B/T suffix: 123 -> "123", 1234 -> "1.2 K", 2_000_000 -> "2.0 M"."""
    for unit in ("", " K", " M", " B", " T"):
        if abs(number) < 1000:
            return f"{number:.0f}{unit}" if unit == "" else f"{number:.1f}{unit}"
        number /= 1000.0
    return f"{number:.1f} P"


def get_formatted_model_size(total_model_size: float) -> str:
    """A size in MB as the summary prints it (three decimals)."""
    return f"{total_model_size:,.3f}"


class LayerSummary:
    """One row of the summary: a submodule, its type and its parameter count."""

    def __init__(self, module: nn.Module, name: str = "") -> None:
        self.name = name
        self.layer_type = type(module).__name__
        self.num_parameters = sum(p.numel() for p in module.parameters())
        self.training = module.training


class ModelSummary:
    """The summary of `model`: its submodules `max_depth` levels deep (-1 for all, 0 for none) and totals."""

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"ModelSummary(max_depth={max_depth!r}): use -1 (all levels) or an int >= 0.")
        self.max_depth = max_depth
        self.layers: list[LayerSummary] = []
        if max_depth != 0:
            for name, mod in model.named_modules():
                if not name:
                    continue
                depth = name.count(".") + 1
                if max_depth == -1 or depth <= max_depth:
                    self.layers.append(LayerSummary(mod, name))
        params = list(model.parameters())
        self.total_parameters = sum(p.numel() for p in params)
        self.trainable_parameters = sum(p.numel() for p in params if p.requires_grad)
        self.non_trainable_parameters = self.total_parameters - self.trainable_parameters
        self.model_size_mb = sum(p.numel() * p.element_size() for p in params) / 1e6
        self.training_modes = sum(1 for m in model.modules() if m.training)
        self.eval_modes = sum(1 for m in model.modules() if not m.training)

    @property
    def layer_names(self) -> list[str]:
        """The listed submodules' names."""
        return [layer.name for layer in self.layers]

    @property
    def layer_types(self) -> list[str]:
        """The listed submodules' class names."""
        return [layer.layer_type for layer in self.layers]

    @property
    def param_nums(self) -> list[int]:
        """The listed submodules' parameter counts."""
        return [layer.num_parameters for layer in self.layers]

    @property
    def model_size(self) -> float:
        """The parameters' size in MB."""
        return self.model_size_mb

    def __str__(self) -> str:
        rows = [("", "Name", "Type", "Params")]
        for i, layer in enumerate(self.layers):
            rows.append(
                (str(i), layer.name, layer.layer_type, get_human_readable_count(layer.num_parameters))
            )
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = []
        for j, r in enumerate(rows):
            lines.append(" | ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)))
            if j == 0:
                lines.append("-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"{get_human_readable_count(self.trainable_parameters):<10} Trainable params")
        lines.append(f"{get_human_readable_count(self.non_trainable_parameters):<10} Non-trainable params")
        lines.append(f"{get_human_readable_count(self.total_parameters):<10} Total params")
        lines.append(
            f"{get_formatted_model_size(self.model_size_mb):<10} Total estimated model params size (MB)"
        )
        return "\n".join(lines)

    __repr__ = __str__


def summarize(lightning_module: nn.Module, max_depth: int = 1) -> ModelSummary:
    """The summary of a module, without a Trainer (`print(summarize(model))`)."""
    return ModelSummary(lightning_module, max_depth)

"""Lightning features fulmen does not provide, importable so that code loads, and clear when used.

``from lightning.pytorch.strategies import DeepSpeedStrategy`` must not be the line that breaks a
migrated project that never builds one; building one (or asking for ``strategy="deepspeed"``) raises
:class:`OutOfScopeError`, which says what is missing and what to use instead. docs/migrating.md lists
the same features under "Out of scope".
"""

from __future__ import annotations

from typing import Any, NoReturn


class OutOfScopeError(NotImplementedError):
    """A Lightning feature that fulmen deliberately does not implement was used."""


# name -> (what it is, what to use instead)
FEATURES: dict[str, tuple[str, str]] = {
    "Fabric": ("Lightning Fabric", "write the loop with plain PyTorch, or use fulmen's Trainer"),
    "DeepSpeedStrategy": ("the DeepSpeed strategy", "use strategy='fsdp' for sharded training"),
    "DeepSpeedPrecision": ("DeepSpeed precision", "use strategy='fsdp' with precision='bf16-mixed'"),
    "ModelParallelStrategy": (
        "ModelParallelStrategy (tensor parallelism through DTensor)",
        "use strategy='fsdp', or DDP with your own torch.distributed.tensor code",
    ),
    "BitsandbytesPrecision": ("bitsandbytes quantized precision", "quantize the model yourself before fit"),
    "TransformerEnginePrecision": (
        "TransformerEngine FP8 precision",
        "use precision='bf16-mixed' or call transformer_engine in your module",
    ),
    "XLAPrecision": (
        "the XLA precision plugin",
        "TPU runs take the precision flag instead, e.g. Trainer(accelerator='tpu', precision='bf16-true'); "
        "remove XLAPrecision from plugins=",
    ),
    "XLAStrategy": ("multi-device XLA (TPU) training", "use one TPU: accelerator='tpu', devices=1"),
    "XLAProfiler": ("the XLA profiler", "use PyTorchProfiler, or torch_xla's own profiler"),
    "XLAEnvironment": ("the XLA cluster environment", "use one TPU: accelerator='tpu', devices=1"),
    "LitLogger": (
        "LitLogger (Lightning AI's hosted logger)",
        "use CSVLogger, TensorBoardLogger or WandbLogger",
    ),
    "HPUAccelerator": ("Habana Gaudi (HPU) devices", "use accelerator='cpu', 'gpu', 'mps' or 'tpu'"),
}

# Trainer flag -> its string values that name these features
FLAG_VALUES: dict[str, dict[str, str]] = {
    "strategy": {
        "deepspeed": "DeepSpeedStrategy",
        "model_parallel": "ModelParallelStrategy",
        "xla": "XLAStrategy",
        "xla_debug": "XLAStrategy",
        "hpu_parallel": "HPUAccelerator",
        "hpu_single": "HPUAccelerator",
    },
    "accelerator": {"hpu": "HPUAccelerator", "habana": "HPUAccelerator"},
    "precision": {
        "transformer-engine": "TransformerEnginePrecision",
        "transformer-engine-float16": "TransformerEnginePrecision",
    },
}


def message(name: str) -> str:
    """The sentence that explains that feature `name` is out of scope and what to use instead."""
    what, instead = FEATURES[name]
    return (
        f"{name}: {what} is out of scope for fulmen; {instead}. "
        "See 'Out of scope' in docs/migrating.md for the full list."
    )


def raise_for_flag(flag: str, value: Any) -> None:
    """Raise OutOfScopeError when a Trainer flag's string value names an out-of-scope feature."""
    if not isinstance(value, str):
        return
    key = value.lower()
    values = FLAG_VALUES.get(flag, {})
    name = values.get(key) or next((n for v, n in values.items() if key.startswith(v + "_")), None)
    if name is not None:
        raise OutOfScopeError(f"{flag}={value!r}: {message(name)}")


def _feature_class(name: str) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise OutOfScopeError(message(name))

    doc = f"Out of scope in fulmen ({FEATURES[name][0]}): building one raises OutOfScopeError."
    return type(name, (), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


Fabric = _feature_class("Fabric")
DeepSpeedStrategy = _feature_class("DeepSpeedStrategy")
DeepSpeedPrecision = _feature_class("DeepSpeedPrecision")
ModelParallelStrategy = _feature_class("ModelParallelStrategy")
BitsandbytesPrecision = _feature_class("BitsandbytesPrecision")
TransformerEnginePrecision = _feature_class("TransformerEnginePrecision")
XLAPrecision = _feature_class("XLAPrecision")
XLAStrategy = _feature_class("XLAStrategy")
XLAProfiler = _feature_class("XLAProfiler")
XLAEnvironment = _feature_class("XLAEnvironment")
LitLogger = _feature_class("LitLogger")
HPUAccelerator = _feature_class("HPUAccelerator")

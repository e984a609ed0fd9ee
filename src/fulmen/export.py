"""Exporting a LightningModule: TorchScript (`to_torchscript`) and ONNX (`to_onnx`).

Both export the module in eval mode and restore its own mode afterwards, and both default their inputs
to `example_input_array`, moved to the module's device through its batch-transfer hooks. The methods of
the same names on LightningModule call these; `onnx`/`onnxscript` are looked up only when exporting.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fulmen.module import LightningModule


def _example_input(module: LightningModule, given: Any, missing: str) -> Any:
    """`given`, else the module's `example_input_array` (ValueError `missing` when neither), on its device."""
    sample = module.example_input_array if given is None else given
    if sample is None:
        raise ValueError(missing)
    sample = module.on_before_batch_transfer(sample, 0)
    sample = module.transfer_batch_to_device(sample, module.device, 0)
    return module.on_after_batch_transfer(sample, 0)


@torch.no_grad()
def to_torchscript(
    module: LightningModule,
    file_path: str | os.PathLike[str] | None = None,
    method: str = "script",
    example_inputs: Any = None,
    **kwargs: Any,
) -> Any:
    """`module` compiled to TorchScript by "script" or "trace" (see `LightningModule.to_torchscript`)."""
    if method not in ("script", "trace"):
        raise ValueError(f"to_torchscript(method={method!r}) is not valid; use 'script' or 'trace'.")
    training = module.training
    try:  # the module's mode comes back even when torch cannot compile it
        if method == "script":
            compiled = torch.jit.script(module.eval(), **kwargs)
        else:
            example_inputs = _example_input(
                module,
                example_inputs,
                "to_torchscript(method='trace') needs inputs to trace with: pass `example_inputs=` or set "
                "`self.example_input_array` in __init__.",
            )
            compiled = torch.jit.trace(func=module.eval(), example_inputs=example_inputs, **kwargs)
    finally:
        module.train(training)
    if file_path is not None:
        torch.jit.save(compiled, os.fspath(file_path))
    return compiled


@torch.no_grad()
def to_onnx(
    module: LightningModule, file_path: str | os.PathLike[str] | Any, input_sample: Any = None, **kwargs: Any
) -> Any:
    """`torch.onnx.export` of `module` in eval mode (see `LightningModule.to_onnx`)."""
    name = type(module).__name__
    if importlib.util.find_spec("onnx") is None:
        raise ModuleNotFoundError(f"`{name}.to_onnx()` needs the `onnx` package: `pip install onnx`.")
    dynamo_default = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    dynamo = kwargs.get("dynamo", dynamo_default.default if dynamo_default is not None else False)
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        raise ModuleNotFoundError(
            f"`{name}.to_onnx()` uses torch's dynamo-based exporter, which needs `onnxscript`: "
            "`pip install onnxscript`, or pass dynamo=False for the older TorchScript-based exporter."
        )
    input_sample = _example_input(
        module,
        input_sample,
        f"`{name}.to_onnx()` needs an input to export with: pass `input_sample=` or set "
        "`self.example_input_array` in __init__.",
    )
    training = module.training
    path = os.fspath(file_path) if isinstance(file_path, (str, os.PathLike)) else file_path
    try:  # exported in eval mode (as to_torchscript does), so dropout and BatchNorm act as in inference
        return torch.onnx.export(module.eval(), input_sample, path, **kwargs)
    finally:
        module.train(training)

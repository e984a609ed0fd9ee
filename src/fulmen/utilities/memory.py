"""Memory: recognising out-of-memory errors, freeing cached device memory, detaching stored tensors."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "garbage_collection_cuda",
    "is_cuda_out_of_memory",
    "is_cudnn_snafu",
    "is_oom_error",
    "is_out_of_cpu_memory",
    "recursive_detach",
]


def _message(exception: BaseException) -> str:
    if not isinstance(exception, RuntimeError) or len(exception.args) != 1:
        return ""
    return str(exception.args[0])


def is_cuda_out_of_memory(exception: BaseException) -> bool:
    """True for the error the CUDA allocator raises when the device is full."""
    if isinstance(exception, torch.OutOfMemoryError):
        return True
    message = _message(exception)
    return "CUDA" in message and "out of memory" in message


def is_cudnn_snafu(exception: BaseException) -> bool:
    """True for cuDNN's NOT_SUPPORTED error, which it raises when it runs out of workspace memory."""
    return "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in _message(exception)


def is_out_of_cpu_memory(exception: BaseException) -> bool:
    """True for the error the CPU allocator raises when host memory is exhausted."""
    return "DefaultCPUAllocator: can't allocate memory" in _message(exception)


def is_oom_error(exception: BaseException) -> bool:
    """True for any out-of-memory error (CUDA, MPS, cuDNN, CPU): the ones a smaller batch may avoid."""
    if is_cuda_out_of_memory(exception) or is_cudnn_snafu(exception) or is_out_of_cpu_memory(exception):
        return True
    return "out of memory" in _message(exception).lower()


def garbage_collection_cuda() -> None:
    """Collect Python garbage, then return cached CUDA memory to the device (a no-op without CUDA)."""
    gc.collect()
    if not torch.cuda.is_available():
        return
    try:
        torch.cuda.empty_cache()
    except RuntimeError as err:
        if not is_oom_error(err):  # emptying the cache can itself run out of memory; that is no news
            raise


def recursive_detach(in_dict: Any, to_cpu: bool = False) -> Any:
    """A copy of `in_dict` (nested dicts included) with every tensor detached, and moved to CPU if asked."""
    if isinstance(in_dict, torch.Tensor):
        out = in_dict.detach()
        return out.cpu() if to_cpu else out
    if isinstance(in_dict, Mapping):
        return {key: recursive_detach(value, to_cpu) for key, value in in_dict.items()}
    return in_dict

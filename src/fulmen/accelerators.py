"""Accelerators: which kind of device a run uses, how many are visible, and how `devices=` is read."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from fulmen.out_of_scope import raise_for_flag
from fulmen.utilities import MisconfigurationException


class Accelerator:
    """A kind of device; subclasses say whether it exists and which devices `devices=` selects."""

    name = "cpu"

    @staticmethod
    def is_available() -> bool:
        """True when this kind of device can be used on this machine."""
        return True

    @staticmethod
    def auto_device_count() -> int:
        """How many devices `devices="auto"` uses."""
        return 1

    def setup_device(self, device: torch.device) -> None:
        """Prepare `device` for use (select it, for CUDA)."""

    def parallel_devices(self, devices: list[int]) -> list[torch.device]:
        """The torch devices for the parsed device indices."""
        return [torch.device("cpu")] * len(devices)

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """Memory statistics for logging."""
        return {}


class CPUAccelerator(Accelerator):
    """Processes on the CPU; `devices=N` means N processes."""

    name = "cpu"


class CUDAAccelerator(Accelerator):
    """NVIDIA (or ROCm) GPUs through torch.cuda."""

    name = "cuda"

    @staticmethod
    def is_available() -> bool:  # noqa: D102
        return torch.cuda.is_available()

    @staticmethod
    def auto_device_count() -> int:  # noqa: D102
        return torch.cuda.device_count()

    def setup_device(self, device: torch.device) -> None:  # noqa: D102
        torch.cuda.set_device(device)

    def parallel_devices(self, devices: list[int]) -> list[torch.device]:  # noqa: D102
        return [torch.device("cuda", i) for i in devices]

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:  # noqa: D102
        return dict(torch.cuda.memory_stats(device))


class MPSAccelerator(Accelerator):
    """Apple-silicon GPUs through torch.mps."""

    name = "mps"

    @staticmethod
    def is_available() -> bool:  # noqa: D102
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()

    def parallel_devices(self, devices: list[int]) -> list[torch.device]:  # noqa: D102
        return [torch.device("mps", i) for i in devices]


class XLAAccelerator(Accelerator):
    """TPUs (and other XLA devices) through the optional `torch_xla` package, imported only when used."""

    name = "tpu"

    @staticmethod
    def is_installed() -> bool:
        """True when `torch_xla` can be imported (checked without importing it)."""
        return importlib.util.find_spec("torch_xla") is not None

    @staticmethod
    def is_available() -> bool:  # noqa: D102
        if not XLAAccelerator.is_installed():
            return False
        try:
            return XLAAccelerator.auto_device_count() > 0
        except Exception:  # torch_xla installed but no TPU runtime on this machine
            return False

    @staticmethod
    def auto_device_count() -> int:  # noqa: D102
        import torch_xla.runtime as xr

        if hasattr(xr, "addressable_device_count"):
            return int(xr.addressable_device_count())
        import torch_xla.core.xla_model as xm

        return len(xm.get_xla_supported_devices() or [])

    def setup_device(self, device: torch.device) -> None:  # noqa: D102
        import torch_xla  # noqa: F401  (registers the "xla" device type with torch)

    def parallel_devices(self, devices: list[int]) -> list[torch.device]:  # noqa: D102
        return [torch.device("xla", i) for i in devices]


ACCELERATORS: dict[str, type[Accelerator]] = {
    "cpu": CPUAccelerator,
    "cuda": CUDAAccelerator,
    "gpu": CUDAAccelerator,
    "mps": MPSAccelerator,
    "tpu": XLAAccelerator,
    "xla": XLAAccelerator,
}
_VALID_NAMES = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla")


def select_accelerator(accelerator: str | Accelerator) -> Accelerator:
    """Turn the `accelerator=` flag into an Accelerator, checking that the hardware exists."""
    if isinstance(accelerator, Accelerator):
        return accelerator
    raise_for_flag("accelerator", accelerator)
    name = str(accelerator).lower()
    if name == "auto":
        for candidate in ("tpu", "cuda", "mps"):
            if ACCELERATORS[candidate].is_available():
                return ACCELERATORS[candidate]()
        return CPUAccelerator()
    if name in ("tpu", "xla") and not XLAAccelerator.is_installed():
        raise MisconfigurationException(
            f"accelerator={accelerator!r} needs the `torch_xla` package, which is not installed. Install it "
            "on the TPU machine (`pip install torch_xla`, matching your torch version), or use "
            "accelerator='cpu' or 'gpu'."
        )
    if name not in ACCELERATORS:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} is not valid; use one of {list(_VALID_NAMES)}."
        )
    cls = ACCELERATORS[name]
    if not cls.is_available():
        raise MisconfigurationException(
            f"accelerator={accelerator!r} was requested but no {cls.name.upper()} device is available on this "
            "machine. Use accelerator='cpu' (or 'auto' to pick whatever is present)."
        )
    return cls()


def parse_devices(devices: Any, accelerator: Accelerator) -> list[int]:
    """Read `devices=` ("auto", an int, -1, a list of indices, or a string like "0,1") into indices."""
    if devices == "auto" or devices is None:
        return list(range(max(1, accelerator.auto_device_count())))
    if isinstance(devices, str):
        text = devices.strip()
        if text == "-1":
            devices = -1
        elif "," in text or text.endswith(","):
            devices = [int(x) for x in text.split(",") if x.strip()]
        elif text.isdigit():
            devices = int(text)
        else:
            raise MisconfigurationException(
                f"devices={devices!r} is not valid; use 'auto', an int, -1, a list of indices or '0,1'."
            )
    if isinstance(devices, bool):
        raise MisconfigurationException(f"devices={devices!r} is not valid; use 'auto', an int or a list.")
    if isinstance(devices, int):
        if devices == -1:
            count = accelerator.auto_device_count()
            return list(range(max(1, count)))
        if devices <= 0:
            raise MisconfigurationException(
                f"devices={devices} is not valid; use a positive int, -1 for all, or a list of indices."
            )
        if accelerator.name != "cpu" and devices > accelerator.auto_device_count():
            raise MisconfigurationException(
                f"devices={devices} was requested but only {accelerator.auto_device_count()} "
                f"{accelerator.name} device(s) are visible."
            )
        return list(range(devices))
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    raise MisconfigurationException(
        f"devices={devices!r} is not valid; use 'auto', an int, -1 or a list of indices."
    )


def find_usable_cuda_devices(num_devices: int = -1) -> list[int]:
    """Indices of `num_devices` CUDA devices this process can really use (-1: all of them).

    Each visible device is tried with a small allocation, so devices that another process holds in
    exclusive mode are skipped: ``Trainer(devices=find_usable_cuda_devices(2))`` on a shared machine.
    Raises ValueError when fewer than `num_devices` usable devices exist.
    """
    if num_devices == 0:
        return []
    visible = torch.cuda.device_count()
    if visible == 0:
        raise ValueError(
            f"find_usable_cuda_devices({num_devices}): there are no visible CUDA devices on this machine."
        )
    if num_devices > visible:
        raise ValueError(f"find_usable_cuda_devices({num_devices}): only {visible} CUDA devices are visible.")
    usable: list[int] = []
    for index in range(visible):
        if num_devices != -1 and len(usable) == num_devices:
            break
        try:
            torch.tensor(0, device=torch.device("cuda", index))
        except RuntimeError:
            continue  # busy (exclusive mode) or broken
        usable.append(index)
    if num_devices != -1 and len(usable) < num_devices:
        raise ValueError(
            f"find_usable_cuda_devices({num_devices}): only {len(usable)} of the {visible} visible CUDA devices "
            f"could be used ({usable}); the others are busy or unavailable."
        )
    return usable

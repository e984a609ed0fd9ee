"""DeviceStatsMonitor: log the accelerator's statistics (and the CPU's) around train/val/test batches.

On a GPU the statistics are `torch.cuda.memory_stats` (allocated/reserved bytes, allocation counts,
...); on the CPU, or with `cpu_stats=True` alongside a GPU, they are `cpu_percent`, `cpu_vm_percent`
and `cpu_swap_percent` from psutil. Each key is logged as `DeviceStatsMonitor.<hook>/<stat>` at the
steps where the Trainer logs (every `log_every_n_steps`).
"""

from __future__ import annotations

from typing import Any

from fulmen.callbacks.callback import Callback
from fulmen.utilities import MisconfigurationException

Trainer = Any
Module = Any


def cpu_stats() -> dict[str, float]:
    """CPU and memory use of the machine in percent, from psutil (installed with `pip install psutil`)."""
    try:
        import psutil
    except ImportError:
        raise ModuleNotFoundError(
            "CPU statistics need the `psutil` package: `pip install psutil` (or pass cpu_stats=False)."
        ) from None
    return {
        "cpu_vm_percent": float(psutil.virtual_memory().percent),
        "cpu_percent": float(psutil.cpu_percent()),
        "cpu_swap_percent": float(psutil.swap_memory().percent),
    }


def _psutil_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("psutil") is not None


class DeviceStatsMonitor(Callback):
    """Log device statistics at the start and end of every train, validation and test batch.

    Args:
        cpu_stats: None logs the CPU's statistics only when training on the CPU; True also logs them next
            to a GPU's; False never logs CPU statistics (so nothing is logged on a CPU run).
    """

    def __init__(self, cpu_stats: bool | None = None) -> None:
        self._cpu_stats = cpu_stats

    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Check that there is a logger and, when CPU statistics are wanted, that psutil is installed."""
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationException(
                "Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`: it logs through the "
                "Trainer's loggers; pass a logger or remove the callback."
            )
        on_cpu = trainer.strategy.root_device.type == "cpu"
        wants_cpu = self._cpu_stats or (self._cpu_stats is None and on_cpu)
        if wants_cpu and not _psutil_available():
            raise ModuleNotFoundError(
                "DeviceStatsMonitor logs CPU statistics through psutil, which is not installed: `pip install psutil`"
                " (or pass cpu_stats=False)."
            )

    def _log_stats(self, trainer: Trainer, hook: str) -> None:
        step = trainer.fit_loop.progress.batches_that_stepped
        if (step + 1) % trainer.log_every_n_steps != 0 and not trainer.should_stop:
            return  # the same steps at which the Trainer sends logged metrics to the loggers
        device = trainer.strategy.root_device
        if device.type == "cpu":
            if self._cpu_stats is False:
                return
            stats = cpu_stats()
        else:
            stats = dict(trainer.accelerator.get_device_stats(device))
            if self._cpu_stats:
                stats.update(cpu_stats())
        prefix = f"{type(self).__qualname__}.{hook}"
        for logger in trainer.loggers:
            separator = getattr(logger, "group_separator", "/")
            logger.log_metrics({f"{prefix}{separator}{k}": v for k, v in stats.items()}, step=step)

    def on_train_batch_start(self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int) -> None:
        """Log before the training batch."""
        self._log_stats(trainer, "on_train_batch_start")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Log after the training batch."""
        self._log_stats(trainer, "on_train_batch_end")

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Log before the validation batch."""
        self._log_stats(trainer, "on_validation_batch_start")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Log after the validation batch."""
        self._log_stats(trainer, "on_validation_batch_end")

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Log before the test batch."""
        self._log_stats(trainer, "on_test_batch_start")

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: Module,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Log after the test batch."""
        self._log_stats(trainer, "on_test_batch_end")

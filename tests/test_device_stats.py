"""DeviceStatsMonitor: CPU statistics through psutil, CUDA memory statistics on a GPU, logged at log steps."""

import pytest
import torch

from fulmen.callbacks import DeviceStatsMonitor, device_stats
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


def _stats_logged(make_trainer, logger, run="fit", monitor=None, **trainer_kwargs):
    """Run `trainer.<run>` on a BoringModel with a DeviceStatsMonitor; the (step, metrics) calls it logged."""
    trainer = make_trainer(logger=logger, callbacks=[monitor or DeviceStatsMonitor()], **trainer_kwargs)
    getattr(trainer, run)(BoringModel())
    return [(step, m) for m, step in logger.calls if any(k.startswith("DeviceStatsMonitor.") for k in m)]


def test_cpu_stats_are_logged_around_train_batches_at_the_log_steps(make_trainer, memory_logger):
    pytest.importorskip("psutil")
    calls = _stats_logged(
        make_trainer, memory_logger, limit_train_batches=4, limit_val_batches=0, log_every_n_steps=2
    )
    # steps 1 and 3 are the 2nd and 4th batches: where log_every_n_steps=2 sends metrics to the loggers
    assert [step for step, _ in calls] == [1, 1, 3, 3]
    assert sorted(calls[0][1]) == [
        "DeviceStatsMonitor.on_train_batch_start/cpu_percent",
        "DeviceStatsMonitor.on_train_batch_start/cpu_swap_percent",
        "DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent",
    ]
    assert all(0.0 <= v <= 100.0 for v in calls[1][1].values())
    assert all(k.startswith("DeviceStatsMonitor.on_train_batch_end/") for k in calls[1][1])


def test_validation_and_test_batches_are_covered(make_trainer, memory_logger):
    pytest.importorskip("psutil")
    calls = _stats_logged(make_trainer, memory_logger, "test", limit_test_batches=1, log_every_n_steps=1)
    hooks = {k.split("/")[0] for _, m in calls for k in m}
    assert hooks == {"DeviceStatsMonitor.on_test_batch_start", "DeviceStatsMonitor.on_test_batch_end"}


def test_cpu_stats_false_logs_nothing_on_the_cpu(make_trainer, memory_logger):
    monitor = DeviceStatsMonitor(cpu_stats=False)
    assert (
        _stats_logged(
            make_trainer, memory_logger, monitor=monitor, limit_train_batches=2, log_every_n_steps=1
        )
        == []
    )


def test_needs_a_logger(make_trainer):
    trainer = make_trainer(logger=False, callbacks=[DeviceStatsMonitor()])
    with pytest.raises(MisconfigurationException, match="logger=False"):
        trainer.fit(BoringModel())


def test_cpu_stats_without_psutil_is_a_clear_error(make_trainer, monkeypatch, memory_logger):
    monkeypatch.setattr(device_stats, "_psutil_available", lambda: False)
    trainer = make_trainer(logger=memory_logger, callbacks=[DeviceStatsMonitor()])
    with pytest.raises(ModuleNotFoundError, match="pip install psutil"):
        trainer.fit(BoringModel())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_memory_stats_on_a_gpu(make_trainer, memory_logger):
    calls = _stats_logged(
        make_trainer,
        memory_logger,
        accelerator="gpu",
        devices=1,
        limit_train_batches=2,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    stats = calls[-1][1]
    key = "DeviceStatsMonitor.on_train_batch_end/allocated_bytes.all.current"
    assert stats[key] > 0
    assert not any(k.endswith("cpu_percent") for k in stats)  # cpu_stats=None: CUDA statistics only

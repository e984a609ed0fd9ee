"""callbacks/throughput.py: ThroughputMonitor and measure_flops."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fulmen.callbacks import ThroughputMonitor
from fulmen.callbacks.throughput import measure_flops
from fulmen.demos import BoringModel, RandomDataset


def test_throughput_monitor_counts_samples_and_flops(make_trainer, memory_logger):
    monitor = ThroughputMonitor(
        length_fn=lambda batch: 3 * batch.shape[0],
        flops_per_batch=1000.0,
        available_flops=1e6,
        log_every_n_steps=2,
    )
    model = BoringModel()
    model.train_dataloader = lambda: DataLoader(RandomDataset(32, 40), batch_size=5)  # 8 batches
    trainer = make_trainer(logger=memory_logger, callbacks=[monitor], limit_val_batches=0)
    trainer.fit(model)
    samples = memory_logger.values("train/samples")
    assert [s for s, _ in samples] == [1, 3, 5, 7] and [v for _, v in samples] == [10, 20, 30, 40]
    m = monitor.metrics
    assert m["train/batches"] == 8 and m["train/lengths"] == 120
    assert m["train/samples_per_sec"] == pytest.approx(5 * m["train/batches_per_sec"])
    assert m["train/items_per_sec"] == pytest.approx(15 * m["train/batches_per_sec"])
    assert m["train/flops_per_sec"] == pytest.approx(1000 * m["train/batches_per_sec"])
    assert m["train/mfu"] == pytest.approx(m["train/flops_per_sec"] / 1e6)
    assert m["train/time"] > 0


def test_measure_flops_of_a_linear_layer():
    layer = nn.Linear(32, 2, bias=False)
    x = torch.randn(8, 32)
    assert measure_flops(layer, lambda: layer(x)) == 2 * 8 * 32 * 2
    # backward costs twice the forward for a linear layer without input gradients: grad of the weight only
    assert measure_flops(layer, lambda: layer(x), lambda y: y.sum()) == 2 * 8 * 32 * 2 * 2

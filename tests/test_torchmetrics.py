"""torchmetrics objects given to self.log / self.log_dict: computed at epoch end, then reset, in every loop."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

torchmetrics = pytest.importorskip("torchmetrics")

from torchmetrics.aggregation import MaxMetric, SumMetric  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy  # noqa: E402

from fulmen.demos import BoringModel  # noqa: E402

N_TRAIN, N_VAL, BATCH = 12, 8, 4


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 32, generator=g), torch.randint(0, 2, (n,), generator=g))


class SeededData(BoringModel):
    """Seeded random features and 0/1 labels: N_TRAIN samples to train on, N_VAL to validate and test on."""

    def train_dataloader(self):
        return DataLoader(_data(N_TRAIN, 0), batch_size=BATCH)

    def val_dataloader(self):
        return DataLoader(_data(N_VAL, 1), batch_size=BATCH)

    def test_dataloader(self):
        return DataLoader(_data(N_VAL, 2), batch_size=BATCH)


class CountingModel(SeededData):
    """SumMetric of the samples seen: an epoch value other than the epoch's size means a missing reset."""

    def __init__(self):
        super().__init__()
        self.train_seen = SumMetric()
        self.val_seen = SumMetric()
        self.test_seen = SumMetric()

    def _count(self, metric, name, batch):
        x, _ = batch
        metric.update(torch.tensor(float(x.shape[0])))
        self.log(name, metric, on_step=False, on_epoch=True)
        return self.loss(self(x))

    def training_step(self, batch, batch_idx):
        return self._count(self.train_seen, "train_seen", batch)

    def validation_step(self, batch, batch_idx):
        self._count(self.val_seen, "val_seen", batch)

    def test_step(self, batch, batch_idx):
        self._count(self.test_seen, "test_seen", batch)


def test_train_metric_is_computed_per_epoch_and_reset(make_trainer, memory_logger):
    trainer = make_trainer(max_epochs=3, logger=memory_logger, limit_val_batches=0)
    trainer.fit(CountingModel())
    values = [(m["train_seen"], m["epoch"], step) for m, step in memory_logger.calls if "train_seen" in m]
    assert values == [(float(N_TRAIN), 0, 2), (float(N_TRAIN), 1, 5), (float(N_TRAIN), 2, 8)]


def test_sanity_check_batches_do_not_leak_into_the_first_validation(make_trainer):
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=1)
    trainer.fit(CountingModel())
    assert float(trainer.callback_metrics["val_seen"]) == float(N_VAL)


def test_validation_metric_reset_between_epochs(make_trainer, memory_logger):
    trainer = make_trainer(max_epochs=2, logger=memory_logger, num_sanity_val_steps=0)
    trainer.fit(CountingModel())
    assert [m["val_seen"] for m, _ in memory_logger.calls if "val_seen" in m] == [float(N_VAL), float(N_VAL)]


def test_test_loop_returns_the_metric_over_all_batches_each_call(make_trainer):
    trainer = make_trainer()
    model = CountingModel()
    first = trainer.test(model, verbose=False)
    second = trainer.test(model, verbose=False)
    assert first == [{"test_seen": float(N_VAL)}]
    assert second == [{"test_seen": float(N_VAL)}]


class AccuracyModel(SeededData):
    """Accuracy of a fixed linear classifier, so the expected value is computable by hand."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.val_metrics = torchmetrics.MetricCollection(
            {"acc": MulticlassAccuracy(num_classes=2, average="micro"), "max_label": MaxMetric()},
            prefix="val_",
        )
        self.train_acc = MulticlassAccuracy(num_classes=2, average="micro")

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.train_acc(logits.argmax(1), y)  # forward: the batch value is kept for on_step logging
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return torch.nn.functional.cross_entropy(logits, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        preds = self(x).argmax(1)
        self.val_metrics["acc"].update(preds, y)
        self.val_metrics["max_label"].update(y.float())
        self.log_dict(self.val_metrics)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # weights stay fixed: accuracy is predictable


def _accuracy(model, dataset):
    x, y = dataset.tensors
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_metric_collection_via_log_dict(make_trainer):
    model = AccuracyModel()
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model)
    assert float(trainer.callback_metrics["val_acc"]) == pytest.approx(_accuracy(model, _data(N_VAL, 1)))
    assert float(trainer.callback_metrics["val_max_label"]) == 1.0


def test_on_step_metric_logs_batch_values_and_epoch_value(make_trainer, memory_logger):
    model = AccuracyModel()
    trainer = make_trainer(max_epochs=1, logger=memory_logger, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model)
    x, y = _data(N_TRAIN, 0).tensors
    with torch.no_grad():
        hits = (model(x).argmax(1) == y).float()
    per_batch = [hits[i : i + BATCH].mean().item() for i in range(0, N_TRAIN, BATCH)]
    steps = [m["train_acc_step"] for m, _ in memory_logger.calls if "train_acc_step" in m]
    assert steps == pytest.approx(per_batch)
    (epoch,) = [m["train_acc_epoch"] for m, _ in memory_logger.calls if "train_acc_epoch" in m]
    assert epoch == pytest.approx(hits.mean().item())


@pytest.mark.slow
def test_ddp_metrics_sync_and_only_rank_zero_logs_and_prints(tmp_path):
    """Two real processes: metric states are summed across ranks; one log folder; one bar's output."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("tensorboard")
    helpers = Path(__file__).parent / "helpers"
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
    }
    env.update(PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent / "src"), str(helpers)]))
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(helpers / "ddp_metrics_logging.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank in ranks:  # each rank saw half the samples; the synced metric counts all of them
        assert rank["metrics"]["train_seen"] == 32.0 and rank["metrics"]["val_seen"] == 12.0
    logs = tmp_path / "logs"
    assert sorted(os.listdir(logs / "csv")) == ["version_0"] and sorted(os.listdir(logs / "tb")) == [
        "version_0"
    ]
    assert ranks[0]["log_dirs"] == ranks[1]["log_dirs"]  # every rank reports rank 0's folders
    rows = (logs / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    seen = [line.split(",")[header.index("val_seen")] for line in rows[1:]]
    assert [float(v) for v in seen if v] == [12.0, 12.0]
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["Epoch 0", "Epoch 1"]

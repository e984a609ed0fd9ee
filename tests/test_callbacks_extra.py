"""The callbacks beyond the core: one test per behaviour, checking the values they produce."""

import datetime
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fulmen.callbacks import (
    BasePredictionWriter,
    BatchSizeFinder,
    GradientAccumulationScheduler,
    LambdaCallback,
    LearningRateFinder,
    LearningRateMonitor,
    OnExceptionCheckpoint,
    StochasticWeightAveraging,
    ThroughputMonitor,
    Timer,
)
from fulmen.callbacks.throughput import measure_flops
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import MisconfigurationException


class TwoGroupModel(BoringModel):
    """SGD with two param groups (weight and bias) and a per-step exponential decay."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(
            [
                {"params": [self.layer.weight], "lr": 0.1, "momentum": 0.9},
                {"params": [self.layer.bias], "lr": 0.01, "momentum": 0.5},
            ]
        )
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self):
        return DataLoader(RandomDataset(32, 8), batch_size=2)


def test_lr_monitor_logs_every_param_group_and_momentum_per_step(make_trainer, memory_logger):
    monitor = LearningRateMonitor(log_momentum=True)
    trainer = make_trainer(
        logger=memory_logger, callbacks=[monitor], log_every_n_steps=1, limit_val_batches=0
    )
    trainer.fit(TwoGroupModel())
    # 4 steps; the value logged at step k is the rate step k trains with (halved after every step)
    assert [v for _, v in memory_logger.values("lr-SGD/pg1")] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert [v for _, v in memory_logger.values("lr-SGD/pg2")] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    assert [s for s, _ in memory_logger.values("lr-SGD/pg1")] == [0, 1, 2, 3]
    assert {v for _, v in memory_logger.values("lr-SGD/pg1-momentum")} == {0.9}
    assert {v for _, v in memory_logger.values("lr-SGD/pg2-momentum")} == {0.5}
    assert monitor.lrs["lr-SGD/pg1"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_lr_monitor_epoch_interval_uses_scheduler_name_and_adam_beta(make_trainer, memory_logger):
    class Named(BoringModel):
        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=0.2, betas=(0.8, 0.99))
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "name": "my-lr"}}

    trainer = make_trainer(
        logger=memory_logger,
        callbacks=[LearningRateMonitor(log_momentum=True)],
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=0,
    )
    trainer.fit(Named())
    assert [v for _, v in memory_logger.values("my-lr")] == pytest.approx([0.2, 0.02, 0.002])
    assert {v for _, v in memory_logger.values("my-lr-momentum")} == {0.8}


def test_lr_monitor_logs_an_optimizer_without_scheduler_every_step_and_epoch(make_trainer, memory_logger):
    class Plain(BoringModel):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.2)

    trainer = make_trainer(
        logger=memory_logger,
        callbacks=[LearningRateMonitor()],
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    trainer.fit(Plain())
    assert memory_logger.values("lr-Adam") == [(0, 0.2), (0, 0.2), (1, 0.2), (2, 0.2), (2, 0.2), (3, 0.2)]


def test_lr_monitor_without_logger_is_an_error(make_trainer):
    trainer = make_trainer(callbacks=[LearningRateMonitor()], limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(MisconfigurationException, match="needs a logger"):
        trainer.fit(BoringModel())


def test_lr_monitor_rejects_unknown_interval():
    with pytest.raises(MisconfigurationException, match="logging_interval"):
        LearningRateMonitor(logging_interval="batch")


def test_gradient_accumulation_scheduler_changes_steps_per_epoch(make_trainer):
    seen = []
    record = LambdaCallback(on_train_epoch_start=lambda t, m: seen.append(t.accumulate_grad_batches))
    model = BoringModel()
    model.train_dataloader = lambda: DataLoader(RandomDataset(32, 8), batch_size=2)  # 4 batches
    trainer = make_trainer(
        callbacks=[GradientAccumulationScheduler({1: 2, 2: 4}), record], max_epochs=3, limit_val_batches=0
    )
    trainer.fit(model)
    assert seen == [1, 2, 4]
    assert trainer.global_step == 4 + 2 + 1


def test_gradient_accumulation_scheduler_validates_schedule():
    with pytest.raises(MisconfigurationException, match="factor"):
        GradientAccumulationScheduler({0: 0})
    with pytest.raises(MisconfigurationException, match="epoch key"):
        GradientAccumulationScheduler({-1: 2})
    assert GradientAccumulationScheduler({3: 2}).get_accumulate_grad_batches(2) == 1


def test_gradient_accumulation_scheduler_conflicts_with_trainer_flag(make_trainer):
    trainer = make_trainer(
        callbacks=[GradientAccumulationScheduler({0: 2})], accumulate_grad_batches=3, limit_val_batches=0
    )
    with pytest.raises(MisconfigurationException, match="remove one"):
        trainer.fit(BoringModel())


def test_swa_final_weights_are_the_mean_of_the_averaged_epochs(make_trainer):
    snapshots = []
    record = LambdaCallback(
        on_train_epoch_end=lambda t, m: snapshots.append([p.detach().clone() for p in m.parameters()])
    )
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=1)
    model = BoringModel()
    trainer = make_trainer(callbacks=[record, swa], max_epochs=4, limit_train_batches=4, limit_val_batches=0)
    trainer.fit(model)
    assert swa.swa_start == 2 and swa.n_averaged == 2
    for i, param in enumerate(model.parameters()):
        expected = (snapshots[2][i] + snapshots[3][i]) / 2
        torch.testing.assert_close(param.detach(), expected)
    # SWALR annealed the learning rate to swa_lrs after one epoch
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)


def test_swa_recomputes_batchnorm_statistics_for_the_averaged_weights(make_trainer):
    class WithBN(BoringModel):
        def __init__(self):
            super().__init__()
            self.layer = nn.Sequential(nn.Linear(32, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))

    data = torch.randn(16, 32)
    model = WithBN()
    model.train_dataloader = lambda: DataLoader(data, batch_size=4)
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1, annealing_epochs=1)
    trainer = make_trainer(callbacks=[swa], max_epochs=3, limit_val_batches=0)
    trainer.fit(model)
    # after the swap, one pass over the train data gives the running mean of the averaged weights' features
    with torch.no_grad():
        features = model.layer[0](data)
    torch.testing.assert_close(model.layer[1].running_mean, features.mean(0))


def test_swa_fraction_start_and_bad_arguments(make_trainer):
    swa = StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=0.5)
    trainer = make_trainer(callbacks=[swa], max_epochs=4, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert (swa.swa_start, swa.swa_end, swa.n_averaged) == (2, 3, 2)
    with pytest.raises(MisconfigurationException, match="swa_lrs"):
        StochasticWeightAveraging(swa_lrs=-1.0)
    with pytest.raises(MisconfigurationException, match="swa_epoch_start"):
        StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=1.5)


def test_lambda_callback_runs_only_given_hooks_in_order(make_trainer):
    calls = []
    cb = LambdaCallback(
        on_fit_start=lambda t, m: calls.append("fit_start"),
        on_train_batch_end=lambda t, m, out, batch, idx: calls.append(("batch", idx)),
        on_fit_end=lambda t, m: calls.append("fit_end"),
    )
    trainer = make_trainer(callbacks=[cb], limit_train_batches=2, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert calls == ["fit_start", ("batch", 0), ("batch", 1), "fit_end"]
    assert isinstance(cb, LambdaCallback) and cb.state_key == "LambdaCallback"


def count_epochs(trainer, pl_module):
    trainer.counted = getattr(trainer, "counted", 0) + 1


def test_lambda_callback_survives_pickling(make_trainer):
    import pickle

    copy = pickle.loads(pickle.dumps(LambdaCallback(on_train_epoch_end=count_epochs)))
    trainer = make_trainer(callbacks=[copy], max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.counted == 2


def test_lambda_callback_rejects_unknown_hook():
    with pytest.raises(TypeError, match="on_epoch_finish"):
        LambdaCallback(on_epoch_finish=print)


def test_timer_stops_training_when_budget_is_spent(make_trainer):
    timer = Timer(duration=datetime.timedelta(seconds=0), verbose=False)
    trainer = make_trainer(callbacks=[timer], max_epochs=5, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.global_step == 0  # the budget was already spent when fit started
    assert timer.time_elapsed("train") > 0
    assert timer.end_time("train") >= timer.start_time("train")
    assert timer.time_remaining() <= 0


def test_timer_checks_after_each_step(make_trainer, monkeypatch):
    class Clock:
        now = 100.0

        def monotonic(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr("fulmen.callbacks.timer.time", clock)

    class OneSecondSteps(BoringModel):
        def training_step(self, batch, batch_idx):
            clock.now += 1.0
            return super().training_step(batch, batch_idx)

    timer = Timer(duration={"seconds": 2.5})
    trainer = make_trainer(callbacks=[timer], max_epochs=5, limit_val_batches=0)
    trainer.fit(OneSecondSteps())
    assert trainer.global_step == 3  # 1 s, 2 s: go on; 3 s >= 2.5 s: stop
    assert timer.time_elapsed() == 3.0


def test_timer_measures_every_stage_and_resumes_its_count(make_trainer):
    timer = Timer(duration="00:01:00:00", interval="epoch")
    trainer = make_trainer(callbacks=[timer], limit_train_batches=2, limit_val_batches=2)
    model = BoringModel()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    assert trainer.global_step == 2
    assert timer.time_elapsed("validate") > 0 and timer.time_elapsed("test") > 0
    assert timer.time_remaining() == pytest.approx(3600 - timer.time_elapsed("train"))
    state = timer.state_dict()
    resumed = Timer()
    resumed.load_state_dict(state)
    assert resumed.time_elapsed("train") == pytest.approx(state["time_elapsed"]["train"])
    with pytest.raises(MisconfigurationException, match="unknown stage"):
        timer.time_elapsed("training")


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


class Writer(BasePredictionWriter):
    def __init__(self, write_interval, out_dir):
        super().__init__(write_interval)
        self.out_dir = out_dir
        self.batches = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self.batches.append((batch_idx, batch_indices))
        torch.save(prediction, os.path.join(self.out_dir, f"batch_{batch_idx}.pt"))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        torch.save(
            {"predictions": predictions, "indices": batch_indices}, os.path.join(self.out_dir, "all.pt")
        )


class Doubler(BoringModel):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return batch[0] * 2

    def predict_dataloader(self):
        return DataLoader(TensorDataset(torch.arange(10.0)), batch_size=4)


def test_prediction_writer_batch_and_epoch(make_trainer, tmp_path):
    writer = Writer("batch_and_epoch", tmp_path)
    trainer = make_trainer(callbacks=[writer])
    returned = trainer.predict(Doubler())
    assert writer.batches == [(0, [0, 1, 2, 3]), (1, [4, 5, 6, 7]), (2, [8, 9])]
    torch.testing.assert_close(torch.load(tmp_path / "batch_1.pt"), torch.tensor([8.0, 10.0, 12.0, 14.0]))
    everything = torch.load(tmp_path / "all.pt")
    assert everything["indices"] == [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]]
    assert len(everything["predictions"]) == 3
    torch.testing.assert_close(torch.cat(everything["predictions"]), torch.arange(10.0) * 2)
    assert len(returned) == 3


def test_prediction_writer_epoch_only_and_missing_override(make_trainer, tmp_path):
    writer = Writer("epoch", tmp_path)
    make_trainer(callbacks=[writer]).predict(Doubler())
    assert writer.batches == [] and (tmp_path / "all.pt").exists() and not (tmp_path / "batch_0.pt").exists()

    class Incomplete(BasePredictionWriter):
        pass

    with pytest.raises(NotImplementedError, match="write_on_batch_end"):
        make_trainer(callbacks=[Incomplete()]).predict(Doubler())
    with pytest.raises(MisconfigurationException, match="write_interval"):
        BasePredictionWriter("step")


def test_on_exception_checkpoint_saves_a_resumable_checkpoint(make_trainer, tmp_path):
    class Crash(BoringModel):
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    callback = OnExceptionCheckpoint(tmp_path / "ckpts")
    model = Crash()
    trainer = make_trainer(callbacks=[callback], limit_val_batches=0)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model)
    assert callback.ckpt_path == str(tmp_path / "ckpts" / "on_exception.ckpt")
    ckpt = torch.load(callback.ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 3
    torch.testing.assert_close(ckpt["state_dict"]["layer.weight"], model.layer.weight)


class SizedModel(BoringModel):
    """Reads `batch_size` in its dataloader and 'runs out of memory' above 24 samples per batch."""

    def __init__(self, batch_size=2, lr=0.1, n=200):
        super().__init__()
        self.batch_size = batch_size
        self.lr = lr
        self.n = n

    def training_step(self, batch, batch_idx):
        if batch.shape[0] > 24:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(RandomDataset(32, self.n), batch_size=self.batch_size)


def test_batch_size_finder_sets_size_before_fit(make_trainer):
    sizes = []
    record = LambdaCallback(on_train_batch_start=lambda t, m, batch, i: sizes.append(batch.shape[0]))
    finder = BatchSizeFinder(mode="binsearch", steps_per_trial=1)
    model = SizedModel()
    trainer = make_trainer(callbacks=[finder, record], limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert finder.optimal_batch_size == 24 and model.batch_size == 24
    assert sizes == [24, 24]  # the fit itself ran with the size found


def test_batch_size_finder_resizes_a_schedule_sized_from_the_step_count(make_trainer):
    class Scheduled(SizedModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.lr)
            steps = int(self.trainer.estimated_stepping_batches)
            return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)]

    model = Scheduled(n=96)
    trainer = make_trainer(callbacks=[BatchSizeFinder(steps_per_trial=1)], max_epochs=2, limit_val_batches=0)
    trainer.fit(model)
    assert model.batch_size == 16  # 32 > 24 "runs out of memory"
    assert trainer.lr_scheduler_configs[0].scheduler.T_max == 2 * 96 // 16
    assert trainer.global_step == 12


def test_learning_rate_finder_callback_trains_with_suggestion(make_trainer):
    finder = LearningRateFinder(min_lr=1e-4, max_lr=1.0, num_training_steps=30)
    model = SizedModel(batch_size=8)
    trainer = make_trainer(callbacks=[finder], limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    suggested = finder.optimal_lr.suggestion()
    assert suggested is not None and 1e-4 <= suggested <= 1.0
    assert model.lr == pytest.approx(suggested)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(suggested)
    assert trainer.global_step == 2

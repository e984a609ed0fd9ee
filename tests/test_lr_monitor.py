"""LearningRateMonitor: keys named as Lightning names them (param-group names), values in callback_metrics."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fulmen.callbacks import Callback, LearningRateMonitor
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import MisconfigurationException


class Groups(BoringModel):
    def __init__(self, groups):
        super().__init__()
        self.head = nn.Linear(32, 2)
        self.groups = groups

    def configure_optimizers(self):
        return self.groups(self)


class SeenAtEpochEnd(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}


def _fit(make_trainer, logger, groups, **monitor_kwargs):
    monitor, seen = LearningRateMonitor(**monitor_kwargs), SeenAtEpochEnd()
    trainer = make_trainer(
        limit_train_batches=2,
        limit_val_batches=0,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[monitor, seen],
    )
    trainer.fit(Groups(groups))
    return monitor, seen.metrics, trainer


def test_named_param_groups_name_the_keys_and_feed_callback_metrics(make_trainer, memory_logger):
    def two_named(m):
        return torch.optim.SGD(
            [
                {"params": m.layer.parameters(), "name": "backbone"},
                {"params": m.head.parameters(), "lr": 0.5, "name": "head"},
            ],
            lr=0.1,
            momentum=0.9,
        )

    monitor, metrics, trainer = _fit(make_trainer, memory_logger, two_named, log_momentum=True)
    assert sorted(monitor.lrs) == ["lr-SGD/backbone", "lr-SGD/head"]
    assert monitor.lrs["lr-SGD/head"] == [0.5, 0.5, 0.5]  # no scheduler: at the epoch start and each step
    assert metrics["lr-SGD/backbone"] == pytest.approx(0.1) and metrics["lr-SGD/head"] == pytest.approx(0.5)
    assert metrics["lr-SGD/head-momentum"] == pytest.approx(0.9)
    assert monitor.last_momentum_values == {"lr-SGD/backbone-momentum": 0.9, "lr-SGD/head-momentum": 0.9}
    assert isinstance(trainer.callback_metrics["lr-SGD/head"], torch.Tensor)  # as Lightning stores them
    assert "lr-SGD/backbone" in trainer.logger.calls[0][0]


def test_a_single_named_group_keeps_its_name(make_trainer, memory_logger):
    monitor, metrics, _ = _fit(
        make_trainer, memory_logger, lambda m: torch.optim.Adam([{"params": m.parameters(), "name": "all"}])
    )
    assert list(monitor.lrs) == ["lr-Adam/all"] and "lr-Adam/all" in metrics


def test_unnamed_groups_are_numbered_and_the_scheduler_name_wins(make_trainer, memory_logger):
    def with_scheduler(m):
        opt = torch.optim.SGD(
            [{"params": m.layer.parameters()}, {"params": m.head.parameters(), "name": "head"}], lr=0.1
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "name": "my"},
        }

    monitor, metrics, _ = _fit(make_trainer, memory_logger, with_scheduler)
    assert sorted(monitor.lrs) == ["my/head", "my/pg1"]
    assert {"my/head", "my/pg1"} <= set(metrics)


def test_duplicate_group_names_are_refused(make_trainer, memory_logger):
    def clash(m):
        return torch.optim.SGD(
            [{"params": m.layer.parameters(), "name": "x"}, {"params": m.head.parameters(), "name": "x"}],
            lr=0.1,
        )

    with pytest.raises(MisconfigurationException, match="identical `name` values"):
        _fit(make_trainer, memory_logger, clash)


def test_a_monitor_can_watch_the_learning_rate(make_trainer, memory_logger):
    from fulmen.callbacks import EarlyStopping

    def decaying(m):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1)}

    stop = EarlyStopping(monitor="lr-SGD", stopping_threshold=0.05, mode="min", check_on_train_epoch_end=True)
    trainer = make_trainer(
        max_epochs=10,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=memory_logger,
        callbacks=[LearningRateMonitor(), stop],
    )
    trainer.fit(Groups(decaying))
    assert trainer.current_epoch == 3  # lr 1, 0.1, 0.01 (< 0.05 at the third epoch's check)


def test_keys_follow_param_groups_added_during_training(make_trainer, memory_logger):
    from fulmen.callbacks import BackboneFinetuning

    class Backbone(Groups):
        def __init__(self):
            super().__init__(
                lambda m: torch.optim.SGD(filter(lambda p: p.requires_grad, m.parameters()), lr=0.1)
            )
            self.backbone = nn.Linear(32, 32)

        def forward(self, x):
            return self.layer(self.backbone(x))

    class Keys(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            self.seen.append(list(monitor.lrs))

    monitor, keys = LearningRateMonitor(), Keys()
    keys.seen = []
    trainer = make_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=memory_logger,
        callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1), monitor, keys],
    )
    trainer.fit(Backbone())
    # the single group's key becomes /pg1 (with its history) once the backbone's group is added
    assert keys.seen == [["lr-SGD"], ["lr-SGD/pg1", "lr-SGD/pg2"]]
    assert monitor.lrs["lr-SGD/pg1"] == [0.1, 0.1] and monitor.lrs["lr-SGD/pg2"] == [pytest.approx(0.01)]


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

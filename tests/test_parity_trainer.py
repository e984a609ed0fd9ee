"""Behaviours checked against Lightning 2.6: min_epochs, dataloader reloads, barebones, is_last_batch."""

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset


class _Counting(BoringModel):
    def __init__(self):
        super().__init__()
        self.steps = 0
        self.sanity_steps = 0
        self.train_loader_calls = 0
        self.val_loader_calls = 0

    def train_dataloader(self):
        self.train_loader_calls += 1
        return DataLoader(RandomDataset(32, 2))

    def val_dataloader(self):
        self.val_loader_calls += 1
        return DataLoader(RandomDataset(32, 2))

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:
            self.sanity_steps += 1


def test_min_epochs_runs_every_required_epoch_to_the_end(make_trainer):
    class Model(_Counting):
        def training_step(self, batch, batch_idx):
            self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

    model = Model()
    trainer = make_trainer(min_epochs=3, max_epochs=10, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.current_epoch == 3
    assert trainer.global_step == 6  # 3 whole epochs of 2 batches (fulmen: 5)


# fulmen used to reload the val loader once more than Lightning: (4, 5) and (2, 3)
@pytest.mark.parametrize(
    ("flags", "calls"),
    [
        ({}, (1, 1)),
        ({"reload_dataloaders_every_n_epochs": 1}, (4, 4)),
        ({"reload_dataloaders_every_n_epochs": 2}, (2, 2)),
    ],
    ids=["loaded-once-by-default", "every-epoch", "every-2-epochs"],
)
def test_reload_dataloaders_every_n_epochs_reloads_each_loader_once_per_n_epochs(make_trainer, flags, calls):
    model = _Counting()
    trainer = make_trainer(max_epochs=4, num_sanity_val_steps=0, **flags)
    trainer.fit(model)
    assert (model.train_loader_calls, model.val_loader_calls) == calls


def test_barebones_skips_the_sanity_check(tmp_path):
    model = _Counting()
    trainer = L.Trainer(default_root_dir=tmp_path, barebones=True, max_epochs=1)
    trainer.fit(model)
    assert model.sanity_steps == 0


def test_trainer_is_last_batch(make_trainer):
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append(self.trainer.is_last_batch)
            return super().training_step(batch, batch_idx)

    make_trainer(limit_train_batches=3, limit_val_batches=0).fit(Model())
    assert seen == [False, False, True]


def test_estimated_stepping_batches_is_an_int_that_onecyclelr_accepts(make_trainer) -> None:
    class OneCycle(BoringModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            total = self.trainer.estimated_stepping_batches
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total),
                    "interval": "step",
                },
            }

    trainer = make_trainer(max_epochs=3)
    model = OneCycle()
    trainer.fit(model, DataLoader(RandomDataset(32, 64), batch_size=8))
    assert trainer.estimated_stepping_batches == 24
    assert isinstance(trainer.estimated_stepping_batches, int)
    assert trainer.global_step == 24


def test_estimated_stepping_batches_is_capped_by_max_steps(make_trainer) -> None:
    trainer = make_trainer(max_epochs=3, max_steps=10)
    model = BoringModel()
    trainer.fit_loop.explicit_train = DataLoader(RandomDataset(32, 64), batch_size=8)
    trainer._attach(model, None, "fit")
    assert trainer.estimated_stepping_batches == 10


def test_limits_never_fetch_a_batch_past_the_limit(make_trainer) -> None:
    fetched: list[int] = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 100

        def __getitem__(self, i: int) -> torch.Tensor:
            fetched.append(i)
            return torch.randn(32)

    class Model(BoringModel):
        def train_dataloader(self):
            return DataLoader(Counting(), batch_size=1)

        def val_dataloader(self):
            return DataLoader(Counting(), batch_size=1)

    trainer = make_trainer(limit_train_batches=4, limit_val_batches=3, num_sanity_val_steps=2)
    trainer.fit(Model())
    assert len(fetched) == 2 + 4 + 3  # sanity, train, validation: not one item more


def test_should_stop_mid_epoch_validates_the_final_weights(make_trainer) -> None:
    seen: list[tuple[int, int]] = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                self.trainer.should_stop = True
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen.append((self.global_step, batch_idx))
            return super().validation_step(batch, batch_idx)

    trainer = make_trainer(max_epochs=2, limit_train_batches=10, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(Model())
    assert seen == [(3, 0), (3, 1)]  # as Lightning 2.6: one validation run after the stopping step


def test_lightning_optimizer_copies_without_recursion() -> None:
    import copy

    from fulmen.optim import LightningOptimizer

    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    clone = copy.copy(LightningOptimizer(opt, trainer=None))  # type: ignore[arg-type]
    assert clone.optimizer is opt


def test_results_table_has_one_column_per_dataloader_under_its_header(make_trainer, capsys):
    # Lightning 2.6 prints "Test metric | DataLoader 0 | DataLoader 1", each value centred under its header
    class Model(BoringModel):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("score", float(dataloader_idx + 1))

    loaders = [DataLoader(RandomDataset(32, 2)), DataLoader(RandomDataset(32, 2))]
    make_trainer().test(Model(), loaders)
    lines = capsys.readouterr().out.splitlines()
    header, row = lines[1], lines[3]
    assert header.split() == ["Test", "metric", "DataLoader", "0", "DataLoader", "1"]
    assert row.split() == ["score", "1.0", "2.0"]
    for value, title in (("1.0", "DataLoader 0"), ("2.0", "DataLoader 1")):
        centre = header.index(title) + len(title) / 2
        assert abs(row.index(value) + len(value) / 2 - centre) <= 1


def test_predict_puts_the_model_back_in_train_mode(make_trainer):
    model = BoringModel()
    make_trainer().predict(model, DataLoader(RandomDataset(32, 2)))
    assert model.training  # Lightning 2.6 restores the mode it found


class _FrozenBackbone(BoringModel):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.BatchNorm1d(32)
        self.backbone.eval()  # frozen: its running statistics must not move
        self.modes = []

    def forward(self, x):
        return self.layer(self.backbone(x))

    def training_step(self, batch, batch_idx):
        self.modes.append((self.training, self.backbone.training))
        return super().training_step(batch, batch_idx)


def test_validation_restores_each_submodules_own_mode(make_trainer):
    model = _FrozenBackbone()
    make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1).fit(model)
    assert model.modes == [(True, False)] * 4  # Lightning 2.6: the backbone stays in eval mode throughout
    assert model.training and not model.backbone.training


def test_an_overridden_model_train_hook_decides_instead(make_trainer):
    class Model(_FrozenBackbone):
        def on_validation_model_train(self):
            self.train()

    model = Model()
    make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0).fit(model)
    assert model.modes == [(True, False), (True, False)]
    assert model.backbone.training  # the user's hook ran after the epoch's validation

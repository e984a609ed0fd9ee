"""LightningDataModule: fit/validate/test/predict with datamodule=, hooks and setup stages."""

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset


class RecordingDataModule(L.LightningDataModule):
    def __init__(self, calls, batch_size=2):
        super().__init__()
        self.calls = calls
        self.batch_size = batch_size

    def prepare_data(self):
        self.calls.append("dm.prepare_data")

    def setup(self, stage):
        self.calls.append(f"dm.setup({getattr(stage, 'value', stage)})")
        self.data = RandomDataset(32, 8)

    def teardown(self, stage):
        self.calls.append(f"dm.teardown({getattr(stage, 'value', stage)})")

    def _loader(self, name):
        self.calls.append(f"dm.{name}")
        return DataLoader(self.data, batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader("train_dataloader")

    def val_dataloader(self):
        return self._loader("val_dataloader")

    def test_dataloader(self):
        return self._loader("test_dataloader")

    def predict_dataloader(self):
        return self._loader("predict_dataloader")


class RecordingModel(BoringModel):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls
        self.batch_sizes = []

    def setup(self, stage):
        self.calls.append(f"m.setup({getattr(stage, 'value', stage)})")

    def teardown(self, stage):
        self.calls.append(f"m.teardown({getattr(stage, 'value', stage)})")

    def training_step(self, batch, batch_idx):
        self.batch_sizes.append(len(batch))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.batch_sizes.append(len(batch))

    def test_step(self, batch, batch_idx):
        self.batch_sizes.append(len(batch))


class RecordingCallback(L.Callback):
    def __init__(self, calls):
        self.calls = calls

    def setup(self, trainer, pl_module, stage):
        self.calls.append(f"cb.setup({getattr(stage, 'value', stage)})")

    def teardown(self, trainer, pl_module, stage):
        self.calls.append(f"cb.teardown({getattr(stage, 'value', stage)})")


def _run(make_trainer, fn, **kwargs):
    calls = []
    model, dm = RecordingModel(calls), RecordingDataModule(calls)
    trainer = make_trainer(callbacks=[RecordingCallback(calls)], **kwargs)
    result = getattr(trainer, fn)(model, datamodule=dm)
    return calls, model, dm, trainer, result


def _without_callback(calls):
    return [c for c in calls if not c.startswith("cb.")]


def test_fit_with_datamodule_uses_its_loaders_and_hook_order(make_trainer):
    calls, model, dm, trainer, _ = _run(make_trainer, "fit", num_sanity_val_steps=0)
    # the datamodule's place relative to the callbacks is checked in its own test
    assert _without_callback(calls) in (
        [
            "dm.prepare_data",
            "dm.setup(fit)",
            "m.setup(fit)",
            first,
            second,
            "dm.teardown(fit)",
            "m.teardown(fit)",
        ]
        for first, second in [
            ("dm.train_dataloader", "dm.val_dataloader"),
            ("dm.val_dataloader", "dm.train_dataloader"),
        ]
    )
    assert calls.index("cb.setup(fit)") < calls.index("m.setup(fit)")
    assert calls.index("cb.teardown(fit)") < calls.index("m.teardown(fit)")
    # BoringModel's own loaders have batch size 1: the datamodule's (batch size 2) won
    assert model.batch_sizes == [2] * 8
    assert trainer.datamodule is dm
    assert dm.trainer is trainer
    assert trainer.global_step == 4


@pytest.mark.parametrize(
    ("fn", "stage", "loader"),
    [("validate", "validate", "val"), ("test", "test", "test"), ("predict", "predict", "predict")],
)
def test_evaluation_with_datamodule_uses_stage(make_trainer, fn, stage, loader):
    calls, model, dm, trainer, result = _run(make_trainer, fn)
    assert _without_callback(calls) == [
        "dm.prepare_data",
        f"dm.setup({stage})",
        f"m.setup({stage})",
        f"dm.{loader}_dataloader",
        f"dm.teardown({stage})",
        f"m.teardown({stage})",
    ]
    assert calls.index(f"cb.setup({stage})") < calls.index(f"m.setup({stage})")
    assert calls.index(f"cb.teardown({stage})") < calls.index(f"m.teardown({stage})")
    if fn == "predict":
        assert len(result) == 4 and result[0].shape == (2, 2)
    else:
        assert model.batch_sizes == [2] * 4
        assert isinstance(result, list) and len(result) == 1


def test_datamodule_save_hyperparameters():
    class DM(L.LightningDataModule):
        def __init__(self, batch_size=8, data_dir="here"):
            super().__init__()
            self.save_hyperparameters()

    dm = DM(batch_size=4)
    assert dict(dm.hparams) == {"batch_size": 4, "data_dir": "here"}
    assert dm.hparams.batch_size == 4


def test_dataloaders_and_datamodule_together_is_an_error(make_trainer):
    calls = []
    trainer = make_trainer()
    loader = DataLoader(RandomDataset(32, 4))
    with pytest.raises(Exception, match="datamodule"):
        trainer.fit(RecordingModel(calls), train_dataloaders=loader, datamodule=RecordingDataModule(calls))


def test_fit_with_explicit_dataloaders(make_trainer):
    calls = []
    model = RecordingModel(calls)
    trainer = make_trainer(num_sanity_val_steps=0)
    train = DataLoader(RandomDataset(32, 6), batch_size=3)
    val = DataLoader(RandomDataset(32, 4), batch_size=4)
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    assert model.batch_sizes == [3, 3, 4]
    assert trainer.global_step == 2


def test_datamodule_with_plain_tensors_dataset(make_trainer):
    class DM(L.LightningDataModule):
        def train_dataloader(self):
            x = torch.randn(6, 32)
            return DataLoader(torch.utils.data.TensorDataset(x), batch_size=2)

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.step(x)

    trainer = make_trainer(limit_val_batches=0)
    trainer.fit(Model(), datamodule=DM())
    assert trainer.global_step == 3


def test_from_datasets_builds_the_given_dataloaders(make_trainer):
    from torch.utils.data import RandomSampler, SequentialSampler

    from fulmen.demos import RandomDataset

    dm = L.LightningDataModule.from_datasets(
        RandomDataset(32, 8), val_dataset=[RandomDataset(32, 4), RandomDataset(32, 6)], batch_size=2
    )
    train = dm.train_dataloader()
    assert isinstance(train.sampler, RandomSampler) and train.batch_size == 2
    assert [(type(d.sampler), len(d)) for d in dm.val_dataloader()] == [
        (SequentialSampler, 2),
        (SequentialSampler, 3),
    ]
    assert "test_dataloader" not in vars(dm)  # only the given datasets get a hook

    class TwoValLoaders(BoringModel):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            return super().validation_step(batch, batch_idx)

    trainer = make_trainer()
    trainer.fit(TwoValLoaders(), datamodule=dm)
    assert trainer.num_training_batches == 4 and trainer.num_val_batches == [2, 3]


def test_from_datasets_with_a_dict_gives_several_train_loaders():
    from fulmen.demos import RandomDataset, RandomIterableDataset

    dm = L.LightningDataModule.from_datasets(
        {"a": RandomDataset(32, 8), "b": RandomIterableDataset(32, 4)}, batch_size=4
    )
    loaders = dm.train_dataloader()
    assert sorted(loaders) == ["a", "b"] and [loaders[k].batch_size for k in "ab"] == [4, 4]


def test_from_datasets_passes_arguments_to_the_subclass():
    from fulmen.demos import RandomDataset

    class Configured(L.LightningDataModule):
        def __init__(self, batch_size, scale=1.0):
            super().__init__()
            self.batch_size, self.scale = batch_size, scale

    dm = Configured.from_datasets(RandomDataset(32, 8), batch_size=4, scale=2.0)
    assert (dm.batch_size, dm.scale) == (4, 2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bad'"):
        Configured.from_datasets(RandomDataset(32, 8), bad=1)


def test_datamodule_init_accepts_arguments():
    dm = L.LightningDataModule(1, name="x")
    assert dm.trainer is None


def test_datamodule_setup_and_teardown_run_before_the_callbacks(make_trainer):
    """Parity with Lightning 2.6: the datamodule's setup and teardown run before the callbacks'."""
    # Lightning 2.6 (trainer/call.py order, observed): datamodule, then callbacks, then module.
    # (LIGHTNING_FACTS.md says callbacks first; Lightning itself does not.)
    calls = []

    class DM(L.LightningDataModule):
        def setup(self, stage):
            calls.append("dm.setup")

        def teardown(self, stage):
            calls.append("dm.teardown")

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(2, 32))

    class Recorder(L.Callback):
        def setup(self, trainer, pl_module, stage):
            calls.append("cb.setup")

        def teardown(self, trainer, pl_module, stage):
            calls.append("cb.teardown")

    class Model(BoringModel):
        def setup(self, stage):
            calls.append("m.setup")

        def teardown(self, stage):
            calls.append("m.teardown")

    trainer = make_trainer(limit_val_batches=0, callbacks=[Recorder()])
    trainer.fit(Model(), datamodule=DM())
    assert calls == ["dm.setup", "cb.setup", "m.setup", "dm.teardown", "cb.teardown", "m.teardown"]


def test_datamodule_checkpoint_hooks_wrapped_but_not_overridden_are_not_called(tmp_path, make_trainer):
    """fulmen's datamodule on_save/on_load_checkpoint (Lightning 2 has none) run only when overridden."""
    import functools

    from fulmen.demos import BoringDataModule

    calls = []
    dm = BoringDataModule()
    for name in ("on_save_checkpoint", "on_load_checkpoint", "state_dict"):
        default = getattr(dm, name)
        record = functools.partial(lambda n, fn, *a: calls.append(n) or fn(*a), name, default)
        setattr(dm, name, functools.update_wrapper(record, default))
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(BoringModel(), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    assert calls == ["state_dict"]

"""data.py: where dataloaders come from, and what a wrong source is told."""

import pytest

from fulmen.demos import BoringModel, RandomDataset


@pytest.mark.parametrize("where", ["argument", "hook"])
def test_a_dataset_passed_as_a_dataloader_is_named(make_trainer, where):
    class DatasetFromHook(BoringModel):
        def train_dataloader(self):
            return RandomDataset(32, 4)

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    expected = "trainer.fit" if where == "argument" else r"DatasetFromHook.train_dataloader\(\)"
    with pytest.warns(
        UserWarning, match=expected + r".* gave a RandomDataset, a Dataset, where a DataLoader"
    ):
        if where == "argument":
            trainer.fit(BoringModel(), RandomDataset(32, 4))
        else:
            trainer.fit(DatasetFromHook())

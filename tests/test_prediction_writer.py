"""callbacks/prediction_writer.py: BasePredictionWriter, per batch and per epoch."""

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fulmen.callbacks import BasePredictionWriter
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


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

"""callbacks/swa.py: StochasticWeightAveraging, the averaged weights and batch-norm statistics."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fulmen.callbacks import LambdaCallback, StochasticWeightAveraging
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


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

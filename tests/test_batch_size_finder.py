"""callbacks/batch_size_finder.py: BatchSizeFinder, the batch size found before fit."""

import torch
from torch.utils.data import DataLoader

from fulmen.callbacks import BatchSizeFinder, LambdaCallback
from fulmen.demos import BoringModel, RandomDataset


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

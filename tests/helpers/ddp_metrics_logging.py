"""A 2-process DDP run with torchmetrics, a CSV and a TensorBoard logger and the TQDM bar.

`python ddp_metrics_logging.py OUT_DIR`: each rank writes OUT_DIR/rank<R>.pt with the metrics it saw
and the log folders its loggers report; logs go under OUT_DIR/logs.
"""

import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.aggregation import SumMetric

import fulmen as L
from fulmen.loggers import CSVLogger, TensorBoardLogger

N_TRAIN, N_VAL = 32, 12


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.train_seen = SumMetric()
        self.val_seen = SumMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.train_seen.update(torch.tensor(float(len(x))))
        self.log("train_seen", self.train_seen, on_step=False, on_epoch=True, prog_bar=True)
        return nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.val_seen.update(torch.tensor(float(len(x))))
        self.log("val_seen", self.val_seen)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(N_TRAIN, 4), torch.randn(N_TRAIN, 1)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(N_VAL, 4), torch.randn(N_VAL, 1)), batch_size=3)


if __name__ == "__main__":
    out_dir = sys.argv[1]
    logs = os.path.join(out_dir, "logs")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=[CSVLogger(logs, name="csv"), TensorBoardLogger(logs, name="tb")],
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Model())
    torch.save(
        {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "log_dirs": [lg.log_dir for lg in trainer.loggers],
        },
        os.path.join(out_dir, f"rank{trainer.global_rank}.pt"),
    )

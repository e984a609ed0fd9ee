"""A DDP run started as a script: `python ddp_fit.py OUT_DIR [trainer options as key=value ...]`.

Each process writes `OUT_DIR/rank<R>.pt` with what the tests check: its final weights, the indices of
the samples it trained on, global_step, world size and the metrics it saw.
"""

import os
import signal
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import fulmen as L


class IndexedData(Dataset):
    """Sample i is (x_i, y_i, i): the index lets the test see which process read which sample."""

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


class Model(L.LightningModule):
    def __init__(self, fail_rank=-1, kill_rank=-1, stall_rank=-1):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(8, 1)
        self.fail_rank = fail_rank
        self.kill_rank = kill_rank
        self.stall_rank = stall_rank
        self.seen = []

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        if self.global_rank == self.fail_rank and batch_idx == 1:
            raise ZeroDivisionError(f"boom on rank {self.global_rank}")
        if self.global_rank == self.kill_rank and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.global_rank == self.stall_rank and batch_idx == 1:
            time.sleep(120)  # stuck outside any collective, as a rank waiting on NCCL would be
        self.seen.extend(idx.tolist())
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, idx = batch
        self.log("val_count", float(len(idx)), reduce_fx="sum", sync_dist=True)
        self.log("val_rank", float(self.global_rank), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(IndexedData(), batch_size=8, shuffle=False)

    def val_dataloader(self):
        return DataLoader(IndexedData(10), batch_size=4)


def parse(argv):
    out = {}
    for item in argv:
        key, value = item.split("=", 1)
        try:
            out[key] = int(value)
        except ValueError:
            out[key] = value
    return out


if __name__ == "__main__":
    out_dir = sys.argv[1]
    options = parse(sys.argv[2:])
    fail_rank = options.pop("fail_rank", -1)
    kill_rank = options.pop("kill_rank", -1)
    stall_rank = options.pop("stall_rank", -1)
    if stall_rank >= 0:  # the test need not wait the full grace the main process gets to notice by itself
        import fulmen.strategies.launchers as launchers

        launchers._GRACE_S = 2.0
    raise_after_fit_rank = options.pop("raise_after_fit_rank", -1)
    exit_after_fit = options.pop(
        "exit_after_fit", None
    )  # "sys" (sys.exit(3)) or "raise" (raise SystemExit(3))
    exit_at_end_rank = options.pop(
        "exit_at_end_rank", -1
    )  # this rank ends the script with raise SystemExit(3)
    timeout_s = options.pop("timeout_s", None)
    if timeout_s is not None:  # a short collective timeout, so a stalled rank ends the job in seconds
        from datetime import timedelta

        from fulmen.strategies import DDPStrategy

        options["strategy"] = DDPStrategy(timeout=timedelta(seconds=timeout_s))
    save = options.pop("save", None)
    ckpt = options.pop("ckpt", None)
    sharding = options.pop("fsdp_sharding", None)
    sharded_ckpt = options.pop("fsdp_sharded_checkpoint", 0)
    if sharding is not None or sharded_ckpt:  # FSDP with options
        from fulmen.strategies import FSDPStrategy

        options["strategy"] = FSDPStrategy(
            sharding_strategy=sharding or "FULL_SHARD",
            cpu_offload=bool(options.pop("cpu_offload", 0)),
            state_dict_type="sharded" if sharded_ckpt else "full",
        )
    if options.pop("logs", 0):  # rank 0 alone should write these
        from fulmen.loggers import CSVLogger

        options.update(logger=CSVLogger(out_dir), enable_checkpointing=True, default_root_dir=out_dir)
    trainer = L.Trainer(
        max_epochs=options.pop("max_epochs", 1),
        **{"logger": False, "enable_checkpointing": False, **options},
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    model = Model(fail_rank, kill_rank, stall_rank)
    trainer.fit(model, ckpt_path=ckpt)
    if save:
        trainer.save_checkpoint(save)
    if exit_after_fit == "sys":
        sys.exit(3)
    if exit_after_fit == "raise":
        raise SystemExit(3)
    if trainer.global_rank == raise_after_fit_rank:
        raise ValueError(f"after fit, on rank {trainer.global_rank} only")
    gathered = trainer.strategy.all_gather(torch.tensor([trainer.global_rank]))
    # full weights (FSDP gathers them on rank 0; other ranks get {})
    if sharded_ckpt:
        trainer.strategy.state_dict_type = "full"
    weights = {k: v.clone() for k, v in trainer.strategy.lightning_module_state_dict().items()}
    torch.save(
        {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "weights": weights,
            "seen": model.seen,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "gathered": gathered.tolist(),
            "broadcast": trainer.strategy.broadcast(f"from rank {trainer.global_rank}"),
            "env_rank": os.environ.get("RANK"),
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "best": getattr(trainer.checkpoint_callback, "best_model_path", None),
        },
        os.path.join(out_dir, f"rank{trainer.global_rank}.pt"),
    )
    if trainer.global_rank == exit_at_end_rank:
        raise SystemExit(3)

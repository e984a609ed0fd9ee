"""ddp_spawn (or ddp_fork) from a script: `python ddp_spawn_fit.py OUT_FILE START_METHOD [fail_rank]`.

The calling process trains nothing itself; it saves what came back from the spawned processes.
"""

import sys

import torch
from ddp_fit import Model  # noqa: E402  (the helper folder is on sys.path when run as a script)

import fulmen as L

if __name__ == "__main__":
    out_file, strategy = sys.argv[1], sys.argv[2]
    fail_rank = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    big = len(sys.argv) > 4 and sys.argv[4] == "big"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    model = Model(fail_rank)
    if big:  # 256 KiB of weights: more than a pipe holds, so the parent must read while rank 0 writes
        model.wide = torch.nn.Linear(256, 256)
        model.wide.requires_grad_(False)
    trainer.fit(model)
    # validate spawns again: checked once, for ddp_spawn (the weights it uses came back from fit)
    validated = trainer.validate(model, verbose=False) if strategy == "ddp_spawn" else None
    torch.save(
        {
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "global_step": trainer.global_step,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "validate": validated,
            "state": (trainer.state.status.value, trainer.state.fn.value, trainer.state.stage),
        },
        out_file,
    )

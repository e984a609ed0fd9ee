"""Checkpoints, in three parts; the names users reach as `fulmen.checkpoint.<name>` are gathered here.

- `files.py`: what a checkpoint file may hold, atomic and durable writes, safe loading, URLs.
- `state.py`: the checkpoint dict: `dump` gathers all state a resume needs, `restore_*` is its mirror.
- `paths.py`: which checkpoint a run starts from (`ckpt_path`, "last", "best", an autoresume backup).

Where the train loader resumes mid-epoch lives in `fulmen/epoch_replay.py`, beside the loop that uses it;
SIGTERM handling during fit lives in `fulmen/preemption.py`.
"""

from fulmen.checkpoint.files import (
    SHARDS_SUFFIX,
    CheckpointError,
    UnsafeCheckpointError,
    atomic_save,
    check_plain,
    exists,
    finish_writes,
    load,
    remove,
)
from fulmen.checkpoint.paths import check_ckpt_path, load_for_run, resolve_ckpt_path
from fulmen.checkpoint.state import (
    FORMAT_VERSION,
    dump,
    load_datamodule_from_checkpoint,
    load_module_from_checkpoint,
    restore_callbacks,
    restore_datamodule,
    restore_module,
    restore_training_state,
    save,
)
from fulmen.utilities import SIGTERMException

__all__ = [
    "FORMAT_VERSION",
    "SHARDS_SUFFIX",
    "CheckpointError",
    "SIGTERMException",
    "UnsafeCheckpointError",
    "atomic_save",
    "check_ckpt_path",
    "check_plain",
    "dump",
    "exists",
    "finish_writes",
    "load",
    "load_datamodule_from_checkpoint",
    "load_for_run",
    "load_module_from_checkpoint",
    "remove",
    "resolve_ckpt_path",
    "restore_callbacks",
    "restore_datamodule",
    "restore_module",
    "restore_training_state",
    "save",
]

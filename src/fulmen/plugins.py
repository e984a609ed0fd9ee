"""What `Trainer(plugins=[...])` takes: precision, checkpoint I/O, cluster environments, layer sync.

Each kind lives in its own module (fulmen.precision, fulmen.checkpoint_io, fulmen.environments,
fulmen.layer_sync); this module names them all, as `lightning.pytorch.plugins` does, and imports each
only when it is asked for.
"""

from __future__ import annotations

from fulmen.utilities.lazy import lazy_names

# name -> the module that defines it
_WHERE: dict[str, str] = {
    "Precision": "fulmen.precision",
    "MixedPrecision": "fulmen.precision",
    "HalfPrecision": "fulmen.precision",
    "DoublePrecision": "fulmen.precision",
    "FSDPPrecision": "fulmen.precision",
    "CheckpointIO": "fulmen.checkpoint_io",
    "TorchCheckpointIO": "fulmen.checkpoint_io",
    "AsyncCheckpointIO": "fulmen.checkpoint_io",
    "XLACheckpointIO": "fulmen.checkpoint_io",
    "LayerSync": "fulmen.layer_sync",
    "TorchSyncBatchNorm": "fulmen.layer_sync",
    "BitsandbytesPrecision": "fulmen.out_of_scope",
    "DeepSpeedPrecision": "fulmen.out_of_scope",
    "TransformerEnginePrecision": "fulmen.out_of_scope",
    "XLAPrecision": "fulmen.out_of_scope",
}

__all__ = list(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())

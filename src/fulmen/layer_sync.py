"""Layer synchronisation plugins: swap layers for versions that synchronise across processes.

`TorchSyncBatchNorm` turns every BatchNorm into `torch.nn.SyncBatchNorm`, so the batch statistics are
computed over the global batch of a DDP run. `Trainer(plugins=[TorchSyncBatchNorm()])` is the same
as `Trainer(sync_batchnorm=True)`; subclass `LayerSync` (`apply` and `revert`) for other layers.
"""

from __future__ import annotations

from torch import nn


class LayerSync:
    """Converts a model's layers to synchronised versions (`apply`) and back (`revert`)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Return `model` with its layers replaced by synchronised ones."""
        raise NotImplementedError(f"{type(self).__name__} must implement `apply(model)`.")

    def revert(self, model: nn.Module) -> nn.Module:
        """Return `model` with the synchronised layers replaced by the ordinary ones."""
        raise NotImplementedError(f"{type(self).__name__} must implement `revert(model)`.")


class TorchSyncBatchNorm(LayerSync):
    """Every `_BatchNorm` layer becomes a `torch.nn.SyncBatchNorm` (and back)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Convert the BatchNorm layers with `nn.SyncBatchNorm.convert_sync_batchnorm`."""
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        """Turn SyncBatchNorm layers back into BatchNorm1d/2d/3d-agnostic `_BatchNorm` layers, in place."""
        converted = model
        if isinstance(model, nn.SyncBatchNorm):
            converted = _BatchNormXd(
                model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
            )
            if model.affine:
                converted.weight = model.weight
                converted.bias = model.bias
            converted.running_mean = model.running_mean
            converted.running_var = model.running_var
            converted.num_batches_tracked = model.num_batches_tracked
            converted.train(model.training)
        for name, child in model.named_children():
            converted.add_module(name, self.revert(child))
        return converted


class _BatchNormXd(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm that accepts any input rank, as SyncBatchNorm does (what `revert` turns it back into)."""

    def _check_input_dim(self, input: object) -> None:
        return

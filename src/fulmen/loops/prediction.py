"""predict: `predict_step` over each dataloader, the outputs collected and returned."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fulmen import data
from fulmen.combined_loader import CombinedLoader
from fulmen.loops.evaluation import module_modes, restore_modes
from fulmen.plan import RunPlan

if TYPE_CHECKING:
    from fulmen.trainer import Trainer


class PredictionLoop:
    """predict: `predict_step` over each dataloader, the outputs collected and returned."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.explicit: Any = None
        self.dataloaders: list[Any] = []  # of the current run, for callbacks (e.g. prediction writers)
        self.combined: CombinedLoader | None = None  # the same loaders, in the structure the user gave
        self.predictions: list[list[Any]] = []  # per dataloader, filled as the run goes

    def run(self, plan: RunPlan, return_predictions: bool) -> Any:
        """Run prediction; a list of outputs (a list of lists for several dataloaders)."""
        t = self.trainer
        hooks = plan.hooks
        transfer = None if plan.fast_transfer else plan.transfer
        module = t.lightning_module
        raw = data.request_dataloaders(t, "predict", self.explicit)
        if isinstance(raw, CombinedLoader) and raw.mode != "sequential":
            raise ValueError('trainer.predict() only supports CombinedLoader(mode="sequential").')
        self.combined, loaders = data.evaluation_loaders(raw, t.strategy.process_dataloader)
        multiple = len(loaders) > 1
        all_outputs: list[list[Any]] = []
        self.dataloaders, self.predictions = loaders, all_outputs
        grad_ctx = torch.inference_mode if t.inference_mode else torch.no_grad
        with grad_ctx():
            modes = module_modes(module)
            hooks.module("on_predict_model_eval")
            hooks.both("on_predict_start")
            hooks.both("on_predict_epoch_start")
            for dl_idx, loader in enumerate(loaders):
                limit = data.limit_batches(loader, t.limit_predict_batches, "limit_predict_batches")
                extra = (dl_idx,) if multiple else ()
                outputs: list[Any] = []
                if plan.profiler is not None:
                    loader = plan.profiler.profile_iterable(loader, "predict_dataloader_next")
                for batch_idx, batch in data.first_batches(enumerate(loader), limit, loader):
                    if transfer is not None:
                        batch = transfer(batch, dl_idx)
                    hooks.both("on_predict_batch_start", batch, batch_idx, *extra)
                    module._current_fx_name = "predict_step"
                    output = plan.predict_step(batch, batch_idx, *extra)
                    if return_predictions:
                        outputs.append(output)
                    hooks.callbacks("on_predict_batch_end", output, batch, batch_idx, *extra)
                    hooks.module("on_predict_batch_end", output, batch, batch_idx, *extra)
                all_outputs.append(outputs)
            hooks.both("on_predict_epoch_end")
            hooks.both("on_predict_end")
            restore_modes(modes)
        if not return_predictions:
            return None
        return all_outputs[0] if len(all_outputs) == 1 else all_outputs

"""validate and test (and fit's sanity check and validation): one pass over each dataloader."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fulmen import data
from fulmen.combined_loader import CombinedLoader
from fulmen.module import LightningModule
from fulmen.plan import RunPlan
from fulmen.utilities import overriding

if TYPE_CHECKING:
    from fulmen.progress import Progress
    from fulmen.results import RunResults
    from fulmen.trainer import Trainer


def module_modes(module: torch.nn.Module) -> dict[torch.nn.Module, bool]:
    """Each submodule's own train/eval mode, so that evaluation can put back exactly what it found."""
    return {m: m.training for m in module.modules()}


def restore_modes(modes: dict[torch.nn.Module, bool]) -> None:
    """Put every submodule back in the train/eval mode `module_modes` recorded."""
    for m, training in modes.items():
        m.training = training


def back_to_train(module: LightningModule, modes: dict[torch.nn.Module, bool], hooks: Any, hook: str) -> None:
    """After evaluation: the user's `on_*_model_train` if they override it, else every submodule's own mode back."""
    if overriding(hook, module, LightningModule) is not None:
        hooks.module(hook)
    else:
        restore_modes(modes)


class EvaluationLoop:
    """validate / test (and the sanity check): one pass over each dataloader with the step and hooks."""

    def __init__(self, trainer: Trainer, stage: str, progress: Progress, results: RunResults) -> None:
        self.trainer = trainer
        self.stage = stage  # "validate" or "test"
        self.progress = progress
        self.results = results
        self.plan = RunPlan()  # passed in by each run
        self.dataloaders: list[Any] = []  # what the loop runs one after another
        self.combined: CombinedLoader | None = None  # the same loaders, in the structure the user gave
        self.explicit: Any = None
        self._loaded = False

    def setup_data(self, reload: bool = False) -> None:
        """Ask for the dataloaders once (again when `reload`)."""
        if self._loaded and not reload:
            return
        t = self.trainer
        if (t.limit_val_batches if self.stage == "validate" else t.limit_test_batches) == 0:
            # as Lightning: a stage limited to 0 batches does not ask for its dataloaders
            self.combined, self.dataloaders, self._loaded = None, [], True
            return
        raw = data.request_dataloaders(self.trainer, self.stage, self.explicit)
        strategy = self.trainer.strategy

        def process(dl: Any, shuffle: bool) -> Any:
            return data.shield_workers_from_sigterm(strategy.process_dataloader(dl, shuffle=shuffle))

        self.combined, self.dataloaders = data.evaluation_loaders(raw, process)
        self._loaded = True

    def num_batches(self, sanity: bool = False, each_loader: bool = False) -> list[float]:
        """Batches to run per dataloader under the limit flags (`each_loader`: per loader of a CombinedLoader)."""
        t = self.trainer
        limit = t.limit_val_batches if self.stage == "validate" else t.limit_test_batches
        flag = "limit_val_batches" if self.stage == "validate" else "limit_test_batches"
        loaders = self.combined.flattened if each_loader and self.combined is not None else self.dataloaders
        counts = [data.limit_batches(dl, limit, flag) for dl in loaders]
        if sanity:
            steps = t.num_sanity_val_steps
            counts = [c if steps == -1 else min(c, float(steps)) for c in counts]
        return counts

    def run(self, plan: RunPlan, sanity: bool = False) -> list[dict[str, Any]]:
        """Evaluate every dataloader and return one dict of epoch metrics per dataloader."""
        t = self.trainer
        self.plan = plan
        stage = self.stage
        step_fn = plan.validation_step if stage == "validate" else plan.test_step
        prefix = "on_validation" if stage == "validate" else "on_test"
        step_name = "validation_step" if stage == "validate" else "test_step"
        results = self.results.for_stage(stage)
        results.reset_epoch()
        counts = self.num_batches(sanity)
        if sum(counts) == 0:  # as Lightning: nothing to run, no hooks and no results
            return []
        multiple = len(self.dataloaders) > 1
        grad_ctx = torch.inference_mode if t.inference_mode else torch.no_grad
        previous_results, self.results.current = self.results.current, results
        try:
            return self._run(sanity, results, counts, multiple, grad_ctx, step_fn, prefix, step_name)
        finally:
            self.results.current = previous_results

    def _run(
        self,
        sanity: bool,
        results: Any,
        counts: list[float],
        multiple: bool,
        grad_ctx: Any,
        step_fn: Any,
        prefix: str,
        step_name: str,
    ) -> list[dict[str, Any]]:
        t = self.trainer
        module = t.lightning_module
        plan = self.plan
        hooks = plan.hooks
        stage = self.stage
        transfer = None if plan.fast_transfer else plan.transfer
        progress_bar = plan.progress_bar
        with grad_ctx():
            modes = module_modes(module)
            hooks.module(f"{prefix}_model_eval")
            hooks.both(f"{prefix}_start")
            hooks.both(f"{prefix}_epoch_start")
            for dl_idx, loader in enumerate(self.dataloaders):
                limit = counts[dl_idx]
                if limit <= 0:
                    continue
                extra = (dl_idx,) if multiple else ()
                loader = data.batches_of(loader)
                if plan.profiler is not None:  # once per dataloader: time each `next()` only when profiling
                    loader = plan.profiler.profile_iterable(loader, f"{stage}_dataloader_next")
                for batch_idx, batch in data.first_batches(enumerate(loader), limit, loader):
                    if transfer is not None:
                        batch = transfer(batch, dl_idx)
                    results.new_batch(batch, dl_idx if multiple else None)
                    hooks.both(f"{prefix}_batch_start", batch, batch_idx, *extra)
                    module._current_fx_name = step_name
                    output = step_fn(batch, batch_idx, *extra)
                    hooks.callbacks(f"{prefix}_batch_end", output, batch, batch_idx, *extra)
                    hooks.module(f"{prefix}_batch_end", output, batch, batch_idx, *extra)
                    if not sanity:
                        self.results.log_eval_step(results, dl_idx)
                    if progress_bar is not None:
                        progress_bar._on_eval_batch(t, stage, sanity)
            results.new_batch(None, None)
            reduce = self.results.reduce
            results.compute_epoch(reduce)
            hooks.both(f"{prefix}_epoch_end")
            results.compute_epoch(reduce)
            results.finish_epoch()
            if not sanity:
                self.results.log_epoch(results, self.progress.epoch_log_step(), self.progress.epoch)
            hooks.both(f"{prefix}_end")
            back_to_train(module, modes, hooks, f"{prefix}_model_train")
        return self._metrics_per_dataloader(results, len(self.dataloaders))

    @staticmethod
    def _metrics_per_dataloader(results: Any, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in range(max(n, 1))]
        for i, d in enumerate(out):
            for key, value in results.epoch_metrics_for(dataloader_idx=i).items():
                d[key] = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        return out

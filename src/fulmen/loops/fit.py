"""fit: epochs of training batches, with validation at the configured interval.

Read `FitLoop.run` top to bottom: it is the pseudocode of docs/architecture.md, with each hook
called by name where it happens. Callback hooks run before the module's hook of the same name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from fulmen import data, epoch_replay
from fulmen.environments import SlurmRequeue
from fulmen.loops.evaluation import EvaluationLoop
from fulmen.module import LightningModule
from fulmen.plan import RunPlan
from fulmen.preemption import Preemption
from fulmen.seed import isolate_rng
from fulmen.utilities import MisconfigurationException, PossibleUserWarning, overriding, rank_zero_warn

if TYPE_CHECKING:
    from fulmen.progress import Progress
    from fulmen.results import RunResults
    from fulmen.trainer import Trainer

_STOP_EPOCH = object()


def _loss_from(output: Any, automatic: bool) -> torch.Tensor | None:
    """Validate what training_step returned and pull out the loss (None means: skip this batch)."""
    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        loss = output
    elif isinstance(output, Mapping):
        if "loss" not in output:
            if not automatic:
                return None
            raise MisconfigurationException(
                f"training_step returned a dict without a 'loss' key (keys: {sorted(output)}); "
                "return {'loss': loss, ...} or the loss tensor itself."
            )
        loss = output["loss"]
    elif automatic:
        raise MisconfigurationException(
            f"training_step returned {type(output).__name__}; it must return the loss tensor, a dict with "
            "a 'loss' key, or None to skip the batch."
        )
    else:
        return None
    if automatic:
        if not isinstance(loss, torch.Tensor):
            raise MisconfigurationException(
                f"training_step's loss is {type(loss).__name__}, not a tensor; return the tensor that "
                "backward should run on."
            )
        if loss.numel() != 1:
            raise MisconfigurationException(
                f"training_step returned a loss with shape {tuple(loss.shape)}; reduce it to a scalar "
                "(e.g. `.mean()`) before returning."
            )
        if not loss.requires_grad:
            raise MisconfigurationException(
                "training_step returned a loss that does not require grad, so backward cannot run: compute "
                "it from the model's output and do not call `.detach()`/`.item()` on it."
            )
    return loss


def _due(every_n: int, last: int | None, epoch: int) -> bool:
    """Whether dataloaders loaded at epoch `last` must be asked for again at `epoch`."""
    return every_n > 0 and last is not None and epoch - last >= every_n


class FitLoop:
    """fit: epochs of training batches, with validation at the configured interval."""

    def __init__(self, trainer: Trainer, progress: Progress, results: RunResults) -> None:
        self.trainer = trainer
        self.progress = progress  # the counters (`trainer.global_step`, ...), advanced here
        self.results = results  # every stage's logged values (`self.log` writes to `results.current`)
        self.plan = RunPlan()  # who listens and which shortcuts are safe: passed in by each fit
        self.val_loop = EvaluationLoop(trainer, "validate", progress, results)
        self.train_dataloader: Any = None  # the loader, or a CombinedLoader of several
        self._train_source: Any = None  # what the epoch iterates: the loader, or the combined batches
        self.explicit_train: Any = None
        self.num_train_batches: float = math.inf
        self.batch_idx = -1
        self._wants_outputs = True
        self._active: frozenset[str] = frozenset()
        self._direct: Any = None  # the raw optimizer when the step can skip the closure plumbing (see run)
        self._warned_none = False
        self._warned_min_not_reached = False
        self._automatic = True
        self._epoch_results_fresh = False  # the train accumulators were just reset (before on_train_start)
        self._val_check_batch: float = math.inf
        self._train_loaded_epoch: int | None = None
        self._val_loaded_epoch: int | None = None
        self.preemption = Preemption(trainer)
        self.requeue = SlurmRequeue(trainer)
        self.resume_state = epoch_replay.ResumeState()  # where each epoch started (epoch_replay.py)

    # ------------------------------------------------------------------ the loop
    def run(self, plan: RunPlan) -> None:
        """Sanity check, then epochs until a stopping condition; the pseudocode of docs/architecture.md."""
        t = self.trainer
        self.plan = plan
        hooks = plan.hooks
        progress = self.progress
        progress.clear_pending()
        self._warned_none = False
        self._warned_min_not_reached = False

        # SIGTERM from here on: a checkpoint at the next train batch's end, then exit 0 (preemption.py)
        # SLURM's requeue signal: stop at a batch boundary, checkpoint, requeue (environments.py)
        with self.preemption, self.requeue:
            if self._validation_possible() and t.num_sanity_val_steps != 0 and progress.global_step == 0:
                self._sanity_check()

            self.setup_train_data()
            self._active = plan.active
            self._wants_outputs = "on_train_batch_end" in plan.active
            self._direct = plan.direct_optimizer
            # values logged in on_train_start count towards the first epoch, as in Lightning
            self.results.train.reset_epoch()
            self._epoch_results_fresh = True
            hooks.both("on_train_start")
            profiler = plan.profiler
            while not self._should_stop(epoch_end=True):
                if profiler is None:
                    self._run_epoch()
                else:
                    with profiler.profile("run_training_epoch"):
                        self._run_epoch()
            hooks.both("on_train_end")

    def _run_epoch(self) -> None:
        t = self.trainer
        plan = self.plan
        hooks = plan.hooks
        progress = self.progress
        if _due(t.reload_dataloaders_every_n_epochs, self._train_loaded_epoch, progress.epoch):
            self.setup_train_data(reload=True)
        data.set_sampler_epoch(self.train_dataloader, progress.epoch)
        # no model.train() here (as in Lightning): a submodule the user keeps in eval mode stays there
        if not self._epoch_results_fresh:
            self.results.train.reset_epoch()
        self._epoch_results_fresh = False
        hooks.both("on_train_epoch_start")
        self._automatic = t.lightning_module.automatic_optimization  # read once per epoch, not per batch

        start = progress.epoch_batches
        source = self._train_source
        batch_iter = epoch_replay.train_batches(self.resume_state, source, start, self.num_train_batches)
        profiler = plan.profiler
        if profiler is not None:
            batch_iter = profiler.profile_iterable(batch_iter, "train_dataloader_next")
        complete = False
        for batch_idx, batch in data.first_batches(batch_iter, self.num_train_batches - start, source, start):
            if profiler is None:
                ended = self._train_batch(batch, batch_idx)
            else:
                with profiler.profile("run_training_batch"):
                    ended = self._train_batch(batch, batch_idx)
            if ended is _STOP_EPOCH:
                break
            if self.preemption.active:
                self.preemption.poll(batch_idx)
            if self.requeue.active:
                self.requeue.poll(batch_idx)
            if self._should_validate(batch_idx):
                self._validate()
            if self._should_stop(epoch_end=False):
                break
        else:
            complete = True  # the data ran out (an unsized loader's last batch is known only now)
            if self._should_validate_at_unsized_end():
                self._validate()

        self._end_epoch(complete or progress.epoch_batches >= self.num_train_batches)

    def _train_batch(self, batch: Any, batch_idx: int) -> Any:
        t = self.trainer
        self.batch_idx = batch_idx
        plan = self.plan
        hooks = plan.hooks
        progress = self.progress
        if not plan.fast_transfer:
            batch = plan.transfer(batch, 0)
        results = self.results.train
        results.new_batch(batch)
        active = self._active
        if "on_train_batch_start" in active:
            hooks.callbacks("on_train_batch_start", batch, batch_idx)
            if hooks.module("on_train_batch_start", batch, batch_idx) == -1:
                return _STOP_EPOCH

        automatic = self._automatic
        if automatic:
            outputs, stepped = self._automatic_step(batch, batch_idx)
        else:
            outputs, stepped = self._manual_step(batch, batch_idx)
        if automatic and t.strategy.lr_scheduler_configs:
            if stepped:
                self._step_schedulers("step")
            if batch_idx + 1 == self.num_train_batches:  # as Lightning: after the last batch's step
                self._step_schedulers("epoch", plateau=False)
                progress.epoch_schedulers_done()

        progress.batch_trained(stepped or not automatic)
        if "on_train_batch_end" in active:
            hooks.callbacks("on_train_batch_end", outputs, batch, batch_idx)
            hooks.module("on_train_batch_end", outputs, batch, batch_idx)
        if plan.progress_bar is not None:
            plan.progress_bar._on_train_batch(t)
        if (stepped or not automatic) and t.loggers:
            every = t.log_every_n_steps  # 0: no step values go to the loggers, as in Lightning
            if every and (progress.batches_that_stepped + 1) % every == 0:
                self.results.log_step(results, progress.batches_that_stepped, progress.epoch)
        progress.batch_finished()
        return None

    def ends_accumulation_window(self, batch_idx: int) -> bool:
        """The accumulation rule: batch `batch_idx` steps the optimizer when it completes a window of
        `accumulate_grad_batches` batches or is the epoch's last (windows restart with each epoch)."""
        return (
            batch_idx + 1
        ) % self.trainer.accumulate_grad_batches == 0 or batch_idx + 1 == self.num_train_batches

    def _automatic_step(self, batch: Any, batch_idx: int) -> tuple[Any, bool]:
        """One batch of automatic optimization: forward, zero_grad and backward in a closure, then the step."""
        t = self.trainer
        strategy = t.strategy
        if not strategy.lightning_optimizers:
            t.lightning_module._current_fx_name = "training_step"
            self.plan.training_step(batch, batch_idx)  # no optimizer: run the step, nothing to update
            return {}, False
        accumulate = t.accumulate_grad_batches
        zero_grad_now = batch_idx % accumulate == 0
        step_now = accumulate == 1 or self.ends_accumulation_window(batch_idx)  # no call in the common case
        if self._direct is not None:
            output, loss = self._direct_step(batch, batch_idx, zero_grad_now, step_now)
        else:
            output, loss = self._closure_step(batch, batch_idx, zero_grad_now, step_now)
        if loss is None or not self._wants_outputs:
            return {}, step_now  # nobody reads on_train_batch_end's outputs: skip the detach and dict
        if isinstance(output, Mapping):
            outputs = {k: v for k, v in output.items() if k != "loss"}
            outputs["loss"] = loss.detach()
            return outputs, step_now
        return {"loss": loss.detach()}, step_now

    def _warn_returned_none(self) -> None:
        if not self._warned_none:  # once per fit, as Lightning's warning cache does
            self._warned_none = True
            rank_zero_warn("`training_step` returned `None`. If this was on purpose, ignore this warning...")

    def _closure_step(
        self, batch: Any, batch_idx: int, zero_grad_now: bool, step_now: bool
    ) -> tuple[Any, Any]:
        """The general step: `optimizer_step` runs a closure, with every hook and override on the way."""
        t = self.trainer
        module = t.lightning_module
        plan = self.plan
        hooks = plan.hooks
        training_step, backward = plan.training_step, plan.backward
        epoch = self.progress.epoch
        accumulate = t.accumulate_grad_batches
        active = self._active
        optimizer = t.strategy.lightning_optimizers[0]
        box: dict[str, Any] = {}

        def closure() -> torch.Tensor | None:
            module._current_fx_name = "training_step"
            output = training_step(batch, batch_idx)
            loss = _loss_from(output, True)
            if output is None:
                self._warn_returned_none()
            box["output"] = output
            box["loss"] = loss
            if zero_grad_now:
                if "on_before_zero_grad" in active:
                    hooks.callbacks("on_before_zero_grad", optimizer)
                    hooks.module("on_before_zero_grad", optimizer)
                module.optimizer_zero_grad(epoch, batch_idx, optimizer)
            if loss is None:
                return None
            if accumulate > 1:
                loss = loss / accumulate
            if "on_before_backward" in active:
                hooks.callbacks("on_before_backward", loss)
                hooks.module("on_before_backward", loss)
            backward(loss, optimizer)
            if "on_after_backward" in active:
                hooks.callbacks("on_after_backward")
                hooks.module("on_after_backward")
            return loss

        if step_now:
            module.optimizer_step(epoch, batch_idx, optimizer, closure)
            if "output" not in box:
                raise MisconfigurationException(
                    "Your `optimizer_step` override did not run the closure: call "
                    "`optimizer.step(closure=optimizer_closure)` inside it."
                )
        else:
            closure()
        return box["output"], box["loss"]

    def _direct_step(
        self, batch: Any, batch_idx: int, zero_grad_now: bool, step_now: bool
    ) -> tuple[Any, Any]:
        """What `_closure_step` does when nothing in it is overridden or listened to, without the plumbing.

        `plan._direct_optimizer` allows this path only when every call `_closure_step` would make through
        the module, strategy, precision and LightningOptimizer is the default one, so both compute the
        same thing in the same order (tests/test_optim.py checks they give identical weights).
        """
        t = self.trainer
        t.lightning_module._current_fx_name = "training_step"
        output = self.plan.training_step(batch, batch_idx)
        loss = _loss_from(output, True)
        if output is None:
            self._warn_returned_none()
        optimizer = self._direct
        if zero_grad_now:
            optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            if t.accumulate_grad_batches > 1:
                loss = loss / t.accumulate_grad_batches
            loss.backward()
        if step_now:
            optimizer.step()
            self.progress.optimizer_stepped()
        return output, loss

    def _manual_step(self, batch: Any, batch_idx: int) -> tuple[Any, bool]:
        """One batch of manual optimization: training_step drives the optimizers itself."""
        t = self.trainer
        module = t.lightning_module
        module._current_fx_name = "training_step"
        output = self.plan.training_step(batch, batch_idx)
        if output is not None and not isinstance(output, (torch.Tensor, Mapping)):
            raise MisconfigurationException(
                f"training_step returned {type(output).__name__}; with manual optimization return None, a "
                "tensor or a dict."
            )
        if isinstance(output, torch.Tensor):
            return {"loss": output.detach()}, True
        return (dict(output) if isinstance(output, Mapping) else {}), True

    def _end_epoch(self, complete: bool) -> None:
        """The epoch's end hooks, then its schedulers when it ran all its batches (`complete`), as Lightning."""
        t = self.trainer
        hooks = self.plan.hooks
        progress = self.progress
        results = self.results.train
        results.new_batch(None)
        results.compute_epoch(self.results.reduce)
        progress.epoch_ending()
        hooks.callbacks("on_train_epoch_end", monitoring=False)
        hooks.module("on_train_epoch_end")
        results.compute_epoch(self.results.reduce)
        hooks.callbacks("on_train_epoch_end", monitoring=True)
        results.finish_epoch()
        self.results.log_epoch(results, progress.epoch_log_step(), progress.epoch)
        if complete and t.lightning_module.automatic_optimization:
            if not progress.epoch_schedulers_stepped:  # an unsized loader's epoch: its end is known only now
                self._step_schedulers("epoch", plateau=False)
            self._step_schedulers("epoch", plateau=True)
        progress.epoch_finished()

    def _step_schedulers(self, interval: str, plateau: bool | None = None) -> None:
        """Step the schedulers of `interval` ("step" or "epoch") that are due, through `lr_scheduler_step`.

        `plateau`: only the ReduceLROnPlateau ones (True), only the others (False), or all (None).
        """
        t = self.trainer
        configs = t.strategy.lr_scheduler_configs
        if not configs:
            return
        module = t.lightning_module
        for cfg in configs:
            if cfg.interval != interval or (plateau is not None and cfg.reduce_on_plateau != plateau):
                continue
            count = self.progress.global_step if interval == "step" else self.progress.epoch + 1
            if count % cfg.frequency != 0:
                continue
            metric = None
            if cfg.reduce_on_plateau:
                available = t.callback_metrics
                metric = available.get(cfg.monitor or "")
                if metric is None:
                    message = (
                        f"ReduceLROnPlateau watches {cfg.monitor!r}, which was not logged. "
                        f"Logged metrics: {sorted(available)}."
                    )
                    if cfg.strict:
                        raise MisconfigurationException(message + " Log it, or set 'strict': False.")
                    rank_zero_warn(message + " Skipping this scheduler step.")
                    continue
            module._current_fx_name = "lr_scheduler_step"
            module.lr_scheduler_step(cfg.scheduler, metric)

    # ------------------------------------------------------------------ data
    def setup_train_data(self, reload: bool = False) -> None:
        """Ask for the train dataloader (again when `reload`) and count its batches under the limits."""
        if self.train_dataloader is not None and not reload:
            return
        t = self.trainer
        raw = data.request_dataloaders(t, "train", self.explicit_train)
        if raw is None:
            raise MisconfigurationException("train_dataloader() returned None; return a DataLoader.")
        combined = data.combine_train_loaders(raw)
        if combined is None:
            self.train_dataloader = self._train_source = self._prepare_train_loader(raw)
        else:
            combined.flattened = [self._prepare_train_loader(dl) for dl in combined.flattened]
            self.train_dataloader, self._train_source = combined, data.batches_of(combined)
        limit = t.overfit_batches if t.overfit_batches > 0 else t.limit_train_batches
        self.num_train_batches = data.limit_batches(self.train_dataloader, limit, "limit_train_batches")
        self._train_loaded_epoch = self.progress.epoch
        if self.num_train_batches == 0:
            rank_zero_warn(
                "limit_train_batches is 0 (or the train dataloader is empty): no training will happen."
            )
        elif t.loggers and self.num_train_batches < t.log_every_n_steps and not t.fast_dev_run:
            rank_zero_warn(
                f"The number of training batches ({int(self.num_train_batches)}) is smaller than the logging interval "
                f"Trainer(log_every_n_steps={t.log_every_n_steps}). Set a lower value for log_every_n_steps if "
                "you want to see logs for the training epoch.",
                category=PossibleUserWarning,
            )
        self._val_check_batch = self._resolve_val_check_batch()

    def _prepare_train_loader(self, raw: Any) -> Any:
        """One train loader as the run reads it: unshuffled for overfit_batches, workers seeded, sharded."""
        t = self.trainer
        if t.overfit_batches > 0:
            raw = data.without_shuffle(raw)
        data.seed_workers(raw)
        loader = t.strategy.process_dataloader(raw, shuffle=data.sampler_shuffles(raw), training=True)
        return data.shield_workers_from_sigterm(loader)

    def _resolve_val_check_batch(self) -> float:
        t = self.trainer
        interval = t.val_check_interval
        n = self.num_train_batches
        if isinstance(interval, int) and not isinstance(interval, bool):
            if t.check_val_every_n_epoch is not None and interval > n:
                raise MisconfigurationException(
                    f"val_check_interval={interval} is more than the {int(n)} training batches of an epoch; "
                    "lower it, or set check_val_every_n_epoch=None to count batches across epochs."
                )
            return float(interval)
        if math.isinf(n):
            if interval != 1.0:
                raise MisconfigurationException(
                    f"val_check_interval={interval} is a fraction of an epoch, but the train dataloader has no "
                    "length (an IterableDataset); use an int number of batches, or 1.0 to validate at the end "
                    "of each epoch."
                )
            return math.inf
        return float(max(1, int(n * interval)))

    # ------------------------------------------------------------------ validation
    def _validation_possible(self) -> bool:
        """The flags and the module allow validation (the dataloader is not asked for yet)."""
        t = self.trainer
        return t.limit_val_batches != 0 and (
            overriding("validation_step", t.lightning_module, LightningModule) is not None
        )

    def _load_val_data(self) -> None:
        """Ask for the val dataloaders the first time, then every reload_dataloaders_every_n_epochs."""
        epoch = self.progress.epoch
        if not self.val_loop._loaded or _due(
            self.trainer.reload_dataloaders_every_n_epochs, self._val_loaded_epoch, epoch
        ):
            self.val_loop.setup_data(reload=True)
            self._val_loaded_epoch = epoch

    def _validation_enabled(self) -> bool:
        if not self._validation_possible():
            return False
        self._load_val_data()
        return bool(self.val_loop.dataloaders) and sum(self.val_loop.num_batches()) > 0

    def _should_validate(self, batch_idx: int) -> bool:
        t = self.trainer
        every = t.check_val_every_n_epoch
        if every is not None and (self.progress.epoch + 1) % every != 0:
            return False
        if not self._validation_enabled_cached():
            return False
        if t.should_stop and self._stop_requested():
            return True  # stopping early (e.g. EarlyStopping in training): validate the final weights
        if every is None:
            return self.progress.total_batches % self._val_check_batch == 0
        is_last = batch_idx + 1 == self.num_train_batches
        if (batch_idx + 1) % self._val_check_batch == 0:
            return True
        return is_last and t.val_check_interval == 1.0

    def _should_validate_at_unsized_end(self) -> bool:
        """A loader without a length (an IterableDataset) ends its epoch unannounced: validate once it has.

        This is Lightning's end-of-epoch validation (val_check_interval=1.0) for such loaders; a sized
        loader validated on its last batch already, inside the loop.
        """
        t = self.trainer
        if not math.isinf(self.num_train_batches) or self.progress.epoch_batches == 0:
            return False
        if isinstance(t.val_check_interval, int) or t.val_check_interval != 1.0:
            return False
        every = t.check_val_every_n_epoch
        if every is None or (self.progress.epoch + 1) % every != 0:
            return False
        return self._validation_enabled_cached()

    def _validation_enabled_cached(self) -> bool:
        cached = getattr(self, "_val_enabled", None)
        if cached is None:
            cached = self._val_enabled = self._validation_enabled()
        return cached

    def _validate(self) -> None:
        t = self.trainer
        progress = self.progress
        self._load_val_data()
        t.validating = True
        if self.ends_accumulation_window(progress.epoch_batches - 1):  # not mid-accumulation
            self.plan.hooks.module("on_validation_model_zero_grad")  # frees the gradients
        self.val_loop.run(self.plan)
        progress.validation_finished()
        t.training = True

    def _sanity_check(self) -> None:
        t = self.trainer
        hooks = self.plan.hooks
        t.sanity_checking = True
        hooks.callbacks("on_sanity_check_start")
        # as Lightning: the random draws of the sanity check (the val iterator's seed, dropout, ...) do not
        # change training's, so the first training batch is the same whatever num_sanity_val_steps is
        with isolate_rng():
            self._load_val_data()
            if self.val_loop.dataloaders:
                self.val_loop.run(self.plan, sanity=True)
        hooks.callbacks("on_sanity_check_end")
        t.training = True
        self.results.validate.clear()
        self.results.forget_metrics()  # as Lightning: training starts with no metrics

    # ------------------------------------------------------------------ stopping
    def _stop_requested(self) -> bool:
        """`trainer.should_stop` is set and min_epochs/min_steps allow stopping now."""
        t = self.trainer
        if not t.should_stop:  # callers test it first: the common case costs no call
            return False
        if t.min_epochs is not None and self.progress.epoch < t.min_epochs:
            return False
        return not (t.min_steps is not None and self.progress.global_step < t.min_steps)

    def _should_stop(self, epoch_end: bool) -> bool:
        """The one stopping rule, checked after each batch and (`epoch_end`) before each epoch.

        Any time: max_steps reached, or should_stop (set by the Timer of `max_time`, EarlyStopping, ...)
        once min_epochs/min_steps allow it.
        Between epochs also: max_epochs reached, or no batches to train on. A should_stop that came
        before min_epochs/min_steps stays set (as in Lightning): training goes on, with a warning, and
        stops at the first batch where the minimum is reached.
        """
        t = self.trainer
        p = self.progress
        if t.max_steps != -1 and p.global_step >= t.max_steps:
            return True
        if t.should_stop and self._stop_requested():
            return True
        if not epoch_end:
            return False
        if t.should_stop and not self._warned_min_not_reached:
            self._warned_min_not_reached = True
            rank_zero_warn(
                "Trainer.should_stop was set, but training continues until min_epochs/min_steps are reached."
            )
        max_epochs = t.max_epochs
        if max_epochs is not None and max_epochs != -1 and p.epoch >= max_epochs:
            return True
        return self.num_train_batches == 0

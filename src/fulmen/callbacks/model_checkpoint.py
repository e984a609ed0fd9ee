"""ModelCheckpoint: save checkpoints while training, keep the best `save_top_k` by a monitored metric.

When it saves (Lightning 2.x's rules): every `every_n_train_steps` optimizer steps, every
`train_time_interval`, or every `every_n_epochs` epochs (the default, 1) — at the end of the training
epoch when validation runs once per epoch (or not at all), else after each validation run.
It also catches SIGTERM during fit: at the next batch boundary it writes `last.ckpt` and exits, so
`trainer.fit(..., ckpt_path="last")` continues exactly where the run stopped.

Files are serialized on the training thread and finished (written, fsync'd, renamed) by the background
writer. The paths this callback announces (`best_model_path`, `last_model_path`, `best_k_models`,
`kth_best_model_path`) wait for the writes in flight when read, so a path read from them always names
a complete file. It deletes only files it wrote into its own `dirpath` during this run (or that an
earlier part of the same run, resumed with the same `dirpath`, wrote there), never the checkpoint the
run resumed from.
"""

import datetime
import glob
import os
import re
import time
from typing import Any, Literal

import torch

from fulmen.callbacks.checkpoint import Checkpoint
from fulmen.checkpoint import files as _files
from fulmen.checkpoint import state as _state
from fulmen.loggers.logger import Logger
from fulmen.utilities import MisconfigurationException, overriding, rank_zero_info, rank_zero_warn

Trainer = Any
Module = Any


class ModelCheckpoint(Checkpoint):
    """Save the model periodically, tracking the `save_top_k` best checkpoints by `monitor`.

    Args:
        dirpath: folder for the files; default `<logger.log_dir>/checkpoints`, or
            `<default_root_dir>/checkpoints` without a logger. A local path or an fsspec URL.
        filename: a template such as `"{epoch}-{val_loss:.2f}"` (gives `epoch=2-val_loss=0.02.ckpt`);
            default `"{epoch}-{step}"`.
        monitor: the logged metric to rank checkpoints by; None keeps the latest checkpoint(s).
        verbose: print a line for each decision.
        save_last: also write `last.ckpt` every time; `"link"` makes it a symlink to the newest file.
        save_top_k: how many of the best checkpoints to keep (-1: all, 0: none).
        save_weights_only: write only the weights (no optimizer or loop state: such a file cannot resume).
        mode: "min" or "max": whether a smaller or a larger `monitor` is better.
        auto_insert_metric_name: write `epoch=2` rather than `2` for `{epoch}`.
        every_n_train_steps: save every this many optimizer steps.
        train_time_interval: save at most this often (a `datetime.timedelta`).
        every_n_epochs: save every this many epochs.
        save_on_train_epoch_end: save at the end of the training epoch (True) or after validation
            (False); None decides as Lightning does.
        enable_version_counter: append `-v1`, `-v2`, ... instead of overwriting a file of the same name.
        save_on_exception: when fit fails with an exception, save a checkpoint first (synchronously).
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: Literal[True, False, "link"] | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: datetime.timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        save_on_exception: bool = False,
    ) -> None:
        """Configure when and where to save; see the class docstring for every argument."""
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.save_on_exception = save_on_exception
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self._last_global_step_saved = 0
        self._last_time_checked: float | None = None
        self._last_checkpoint_saved: str = ""  # the newest file written, of any step (what "link" points at)
        self._validation_ran = False  # a missing monitor is an error only once validation has run
        self.current_score: torch.Tensor | None = None
        # the announced paths live in private fields; their public properties wait for writes in flight
        self._best_k_models: dict[str, torch.Tensor] = {}
        self._kth_best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self._best_model_path = ""
        self._last_model_path = ""
        self.kth_value: torch.Tensor | None = None
        self._written: set[str] = set()  # files this callback wrote (or inherited) in its dirpath: deletable

        if mode not in ("min", "max"):
            raise MisconfigurationException(f"ModelCheckpoint: `mode` can be 'min' or 'max' but got {mode}.")
        self.mode = mode
        if save_last not in (None, True, False, "link"):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_last={save_last!r}) is not valid; use True, False, None or 'link'."
            )
        if save_top_k < -1:
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={save_top_k}) is not valid. Must be >= -1 (-1 keeps all, 0 none)."
            )
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None) is not a valid configuration: there is "
                "no quantity to rank the top k by. Set `monitor=` to a logged metric, or save_top_k to -1, 0 or 1."
            )
        for name, value in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value < 0:
                raise MisconfigurationException(
                    f"ModelCheckpoint({name}={value}) is not valid. Must be >= 0."
                )
        chosen = [
            (every_n_train_steps or 0) >= 1,
            (every_n_epochs or 0) >= 1,
            train_time_interval is not None,
        ]
        if sum(chosen) > 1:
            raise MisconfigurationException(
                "ModelCheckpoint: Combination of parameters every_n_train_steps, every_n_epochs and "
                f"train_time_interval (got {every_n_train_steps}, {every_n_epochs}, {train_time_interval}) "
                "is not valid: they are mutually exclusive; set only one of them."
            )
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1
        self._every_n_train_steps = every_n_train_steps or 0
        self._every_n_epochs = 0 if every_n_epochs is None else every_n_epochs
        self._train_time_interval = train_time_interval
        self.dirpath: str | None = self._normalize_dir(dirpath) if dirpath is not None else None
        self.filename = filename

    @property
    def every_n_epochs(self) -> int:
        """How many epochs apart epoch-end checkpoints are saved (0: not by epoch)."""
        return self._every_n_epochs

    # ------------------------------------------------------------------ announced paths
    @property
    def best_model_path(self) -> str:
        """The best checkpoint so far (a complete file: reading this waits for writes in flight)."""
        _settle()
        return self._best_model_path

    @best_model_path.setter
    def best_model_path(self, value: str) -> None:
        self._best_model_path = value

    @property
    def last_model_path(self) -> str:
        """The latest `last.ckpt` (a complete file: reading this waits for writes in flight)."""
        _settle()
        return self._last_model_path

    @last_model_path.setter
    def last_model_path(self, value: str) -> None:
        self._last_model_path = value

    @property
    def best_k_models(self) -> dict[str, torch.Tensor]:
        """Path -> score of the kept checkpoints (complete files: reading this waits for writes in flight)."""
        _settle()
        return self._best_k_models

    @best_k_models.setter
    def best_k_models(self, value: dict[str, torch.Tensor]) -> None:
        self._best_k_models = value

    @property
    def kth_best_model_path(self) -> str:
        """The worst of the kept top-k checkpoints (a complete file once read)."""
        _settle()
        return self._kth_best_model_path

    @kth_best_model_path.setter
    def kth_best_model_path(self, value: str) -> None:
        self._kth_best_model_path = value

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        """Unique per configuration, so several ModelCheckpoints can share one checkpoint file."""
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
        )

    def state_dict(self) -> dict[str, Any]:
        """The top-k bookkeeping, saved so that a resumed run keeps ranking where it left off."""
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self._best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self._best_k_models),
            "kth_best_model_path": self._kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self._last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the bookkeeping; when the folder changed, only `best_model_path` is kept."""
        if state_dict.get("dirpath") == self.dirpath:
            self.best_model_score = state_dict["best_model_score"]
            self._kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value")
            self._best_k_models = dict(state_dict.get("best_k_models", {}))
            self._last_model_path = state_dict.get("last_model_path", "")
            self.current_score = state_dict.get("current_score")
            # the same run continuing in the same folder: its earlier files may be replaced as usual
            inherited = [*self._best_k_models, self._last_model_path, state_dict.get("best_model_path", "")]
            self._written.update(p for p in inherited if p and self._inside_dirpath(p))
        else:
            rank_zero_warn(
                f"ModelCheckpoint: The dirpath has changed from {state_dict.get('dirpath')!r} to {self.dirpath!r}, so only "
                "best_model_path is restored; best_model_score, best_k_models and last_model_path start afresh."
            )
        self._best_model_path = state_dict.get("best_model_path", "")

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None:
        """Choose the folder (from the logger when not given)."""
        if self.dirpath is None:
            self.dirpath = self._normalize_dir(self._default_dirpath(trainer))
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        if self.save_last == "link" and _files._is_url(self.dirpath):
            raise ValueError(
                f"ModelCheckpoint(save_last='link') is only supported for local file paths; dirpath "
                f"{self.dirpath!r} is not one. Use save_last=True, or a local dirpath."
            )
        if stage == "fit":
            self._validation_ran = False

    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None:
        """With `save_on_exception`, save before the run ends."""
        if self.save_on_exception and self._may_save_on_exception(trainer):
            metrics = self._monitor_candidates(trainer)
            filepath = self._free_name(metrics, trainer, None)
            self._save(trainer, filepath, wait=True)
            self._save_last(trainer, metrics, wait=True)
            _files.finish_writes()
            rank_zero_info(
                f"{type(exception).__name__} was raised ({exception}); saved checkpoint to {filepath!r}"
            )

    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None:
        """Start the clock for `train_time_interval`."""
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save every `every_n_train_steps` steps or `train_time_interval`."""
        _files.raise_if_write_failed()  # a failed background save stops the run at the next step
        if self._every_n_train_steps == 0 and self._train_time_interval is None:
            return
        if self._should_skip_saving(trainer):
            return
        step = trainer.global_step
        due = self._every_n_train_steps >= 1 and step % self._every_n_train_steps == 0
        if self._train_time_interval is not None:
            now = time.monotonic()
            due = self._last_time_checked is not None and (
                now - self._last_time_checked >= self._train_time_interval.total_seconds()
            )
            due = bool(trainer.strategy.broadcast(due))
            if due:
                self._last_time_checked = now
        if due:
            self._save_all(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Save at the end of the epoch when validation does not run inside it."""
        if self._should_skip_saving(trainer) or not self._should_save_on_train_epoch_end(trainer):
            return
        self._save_all(trainer, epoch_due=self._epoch_due(trainer), at_epoch_end=True)

    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None:
        """With `save_last`, write last.ckpt at the end when no checkpoint was saved during the run."""
        if self.save_last and not self._last_checkpoint_saved and not trainer.fast_dev_run:
            self._save_last(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None:
        """Save after validation when it runs several times per epoch (or every few epochs)."""
        if trainer.sanity_checking:
            return
        self._validation_ran = True
        if self._should_skip_saving(trainer):
            return
        if self._should_save_on_train_epoch_end(trainer):
            return
        self._save_all(trainer, epoch_due=self._epoch_due(trainer), at_epoch_end=True)

    # ------------------------------------------------------------------ decisions
    def _epoch_due(self, trainer: Trainer) -> bool:
        return self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0

    def _should_skip_saving(self, trainer: Trainer) -> bool:
        return bool(
            trainer.fast_dev_run
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _may_save_on_exception(self, trainer: Trainer) -> bool:
        return bool(
            trainer.lightning_module is not None
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and self.dirpath is not None
            and self._last_global_step_saved != trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer: Trainer) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        val_batches = trainer.num_val_batches
        total = sum(val_batches) if isinstance(val_batches, list) else val_batches
        if total == 0:
            return True
        return trainer.val_check_interval == 1.0

    def _save_all(self, trainer: Trainer, epoch_due: bool = True, at_epoch_end: bool = False) -> None:
        metrics = self._monitor_candidates(trainer)
        if epoch_due:
            self._save_topk(trainer, metrics)
        # as Lightning 2.6: at an epoch's end, last.ckpt follows a checkpoint saved at this step (a link
        # may point at an earlier one); every_n_epochs and an unimproved score do not write it on their own
        saved_now = self._last_global_step_saved == trainer.global_step
        if not at_epoch_end or saved_now or (self.save_last == "link" and self._last_checkpoint_saved):
            self._save_last(trainer, metrics)

    def _monitor_candidates(self, trainer: Trainer) -> dict[str, Any]:
        metrics = dict(trainer.callback_metrics)
        metrics.setdefault("epoch", torch.tensor(trainer.current_epoch))
        metrics["step"] = torch.tensor(trainer.global_step)
        return metrics

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        """True when `current` belongs among the best `save_top_k` scores."""
        if current is None:
            return False
        if self.save_top_k == -1 or len(self._best_k_models) < self.save_top_k:
            return True
        kth = self._best_k_models[self._kth_best_model_path]
        better = torch.lt if self.mode == "min" else torch.gt
        return bool(better(current, kth.to(current.device)))

    # ------------------------------------------------------------------ saving
    def _save_topk(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            filepath = self._free_name(metrics, trainer, self._best_model_path)
            previous, self._best_model_path = self._best_model_path, filepath
            self._save(trainer, filepath)
            if self.save_top_k == 1 and previous and previous != filepath:
                self._remove(trainer, previous)
            return
        current = metrics.get(self.monitor)
        if current is None:
            names = sorted(k for k in metrics if k not in ("epoch", "step"))
            message = (
                f"ModelCheckpoint(monitor={self.monitor!r}) could not find {self.monitor!r} among the logged "
                f"metrics {names}. Log it with `self.log({self.monitor!r}, value)`, or change `monitor`."
            )
            if self._validation_ran:
                raise MisconfigurationException(message)
            rank_zero_warn(message + " (Skipping this save: validation has not run yet.)")
            return
        current = torch.as_tensor(current).detach().float().squeeze().cpu()
        if self.check_monitor_top_k(trainer, current):
            self._update_best_and_save(current, trainer, metrics)
        elif self.verbose:
            rank_zero_info(
                f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: {self.monitor!r} was not in "
                f"top {self.save_top_k}"
            )

    def _update_best_and_save(self, current: torch.Tensor, trainer: Trainer, metrics: dict[str, Any]) -> None:
        k = len(self._best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        to_delete = None
        if len(self._best_k_models) == k and k > 0:
            to_delete = self._kth_best_model_path
            self._best_k_models.pop(to_delete)
        if torch.isnan(current):
            current = torch.tensor(float("inf") if self.mode == "min" else float("-inf"))
        filepath = self._free_name(metrics, trainer, to_delete)
        self.current_score = current
        top = self._best_k_models
        top[filepath] = current
        if len(top) == k:
            worst = max if self.mode == "min" else min
            self._kth_best_model_path = worst(top, key=lambda p: float(top[p]))
            self.kth_value = top[self._kth_best_model_path]
        best = min if self.mode == "min" else max
        self._best_model_path = best(top, key=lambda p: float(top[p]))
        self.best_model_score = top[self._best_model_path]
        if self.verbose:
            rank_zero_info(
                f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: {self.monitor!r} reached "
                f"{float(current):0.5f} (best {float(self.best_model_score):0.5f}), saving model to {filepath!r} "
                f"as top {k}"
            )
        self._save(trainer, filepath)
        if to_delete is not None and to_delete != filepath:
            self._remove(trainer, to_delete)

    def _save_last(self, trainer: Trainer, metrics: dict[str, Any], wait: bool = False) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while _files.will_exist(filepath) and filepath != self._last_model_path:
                filepath = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST, ver=version)
                version += 1
        previous, self._last_model_path = self._last_model_path, filepath
        target = self._last_checkpoint_saved
        if target == filepath:  # never a link to itself
            target = ""
        if self.save_last == "link" and target and self.save_top_k != 0 and not _files._is_url(filepath):
            if trainer.is_global_zero:
                # queued behind the target's write, so the link never points at a missing file on disk
                _files.in_background(lambda: _link(target, filepath), f"the link {filepath!r}", filepath)
                if wait:
                    _files.finish_writes()
            self._written.add(filepath)
            self._last_global_step_saved = trainer.global_step
        else:
            self._save(trainer, filepath, wait=wait)
        if previous and previous != filepath:
            self._remove(trainer, previous)

    def _save(self, trainer: Trainer, filepath: str, wait: bool = False) -> None:
        if _saves_with_fulmen(trainer):
            # serialized now, written and fsync'd in the background while training goes on (checkpoint/files.py)
            _state.save(trainer, filepath, self.save_weights_only, wait=wait)
        else:  # a Trainer subclass (or a patched instance) decides how checkpoints are written
            trainer.save_checkpoint(filepath, self.save_weights_only)
        self._written.add(filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        readers = [lg for lg in trainer.loggers if overriding("after_save_checkpoint", lg, Logger)]
        if readers:  # e.g. MLFlowLogger(log_model=...) uploads the file: it has to be on disk
            _files.finish_writes()
        for logger in readers:
            logger.after_save_checkpoint(self)

    def _remove(self, trainer: Trainer, filepath: str) -> None:
        if not trainer.is_global_zero or not self._may_delete(trainer, filepath):
            return
        self._written.discard(filepath)
        if os.path.islink(filepath) and _files._WRITER.expected(filepath) is None:
            os.unlink(filepath)
        else:
            trainer.strategy.remove_checkpoint(filepath)

    def _may_delete(self, trainer: Trainer, filepath: str) -> bool:
        """Only a file this run wrote into its own folder, no longer announced, and not the resume source."""
        if filepath in (self._best_model_path, self._last_model_path) or filepath in self._best_k_models:
            return False
        if filepath not in self._written or not self._inside_dirpath(filepath):
            return False
        source = getattr(trainer, "ckpt_path", None)
        if source and not _files._is_url(filepath):
            return os.path.realpath(filepath) != os.path.realpath(os.fspath(source))
        return source != filepath

    def _inside_dirpath(self, filepath: str) -> bool:
        if self.dirpath is None:
            return False
        if _files._is_url(filepath):
            return filepath.rsplit("/", 1)[0] == self.dirpath.rstrip("/")
        return os.path.dirname(os.path.realpath(filepath)) == self.dirpath

    def _free_name(self, metrics: dict[str, Any], trainer: Trainer, replaceable: str | None) -> str:
        """The formatted file name, with `-vN` added while a file of that name exists (unless replaceable)."""
        filepath = self.format_checkpoint_name(metrics)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while _files.will_exist(filepath) and filepath != replaceable:
                filepath = self.format_checkpoint_name(metrics, ver=version)
                version += 1
        return filepath

    # ------------------------------------------------------------------ names and folders
    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None, prefix: str = ""
    ) -> str:
        """The file path for `metrics`: `{name}` / `{name:fmt}` in the template replaced by their values."""
        name = self._format_name(filename or self.filename, metrics, prefix)
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        name = f"{name}{self.FILE_EXTENSION}"
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _format_name(self, template: str | None, metrics: dict[str, Any], prefix: str) -> str:
        if not template:
            template = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        values: dict[str, Any] = {}
        names = sorted(set(re.findall(r"\{([^{}:]*)[:}]", template)), key=len, reverse=True)

        def substitute(match: re.Match[str]) -> str:
            key, spec = match.group(1), match.group(2) or ""
            value = metrics.get(key, 0)
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else value
            values[key] = value
            field = "{0[" + key + "]" + spec + "}"
            if self.auto_insert_metric_name:
                return key + self.CHECKPOINT_EQUALS_CHAR + field
            return field

        pattern = "|".join(re.escape(n) for n in names)
        template = re.sub(r"\{(" + pattern + r")(:[^{}]*)?\}", substitute, template) if names else template
        text = template.format(values)
        return self.CHECKPOINT_JOIN_CHAR.join((prefix, text)) if prefix else text

    def _default_dirpath(self, trainer: Trainer) -> str:
        logger = trainer.logger
        if logger is not None:
            log_dir = getattr(logger, "log_dir", None)
            if log_dir:
                return os.path.join(os.fspath(log_dir), "checkpoints")
            save_dir = getattr(logger, "save_dir", None) or trainer.default_root_dir
            name, version = getattr(logger, "name", None), getattr(logger, "version", None)
            version = version if isinstance(version, str) else f"version_{version}"
            return os.path.join(os.fspath(save_dir), str(name or "lightning_logs"), version, "checkpoints")
        return os.path.join(trainer.default_root_dir, "checkpoints")

    @staticmethod
    def _normalize_dir(dirpath: str | os.PathLike[str]) -> str:
        path = os.fspath(dirpath)
        return path if _files._is_url(path) else os.path.realpath(os.path.expanduser(path))

    def last_checkpoint_candidates(self, trainer: Trainer) -> list[str]:
        """`last*.ckpt` files in this folder, else in the sibling version folders of the logger."""
        if self.dirpath is None or _files._is_url(self.dirpath):
            found = []
            if self.dirpath is not None:
                path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
                found = [path] if _files.exists(path) else []
            return found
        pattern = self.CHECKPOINT_NAME_LAST + "*" + self.FILE_EXTENSION
        found = glob.glob(os.path.join(glob.escape(self.dirpath), pattern))
        if not found and os.path.basename(self.dirpath) == "checkpoints":
            versions = os.path.dirname(os.path.dirname(self.dirpath))
            found = glob.glob(os.path.join(glob.escape(versions), "*", "checkpoints", pattern))
        return found

    # ------------------------------------------------------------------ checkpoint targets (see Callback)
    def interrupt_checkpoint_path(self, trainer: Trainer) -> str | None:
        """On SIGTERM the state goes into the last checkpoint (`last_model_path`, else `<dirpath>/last.ckpt`)."""
        if self.dirpath is None:
            return None
        last = self.last_model_path  # waits for writes in flight (it may be a queued link)
        if last and not os.path.islink(last):
            return last
        return os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def interrupt_checkpoint_saved(self, trainer: Trainer, path: str) -> None:
        """The SIGTERM checkpoint is the new last checkpoint (what `ckpt_path="last"` finds)."""
        self._last_model_path = path
        self._written.add(path)

    def to_yaml(self, filepath: str | os.PathLike[str] | None = None) -> None:
        """Write `best_k_models` (path: score) to a YAML file, by default `<dirpath>/best_k_models.yaml`."""
        path = os.fspath(filepath) if filepath else os.path.join(self.dirpath or ".", "best_k_models.yaml")
        import yaml  # late: only this method needs it

        with open(path, "w") as f:
            # yaml.dump, not hand-written lines: `{}` when empty, and exponents (1e-05) read back as floats
            yaml.dump({key: float(value) for key, value in self.best_k_models.items()}, f)


def _settle() -> None:
    """Wait for the checkpoint writes in flight, so an announced path names a complete file."""
    if _files._WRITER.pending():
        _files.finish_writes()


def _saves_with_fulmen(trainer: Trainer) -> bool:
    """True unless `trainer.save_checkpoint` was overridden (in a subclass or on the instance)."""
    from fulmen.trainer import Trainer as FulmenTrainer  # late: the trainer module imports the callbacks

    # `overriding`, not `is_overridden`: a Mock or a wrapper put on save_checkpoint must be called
    return overriding("save_checkpoint", trainer, FulmenTrainer) is None


def _link(target: str, linkpath: str) -> None:
    """Point `linkpath` at `target` (relative when in the same folder), replacing any old link atomically."""
    folder = os.path.dirname(linkpath)
    rel = os.path.relpath(target, folder)
    tmp = os.path.join(folder, f".tmp-link-{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(rel, tmp)
    os.replace(tmp, linkpath)

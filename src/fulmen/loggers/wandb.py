"""WandbLogger: metrics, hyper-parameters and (optionally) checkpoints in a Weights & Biases run.

Metrics are plotted against `trainer/global_step` (declared once with `define_metric`), so W&B's own
step counter may advance freely when the user logs extra things (images, tables) in between.
`offline=True` writes the run under `<save_dir>/wandb/` for a later `wandb sync`; no network needed.
The run stays open after training, as in Lightning, so more can be logged; `wandb.finish()` closes it.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from fulmen.loggers.logger import Logger, rank_zero_experiment
from fulmen.loggers.tensorboard import _as_params
from fulmen.utilities import rank_zero_only, rank_zero_warn

_STEP_KEY = "trainer/global_step"


def _require_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise ImportError("WandbLogger needs the `wandb` package: `pip install wandb`.") from err
    return wandb


class WandbLogger(Logger):
    """Logs to Weights & Biases.

    Args:
        name: the run's display name.
        save_dir: the folder W&B writes its local files to (`<save_dir>/wandb/`).
        version: the id of a run to continue (same as `id`).
        offline: write locally only (sync later with `wandb sync <save_dir>/wandb/offline-run-*`).
        dir: another name for `save_dir`.
        id: the run id (same as `version`).
        anonymous: log without a W&B account.
        project: the W&B project (default "lightning_logs").
        log_model: False; True uploads the best and last checkpoints when training ends; "all" uploads
            every checkpoint as it is saved.
        experiment: an existing `wandb` run to log to.
        prefix: a string put before every metric name (`"<prefix>-<name>"`).
        checkpoint_name: the artifact name of uploaded checkpoints (default `model-<run id>`).
        **kwargs: passed to `wandb.init` (entity, group, tags, notes, config, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | os.PathLike[str] = ".",
        version: str | None = None,
        offline: bool = False,
        dir: str | os.PathLike[str] | None = None,
        id: str | None = None,
        anonymous: bool | None = None,
        project: str | None = None,
        log_model: bool | str = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        _require_wandb()
        if log_model not in (False, True, "all"):
            raise ValueError(f"WandbLogger(log_model={log_model!r}): use False, True or 'all'.")
        if offline and log_model:
            raise ValueError(
                "WandbLogger(offline=True, log_model=...) cannot upload checkpoints without a connection; "
                "set log_model=False or go online."
            )
        if dir is not None and os.fspath(save_dir) == ".":
            save_dir = dir
        self._save_dir = os.fspath(save_dir)
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._checkpoint_name = checkpoint_name
        self._experiment = experiment
        self._project = project or "lightning_logs"
        self._id = version or id
        init: dict[str, Any] = {"name": name, "project": self._project, "dir": self._save_dir, "id": self._id}
        init["resume"] = "allow"
        if anonymous:
            init["anonymous"] = "allow"
        if offline:
            init["mode"] = "offline"
        init.update(kwargs)
        self._wandb_init = init
        self._checkpoint_callback: Any = None
        self._logged_checkpoints: dict[str, float] = {}

    # ------------------------------------------------------------------ where
    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The `wandb` run (started on first use; an already running `wandb.run` is reused)."""
        if self._experiment is None:
            wandb = _require_wandb()
            os.makedirs(self._save_dir, exist_ok=True)
            if wandb.run is not None:
                rank_zero_warn(
                    "WandbLogger reuses the wandb run that is already active; call `wandb.finish()` before "
                    "training if you want a new one."
                )
                self._experiment = wandb.run
            else:
                self._experiment = wandb.init(**self._wandb_init)
            self._experiment.define_metric(_STEP_KEY)
            self._experiment.define_metric("*", step_metric=_STEP_KEY, step_sync=True)
            self._id = self._experiment.id
        return self._experiment

    @property
    def name(self) -> str | None:
        """The W&B project."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run id."""
        return self._experiment.id if self._experiment is not None else self._id

    @property
    def save_dir(self) -> str:  # noqa: D102
        return self._save_dir

    # ------------------------------------------------------------------ what
    @rank_zero_only
    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace | None, *args: Any, **kwargs: Any
    ) -> None:
        """Put the hyper-parameters in the run's config (nested dicts stay nested)."""
        self.experiment.config.update(_as_params(params), allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log `metrics` with `trainer/global_step = step` as their x-axis."""
        row = {(f"{self._prefix}-{k}" if self._prefix else k): v for k, v in metrics.items()}
        if step is not None:
            row[_STEP_KEY] = step
        self.experiment.log(row)

    @rank_zero_only
    def log_table(self, key: str, columns: list[str], data: list[list[Any]], step: int | None = None) -> None:
        """Log a `wandb.Table` of `data` rows under `key`."""
        wandb = _require_wandb()
        self.log_metrics({key: wandb.Table(columns=columns, data=data)}, step)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Log images (tensors, arrays, PIL images or paths); `caption=[...]` etc. go per image."""
        wandb = _require_wandb()
        n = len(images)
        for name, values in kwargs.items():
            if len(values) != n:
                raise ValueError(
                    f"log_image: {name} has {len(values)} entries for {n} images; give one per image."
                )
        per_image = [{name: values[i] for name, values in kwargs.items()} for i in range(n)]
        self.log_metrics({key: [wandb.Image(img, **extra) for img, extra in zip(images, per_image)]}, step)

    def watch(
        self, model: Any, log: str | None = "gradients", log_freq: int = 100, log_graph: bool = True
    ) -> None:
        """Let W&B record the model's gradients and/or parameters every `log_freq` steps."""
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """With `log_model="all"` upload the new checkpoints now; with True remember them for the end."""
        self._checkpoint_callback = checkpoint_callback
        if self._log_model == "all":
            self._log_checkpoints(checkpoint_callback)

    @rank_zero_only
    def _log_checkpoints(self, checkpoint_callback: Any) -> None:
        wandb = _require_wandb()
        scores = {p: float(s) for p, s in (getattr(checkpoint_callback, "best_k_models", {}) or {}).items()}
        best = getattr(checkpoint_callback, "best_model_path", "")
        paths = list(scores) + [p for p in (best, getattr(checkpoint_callback, "last_model_path", "")) if p]
        for path in dict.fromkeys(paths):
            if not os.path.isfile(path) or self._logged_checkpoints.get(path) == os.path.getmtime(path):
                continue
            metadata = {"score": scores.get(path), "original_filename": os.path.basename(path)}
            metadata["monitor"] = getattr(checkpoint_callback, "monitor", None)
            artifact = wandb.Artifact(
                name=self._checkpoint_name or f"model-{self.experiment.id}", type="model", metadata=metadata
            )
            artifact.add_file(path, name="model.ckpt")
            self.experiment.log_artifact(artifact, aliases=["latest", "best"] if path == best else ["latest"])
            self._logged_checkpoints[path] = os.path.getmtime(path)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Upload pending checkpoints (log_model=True) after a successful run; the run stays open."""
        if status == "success" and self._log_model and self._checkpoint_callback is not None:
            self._log_checkpoints(self._checkpoint_callback)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._experiment is not None:  # a child process attaches to the same run by id
            state["_id"] = self._experiment.id
            state["_wandb_init"] = dict(self._wandb_init, id=self._experiment.id)
        state["_experiment"] = None
        return state

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.callbacks import Checkpoint
from fulmen.demos import BoringModel
from fulmen.loggers.logger import Logger


@pytest.fixture
def make_trainer(tmp_path):
    """A factory for a quiet, fast Trainer on the CPU: no logger, checkpointing, progress bar or summary;
    its optional first argument is the Trainer class (a test's subclass).

    The CPU is pinned so that the suite checks the same thing on a machine with a GPU (where "auto" would
    pick it); GPU tests ask for accelerator="gpu" themselves.
    """

    def make(trainer_class=L.Trainer, **kwargs):
        options = dict(
            accelerator="cpu",
            default_root_dir=tmp_path,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        options.update(kwargs)
        callbacks = options.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if "enable_checkpointing" not in kwargs and any(isinstance(c, Checkpoint) for c in callbacks):
            options["enable_checkpointing"] = True  # a test's own checkpoint callback (False would refuse it)
        return trainer_class(**options)

    return make


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Each test starts from the same process-wide state: seed variables, determinism, rank."""
    import os

    import torch

    from fulmen.utilities import rank_zero_only

    saved_env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    deterministic = torch.are_deterministic_algorithms_enabled()
    rank = rank_zero_only.rank
    yield
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.use_deterministic_algorithms(deterministic)
    rank_zero_only.rank = rank


class LoggingModel(BoringModel):
    """Logs known values: `train_value` = batch_idx per training step, `val_value` = 10 + epoch per
    validation batch, `test_value` = 0.5 per test batch. Its keyword arguments are its hyper-parameters."""

    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        self.log("train_value", float(batch_idx))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.log("val_value", 10.0 + self.current_epoch)

    def test_step(self, batch, batch_idx):
        self.log("test_value", 0.5)


@pytest.fixture
def logging_model():
    """The `LoggingModel` class that the logger tests share."""
    return LoggingModel


@pytest.fixture
def logged_fit(make_trainer):
    """Fit a model (default: a `LoggingModel()`) with `logger`: 3 training and 2 validation batches per epoch,
    a log row at every step, no checkpoints. Returns the trainer."""

    def fit(logger, epochs=2, model=None, **trainer_kwargs):
        options = dict(
            limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=0, log_every_n_steps=1
        )
        trainer = make_trainer(max_epochs=epochs, logger=logger, **{**options, **trainer_kwargs})
        trainer.fit(model if model is not None else LoggingModel())
        return trainer

    return fit


class MemoryLogger(Logger):
    """Keeps every log_metrics call as (metrics, step) in `calls`, each value a float; ignores hyperparameters."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def log_metrics(self, metrics, step=None):
        self.calls.append(({k: float(v) for k, v in metrics.items()}, step))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def values(self, key):
        """(step, value) of every call that logged `key`."""
        return [(step, m[key]) for m, step in self.calls if key in m]


@pytest.fixture
def memory_logger():
    """A fresh `MemoryLogger`: the metrics a fit sent to its logger, in memory."""
    return MemoryLogger()


@pytest.fixture
def regression_data():
    """A factory of the same small regression loader: 16 seeded samples of 3 features, their sum as the target,
    batches of 4."""

    def make():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 3, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)

    return make


class _InterruptAt(L.Callback):
    """Saves a checkpoint at the end of one training batch, then raises KeyboardInterrupt as a crash would."""

    def __init__(self, path, epoch, batch_idx):
        self.path, self.epoch, self.batch_idx = path, epoch, batch_idx

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch_idx):
            trainer.save_checkpoint(self.path)
            raise KeyboardInterrupt


@pytest.fixture
def interrupt_at(tmp_path):
    """`interrupt_at(epoch, batch_idx)`: a callback that writes tmp_path / "mid.ckpt" at the end of that training
    batch and then interrupts the fit."""
    return lambda epoch, batch_idx: _InterruptAt(tmp_path / "mid.ckpt", epoch, batch_idx)

"""DummyLogger: what fast_dev_run logs to, so that code written for a real logger runs and writes nothing."""

import copy
import pickle

import torch

import fulmen as L
from fulmen.demos import BoringModel
from fulmen.loggers import CSVLogger
from fulmen.loggers.logger import DummyLogger


class UsesTheExperiment(BoringModel):
    """Calls TensorBoard-style methods on the logger's experiment, as many real projects do."""

    def training_step(self, batch, batch_idx):
        self.logger.experiment.add_histogram("weights", self.layer.weight, self.global_step)
        self.logger.experiment[0].add_image("image", torch.zeros(3, 4, 4))
        self.logger.log_image(key="samples", images=[])
        self.log("loss_seen", 1.0)
        return super().training_step(batch, batch_idx)


def test_fast_dev_run_puts_a_dummy_logger_in_place_of_the_default(tmp_path):
    trainer = L.Trainer(fast_dev_run=2, default_root_dir=tmp_path, enable_progress_bar=False)
    assert len(trainer.loggers) == 1 and isinstance(trainer.logger, DummyLogger)
    trainer.fit(UsesTheExperiment())
    assert trainer.global_step == 2
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_fast_dev_run_replaces_an_explicit_logger_too(tmp_path):
    trainer = L.Trainer(fast_dev_run=True, logger=CSVLogger(tmp_path), enable_progress_bar=False)
    assert isinstance(trainer.logger, DummyLogger)
    trainer.fit(UsesTheExperiment())
    assert not (tmp_path / "lightning_logs").exists()


def test_fast_dev_run_without_a_logger_has_none():
    assert L.Trainer(fast_dev_run=True, logger=False).loggers == []


def test_dummy_logger_does_nothing_and_copies():
    logger = DummyLogger()
    assert (logger.name, logger.version) == ("", "")
    assert logger.log_metrics({"a": 1.0}, step=0) is None
    assert logger.experiment.anything(1, key=2) is None
    assert logger[0] is logger and list(logger) == []
    assert isinstance(copy.deepcopy(logger), DummyLogger)
    assert isinstance(pickle.loads(pickle.dumps(logger)), DummyLogger)

"""pl_module.log(...) from callback hooks: allowed where Lightning allows it, with the same results."""

import pytest

from fulmen.callbacks import Callback
from fulmen.demos import BoringModel
from fulmen.utilities import MisconfigurationException


class LogsEverywhere(Callback):
    def on_train_start(self, trainer, pl_module):
        pl_module.log("train_start", 1.0)

    def on_train_epoch_start(self, trainer, pl_module):
        pl_module.log("epoch_start", 3.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("batch_end", float(batch_idx))

    def on_after_backward(self, trainer, pl_module):
        pl_module.log("after_backward", 9.0)

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("val_epoch_end", 7.0)

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("train_epoch_end", 4.0)


class ReadsAtEpochEnd(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        self.seen = sorted(trainer.callback_metrics)


def test_callbacks_log_through_the_module_in_the_hooks_lightning_allows(make_trainer):
    reader = ReadsAtEpochEnd()
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[LogsEverywhere(), reader]
    )
    trainer.fit(BoringModel())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # what Lightning 2.6 reports for the same callback (on_train_start counts towards the first epoch)
    assert metrics == {
        "train_start": 1.0,
        "epoch_start": 3.0,
        "batch_end": 2.0,
        "after_backward": 9.0,
        "val_epoch_end": 7.0,
        "train_epoch_end": 4.0,
    }
    # a later callback sees what an earlier one logged in the same epoch-end hook, as in Lightning
    assert "train_epoch_end" in reader.seen


def test_on_train_start_value_is_in_the_first_epoch_only(make_trainer):
    class Once(Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.log("once", 5.0)

        def on_train_epoch_end(self, trainer, pl_module):
            self.after = {k: float(v) for k, v in trainer.callback_metrics.items()}

    once = Once()
    make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[once]).fit(
        BoringModel()
    )
    assert once.after == {"once": 5.0}


def test_test_hooks_of_callbacks_log(make_trainer):
    class TestLogger(Callback):
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            pl_module.log("cb_test", float(batch_idx))

    trainer = make_trainer(limit_test_batches=3, callbacks=[TestLogger()])
    results = trainer.test(BoringModel(), verbose=False)
    assert results[0]["cb_test"] == pytest.approx(1.0)  # the epoch mean of 0, 1, 2


@pytest.mark.parametrize(
    "hook", ["on_fit_start", "on_train_end", "on_validation_end", "on_sanity_check_start"]
)
def test_hooks_where_lightning_forbids_logging_raise(make_trainer, hook):
    def log(self, trainer, pl_module):
        pl_module.log("x", 1.0)

    cb = type("Forbidden", (Callback,), {hook: log})()
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1, callbacks=[cb])
    with pytest.raises(MisconfigurationException, match=hook):
        trainer.fit(BoringModel())

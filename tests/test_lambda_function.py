"""callbacks/lambda_function.py: LambdaCallback, the hooks it is given and nothing else."""

import pytest

from fulmen.callbacks import LambdaCallback
from fulmen.demos import BoringModel


def test_lambda_callback_runs_only_given_hooks_in_order(make_trainer):
    calls = []
    cb = LambdaCallback(
        on_fit_start=lambda t, m: calls.append("fit_start"),
        on_train_batch_end=lambda t, m, out, batch, idx: calls.append(("batch", idx)),
        on_fit_end=lambda t, m: calls.append("fit_end"),
    )
    trainer = make_trainer(callbacks=[cb], limit_train_batches=2, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert calls == ["fit_start", ("batch", 0), ("batch", 1), "fit_end"]
    assert isinstance(cb, LambdaCallback) and cb.state_key == "LambdaCallback"


def count_epochs(trainer, pl_module):
    trainer.counted = getattr(trainer, "counted", 0) + 1


def test_lambda_callback_survives_pickling(make_trainer):
    import pickle

    copy = pickle.loads(pickle.dumps(LambdaCallback(on_train_epoch_end=count_epochs)))
    trainer = make_trainer(callbacks=[copy], max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert trainer.counted == 2


def test_lambda_callback_rejects_unknown_hook():
    with pytest.raises(TypeError, match="on_epoch_finish"):
        LambdaCallback(on_epoch_finish=print)

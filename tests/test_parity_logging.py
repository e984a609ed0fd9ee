"""Behaviours checked against Lightning 2.6: where logging is allowed, per-dataloader results, metric reset."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import PossibleUserWarning


def test_add_dataloader_idx_false_keeps_each_key_in_its_own_dataloader_dict(make_trainer):
    class Model(BoringModel):
        def val_dataloader(self):
            return [DataLoader(RandomDataset(32, 2)), DataLoader(RandomDataset(32, 2))]

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log(f"v{dataloader_idx}", 1.0, add_dataloader_idx=False)

    results = make_trainer().validate(Model())
    assert results == [{"v0": 1.0}, {"v1": 1.0}]


def test_a_logged_metric_does_not_carry_sanity_check_batches_into_epoch_0(make_trainer) -> None:
    torchmetrics = pytest.importorskip("torchmetrics")

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)
            self.acc = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")

        def training_step(self, batch, batch_idx):
            return self.lin(batch[0]).sum() * 0

        def validation_step(self, batch, batch_idx):
            x, y = batch
            preds = (1 - y) if self.trainer.sanity_checking else y  # wrong only during the sanity check
            self.acc.update(preds, y)
            self.log("val_acc", self.acc)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    dl = DataLoader(TensorDataset(x, y), batch_size=2)
    trainer = make_trainer()
    trainer.fit(Model(), dl, dl)
    assert float(trainer.callback_metrics["val_acc"]) == 1.0


class _StepAndEpoch(BoringModel):
    """Logs a forked value (on_step and on_epoch) and a step-only value in every step."""

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"], on_step=True, on_epoch=True)
        self.log("train_steponly", 1.0, on_step=True, on_epoch=False)
        return out

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("val_loss", self.step(batch), on_step=True, on_epoch=True)
        self.log("val_steponly", 2.0, on_step=True, on_epoch=False)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("test_loss", self.step(batch), on_step=True, on_epoch=True)
        self.log("test_steponly", 2.0, on_step=True, on_epoch=False)


def _loader():
    return DataLoader(RandomDataset(32, 8), batch_size=2)


def test_after_test_callback_metrics_hold_no_step_values(make_trainer):
    # Lightning 2.6: ['test_loss', 'test_loss_epoch'] (no test_loss_step, no step-only key)
    trainer = make_trainer(limit_test_batches=2)
    trainer.test(_StepAndEpoch(), _loader(), verbose=False)
    assert sorted(trainer.callback_metrics) == ["test_loss", "test_loss_epoch"]


def test_after_fit_training_step_values_stay_and_validation_step_values_do_not(make_trainer):
    # Lightning 2.6 after fit: train_loss_step and train_steponly stay; val_loss_step and val_steponly do not
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(_StepAndEpoch(), _loader(), _loader())
    assert sorted(trainer.callback_metrics) == [
        "train_loss",
        "train_loss_epoch",
        "train_loss_step",
        "train_steponly",
        "val_loss",
        "val_loss_epoch",
    ]


def test_callbacks_never_see_validation_step_values(make_trainer):
    seen = []

    class Peek(L.Callback):
        def on_validation_batch_end(self, trainer, *args):
            seen.append(sorted(trainer.callback_metrics))

    trainer = make_trainer(limit_val_batches=1, callbacks=[Peek()])
    trainer.validate(_StepAndEpoch(), _loader(), verbose=False)
    assert seen == [[]]  # Lightning 2.6: empty during the epoch, epoch values after it


def test_several_dataloaders_put_the_index_after_the_step_epoch_suffix(make_trainer):
    # Lightning 2.6: x_epoch/dataloader_idx_0, never x/dataloader_idx_0_epoch
    trainer = make_trainer(limit_test_batches=1)
    results = trainer.test(_StepAndEpoch(), [_loader(), _loader()], verbose=False)
    assert [sorted(r) for r in results] == [
        ["test_loss_epoch/dataloader_idx_0"],
        ["test_loss_epoch/dataloader_idx_1"],
    ]
    assert sorted(trainer.callback_metrics) == [
        "test_loss/dataloader_idx_0",
        "test_loss/dataloader_idx_1",
        "test_loss_epoch/dataloader_idx_0",
        "test_loss_epoch/dataloader_idx_1",
    ]


def test_callback_metrics_is_one_dict_that_keeps_what_is_written_into_it(make_trainer):
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(_StepAndEpoch(), _loader(), _loader())
    trainer.callback_metrics["external"] = torch.tensor(3.0)
    assert trainer.callback_metrics is trainer.callback_metrics
    assert trainer.callback_metrics["external"] == 3.0 and "val_loss" in trainer.callback_metrics


def test_a_value_written_during_fit_reaches_a_monitoring_callback(make_trainer):
    class Feed(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.callback_metrics["fed"] = torch.tensor(float(trainer.current_epoch))

    stop = L.callbacks.EarlyStopping(monitor="fed", mode="min", patience=0)
    trainer = make_trainer(max_epochs=5, limit_train_batches=1, limit_val_batches=0, callbacks=[Feed(), stop])
    trainer.fit(_StepAndEpoch(), _loader())
    assert trainer.current_epoch == 2  # "fed" rose after epoch 0: patience 0 stops after the second epoch


def test_training_step_returning_none_warns_once_per_fit(make_trainer):
    class Skips(BoringModel):
        def training_step(self, batch, batch_idx):
            return None

    with pytest.warns(UserWarning, match=r"`training_step` returned `None`") as record:
        make_trainer(limit_train_batches=3, limit_val_batches=0).fit(Skips(), _loader())
    assert sum("returned `None`" in str(w.message) for w in record) == 1


def test_fewer_batches_than_log_every_n_steps_warns_when_logging(make_trainer, tmp_path):
    logger = L.loggers.CSVLogger(tmp_path)
    with pytest.warns(
        PossibleUserWarning, match=r"number of training batches \(4\) is smaller than the logging interval"
    ):
        make_trainer(logger=logger, limit_val_batches=0).fit(BoringModel(), _loader())


def test_no_logging_interval_warning_without_a_logger(make_trainer, recwarn):
    make_trainer(limit_val_batches=0).fit(BoringModel(), _loader())
    assert not [w for w in recwarn if "logging interval" in str(w.message)]


def _logs_in_training_step(name, value, **log_kwargs):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log(name, value, **log_kwargs)
            return super().training_step(batch, batch_idx)

    return Model()


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (None, "`NoneType` values cannot be logged"),
        ("foo", "`str` values cannot be logged"),
        ({"a": 1}, "`dict` values cannot be logged"),
        ({"a": {"b": 1}}, "nested dictionaries cannot be logged"),
        ([1, 2, 3], "`list` values cannot be logged"),
        (torch.tensor([1.0, 2.0]), "the tensor must have a single element"),
    ],
)
def test_an_invalid_value_names_the_call_and_the_type(make_trainer, value, what):
    import re

    with pytest.raises(ValueError, match=re.escape(f"`self.log(foo, {value})` was called, but {what}")):
        make_trainer(max_steps=1, limit_val_batches=0).fit(_logs_in_training_step("foo", value))


@pytest.mark.parametrize(
    ("name", "log_kwargs", "match"),
    [
        pytest.param(
            "foo/dataloader_idx_0",
            {},
            "`self.log` with the key `foo/dataloader_idx_0`",
            id="name-with-dataloader-idx",
        ),
        pytest.param(
            "foo",
            {"on_step": False, "on_epoch": False},
            "on_step=False, on_epoch=False\\)` is not useful",
            id="neither-on-step-nor-on-epoch",
        ),
        pytest.param(
            "foo",
            {"reduce_fx": torch.argmax},
            r"reduce_fx=\{min,max,mean,sum\}\)` are supported",
            id="reduce-fx-other-than-min-max-mean-sum",
        ),
    ],
)
def test_a_misconfigured_log_call_is_refused(make_trainer, name, log_kwargs, match):
    from fulmen.utilities import MisconfigurationException

    with pytest.raises(MisconfigurationException, match=match):
        make_trainer(max_steps=1, limit_val_batches=0).fit(_logs_in_training_step(name, 1.0, **log_kwargs))


def test_a_name_carrying_the_dataloader_index_is_kept_with_add_dataloader_idx_false(make_trainer):
    trainer = make_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(_logs_in_training_step("foo/dataloader_idx_0", 2.0, add_dataloader_idx=False))
    assert trainer.callback_metrics["foo/dataloader_idx_0"] == 2.0


def test_a_metric_the_module_does_not_hold_is_refused_naming_the_fix(make_trainer):
    torchmetrics = pytest.importorskip("torchmetrics")
    from fulmen.utilities import MisconfigurationException

    model = _logs_in_training_step("foo", torchmetrics.classification.BinaryAccuracy())
    with pytest.raises(MisconfigurationException, match="by setting an attribute for the metric in your"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(model)


def test_a_metric_not_among_the_module_attributes_lists_the_candidates(make_trainer):
    torchmetrics = pytest.importorskip("torchmetrics")
    from fulmen.utilities import MisconfigurationException

    model = _logs_in_training_step("foo", torchmetrics.classification.BinaryAccuracy())
    model.bar = torchmetrics.classification.BinaryAccuracy()
    with pytest.raises(
        MisconfigurationException, match=r"metric_attribute=name\)` where `name` is one of \['bar'\]"
    ):
        make_trainer(max_steps=1, limit_val_batches=0).fit(model)


def test_a_metric_of_a_deep_copied_module_is_found(make_trainer):
    import copy

    torchmetrics = pytest.importorskip("torchmetrics")

    class Model(BoringModel):
        def __init__(self):
            super().__init__()
            self.acc = torchmetrics.classification.BinaryAccuracy()

        def training_step(self, batch, batch_idx):
            self.acc(torch.ones(2), torch.ones(2))
            self.log("acc", self.acc)
            return super().training_step(batch, batch_idx)

    first = Model()
    make_trainer(max_steps=1, limit_val_batches=0).fit(first)
    trainer = make_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(copy.deepcopy(first))
    assert trainer.callback_metrics["acc"] == 1.0


def test_evaluation_step_values_go_to_the_loggers_at_each_dataloaders_own_step(make_trainer, tmp_path):
    from unittest import mock

    from fulmen.loggers import CSVLogger

    class Model(BoringModel):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("v", float(batch_idx), on_step=True, on_epoch=False)

        def val_dataloader(self):
            return [DataLoader(RandomDataset(32, 2)), DataLoader(RandomDataset(32, 2))]

    trainer = make_trainer(logger=CSVLogger(tmp_path), limit_val_batches=2, num_sanity_val_steps=0)
    with mock.patch.object(CSVLogger, "log_metrics") as log_metrics:
        trainer.validate(Model())
    # no `epoch` key, and the second dataloader counts its steps from 0 again
    assert log_metrics.mock_calls == [
        mock.call(metrics={"v/dataloader_idx_0": 0.0}, step=0),
        mock.call(metrics={"v/dataloader_idx_0": 1.0}, step=1),
        mock.call(metrics={"v/dataloader_idx_1": 0.0}, step=0),
        mock.call(metrics={"v/dataloader_idx_1": 1.0}, step=1),
    ]
    assert set(trainer.logged_metrics) == {"v/dataloader_idx_0", "v/dataloader_idx_1"}


def test_validation_step_values_during_fit_count_on_across_epochs(make_trainer, tmp_path):
    from unittest import mock

    from fulmen.loggers import CSVLogger

    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx), on_step=True, on_epoch=True)

    trainer = make_trainer(
        logger=CSVLogger(tmp_path),
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=2,
        num_sanity_val_steps=1,
    )
    with mock.patch.object(CSVLogger, "log_metrics") as log_metrics:
        trainer.fit(Model())
    step_calls = [c for c in log_metrics.mock_calls if "v_step" in c.kwargs["metrics"]]
    # the sanity check logs nothing; the second epoch's validation continues at step 2
    assert [(c.kwargs["metrics"]["v_step"], c.kwargs["step"]) for c in step_calls] == [
        (0.0, 0),
        (1.0, 1),
        (0.0, 2),
        (1.0, 3),
    ]
    assert "v_step" in trainer.logged_metrics and "v_step" not in trainer.callback_metrics


def test_fast_dev_run_logs_every_step(make_trainer):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("a", 2.0, on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(fast_dev_run=True, logger=True)
    trainer.fit(Model())
    assert trainer.log_every_n_steps == 1
    assert set(trainer.logged_metrics) == {"a_step", "a_epoch"}


def test_logging_a_name_twice_in_a_hook_with_other_options_is_refused(make_trainer):
    from fulmen.utilities import MisconfigurationException

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("foo", 1.0, prog_bar=False)
            self.log("foo", 1.0, prog_bar=True)
            return super().training_step(batch, batch_idx)

    with pytest.raises(MisconfigurationException, match=r"`self.log\(foo, ...\)` twice in `training_step`"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(Model())


def test_logging_a_name_twice_with_the_same_options_keeps_the_last_value(make_trainer):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("foo", 1.0, on_step=True, on_epoch=False)
            self.log("foo", 2.0, on_step=True, on_epoch=False)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(Model())
    assert trainer.callback_metrics["foo"] == 2.0


def test_after_validate_with_two_dataloaders_callback_metrics_hold_epoch_values_only(make_trainer):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("s", 1.0, on_step=True, on_epoch=False)
            self.log("b", 2.0, on_step=True, on_epoch=True)
            self.log("e", 3.0)
            self.log("n", 4.0, add_dataloader_idx=False)

        def on_validation_epoch_end(self):
            self.log("end", 5.0)

        def val_dataloader(self):
            return [DataLoader(RandomDataset(32, 4)), DataLoader(RandomDataset(32, 4))]

    trainer = make_trainer(limit_val_batches=2)
    trainer.validate(Model())
    # checked against Lightning 2.6: no `s`, no `*_step`; `b` is the epoch value under its plain name too
    assert sorted(trainer.callback_metrics) == [
        "b/dataloader_idx_0",
        "b/dataloader_idx_1",
        "b_epoch/dataloader_idx_0",
        "b_epoch/dataloader_idx_1",
        "e/dataloader_idx_0",
        "e/dataloader_idx_1",
        "end",
        "n",
    ]
    assert trainer.callback_metrics["b/dataloader_idx_1"] == 2.0


@pytest.mark.parametrize(("reduce_fx", "expected"), [(max, 1.0), (min, 0.0), (sum, 1.0)])
def test_pythons_min_max_sum_are_accepted_as_reduce_fx(make_trainer, reduce_fx, expected):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx), reduce_fx=reduce_fx)

    assert make_trainer(limit_val_batches=2).validate(Model()) == [{"v": expected}]

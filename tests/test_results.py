"""results.py, what self.log / self.log_dict record: defaults per hook, reduction, where the values end up."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import PossibleUserWarning


def _floats(metrics):
    return {k: float(v) for k, v in metrics.items()}


def _loader(length, batch_size):
    return DataLoader(RandomDataset(32, length), batch_size=batch_size)


def test_training_step_logs_on_step_by_default(make_trainer, memory_logger):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("a", float(batch_idx))
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(
        limit_train_batches=3, limit_val_batches=0, logger=memory_logger, log_every_n_steps=1
    )
    trainer.fit(Model())
    assert [m["a"] for m, _ in memory_logger.calls if "a" in m] == [0.0, 1.0, 2.0]
    assert float(trainer.callback_metrics["a"]) == 2.0
    assert "a_epoch" not in trainer.callback_metrics
    assert "a_step" not in trainer.callback_metrics


def test_on_step_and_on_epoch_give_step_and_epoch_keys(make_trainer, memory_logger):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("a", float(batch_idx), on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(
        limit_train_batches=4, limit_val_batches=0, logger=memory_logger, log_every_n_steps=1
    )
    trainer.fit(Model())
    metrics = _floats(trainer.callback_metrics)
    assert metrics["a_step"] == 3.0
    assert metrics["a_epoch"] == pytest.approx(1.5)
    assert metrics["a"] == pytest.approx(1.5)  # the latest value: the epoch mean after fit
    logged = _floats(trainer.logged_metrics)
    assert logged["a_step"] == 3.0 and logged["a_epoch"] == pytest.approx(1.5)
    assert [m["a_step"] for m, _ in memory_logger.calls if "a_step" in m] == [0.0, 1.0, 2.0, 3.0]
    assert [m["a_epoch"] for m, _ in memory_logger.calls if "a_epoch" in m] == [pytest.approx(1.5)]
    assert not any("a" in m for m, _ in memory_logger.calls)


def test_validation_step_logs_epoch_mean_by_default(make_trainer, memory_logger):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx))

    trainer = make_trainer(
        limit_train_batches=1, limit_val_batches=4, num_sanity_val_steps=0, logger=memory_logger
    )
    trainer.fit(Model())
    assert float(trainer.callback_metrics["v"]) == pytest.approx(1.5)
    assert "v_step" not in trainer.callback_metrics
    assert [m["v"] for m, _ in memory_logger.calls if "v" in m] == [pytest.approx(1.5)]


def test_train_epoch_hooks_log_on_epoch_by_default(make_trainer, memory_logger):
    class Model(BoringModel):
        def on_train_epoch_start(self):
            self.log("start", 1.0)

        def on_train_epoch_end(self):
            self.log("end", 2.0 + self.current_epoch)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.log("batch_end", float(batch_idx))

    trainer = make_trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=memory_logger, log_every_n_steps=1
    )
    trainer.fit(Model())
    assert [m["end"] for m, _ in memory_logger.calls if "end" in m] == [2.0, 3.0]
    assert [m["start"] for m, _ in memory_logger.calls if "start" in m] == [1.0, 1.0]
    assert [m["batch_end"] for m, _ in memory_logger.calls if "batch_end" in m] == [0.0, 1.0, 0.0, 1.0]
    assert float(trainer.callback_metrics["end"]) == 3.0


@pytest.mark.parametrize(
    ("length", "batch_size", "logged_sizes", "expected"),
    [
        pytest.param(5, 2, None, (0 * 2 + 1 * 2 + 2 * 1) / 5, id="inferred-batch-sizes-2-2-1"),
        pytest.param(3, 1, [1, 1, 3], (0 * 1 + 1 * 1 + 2 * 3) / 5, id="explicit-batch-sizes-1-1-3"),
    ],
)
def test_epoch_mean_is_weighted_by_batch_size(make_trainer, length, batch_size, logged_sizes, expected):
    class Model(BoringModel):
        def val_dataloader(self):
            return _loader(length, batch_size=batch_size)

        def validation_step(self, batch, batch_idx):
            explicit = {} if logged_sizes is None else {"batch_size": logged_sizes[batch_idx]}
            self.log("v", float(batch_idx), **explicit)

    results = make_trainer().validate(Model())
    assert results[0]["v"] == pytest.approx(expected)


def test_training_epoch_mean_is_weighted_by_batch_size(make_trainer):
    class Model(BoringModel):
        def train_dataloader(self):
            return _loader(5, batch_size=2)

        def training_step(self, batch, batch_idx):
            self.log("t", float(batch_idx), on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(limit_val_batches=0)
    trainer.fit(Model())
    assert float(trainer.callback_metrics["t"]) == pytest.approx(0.8)


@pytest.mark.parametrize(("reduce_fx", "expected"), [("sum", 6.0), ("min", 1.0), ("max", 3.0), ("mean", 2.0)])
def test_reduce_fx(make_trainer, reduce_fx, expected):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx + 1), reduce_fx=reduce_fx)

    results = make_trainer(limit_val_batches=3).validate(Model())
    assert results[0]["v"] == pytest.approx(expected)


def test_reduce_fx_accepts_torch_functions(make_trainer):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx + 1), reduce_fx=torch.max)

    results = make_trainer(limit_val_batches=3).validate(Model())
    assert results[0]["v"] == pytest.approx(3.0)


def test_log_dict_logs_every_entry(make_trainer):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log_dict({"x": 1.0, "y": torch.tensor(2.0)}, prog_bar=True)

    trainer = make_trainer(limit_val_batches=2)
    results = trainer.validate(Model())
    assert results == [{"x": 1.0, "y": 2.0}]
    assert _floats(trainer.progress_bar_metrics) == {"x": 1.0, "y": 2.0}


def test_prog_bar_and_logger_flags(make_trainer, memory_logger):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("shown", 1.0, prog_bar=True)
            self.log("hidden", 2.0)
            self.log("not_logged", 3.0, logger=False)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(
        limit_train_batches=2, limit_val_batches=0, logger=memory_logger, log_every_n_steps=1
    )
    trainer.fit(Model())
    assert _floats(trainer.progress_bar_metrics) == {"shown": 1.0}
    assert set(trainer.logged_metrics) == {"shown", "hidden"}
    assert {"shown", "hidden", "not_logged"} <= set(trainer.callback_metrics)
    assert not any("not_logged" in m for m, _ in memory_logger.calls)


def test_callback_metrics_after_fit_and_after_validate(make_trainer):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("train_loss", 5.0)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", 1.0 + batch_idx)

    model = Model()
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model)
    assert _floats(trainer.callback_metrics) == {"train_loss": 5.0, "val_loss": 1.5}

    trainer2 = make_trainer(limit_val_batches=3)
    results = trainer2.validate(model)
    assert results == [{"val_loss": pytest.approx(2.0)}]
    assert _floats(trainer2.callback_metrics) == {"val_loss": pytest.approx(2.0)}


def test_sanity_check_metrics_do_not_leak_into_callback_metrics(make_trainer):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", 100.0 if self.trainer.sanity_checking else 1.0)

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(Model())
    assert float(trainer.callback_metrics["val_loss"]) == 1.0


def test_test_returns_one_dict_per_dataloader(make_trainer):
    class Model(BoringModel):
        def test_step(self, batch, batch_idx):
            self.log("t", 4.0)

    assert make_trainer(limit_test_batches=2).test(Model()) == [{"t": 4.0}]


def test_multiple_val_dataloaders_get_suffixed_keys(make_trainer):
    seen = []

    class Model(BoringModel):
        def val_dataloader(self):
            return [_loader(2, 1), _loader(3, 1)]

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            seen.append((dataloader_idx, batch_idx))
            self.log("v", float(dataloader_idx + 1))

    trainer = make_trainer()
    results = trainer.validate(Model())
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert results == [{"v/dataloader_idx_0": 1.0}, {"v/dataloader_idx_1": 2.0}]
    assert _floats(trainer.callback_metrics) == {"v/dataloader_idx_0": 1.0, "v/dataloader_idx_1": 2.0}


def test_predict_returns_predict_step_outputs(make_trainer):
    class Model(BoringModel):
        def predict_dataloader(self):
            return _loader(5, 2)

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return batch.sum(dim=1) * 0 + batch_idx

    predictions = make_trainer().predict(Model())
    assert len(predictions) == 3
    assert [p.tolist() for p in predictions] == [[0.0, 0.0], [1.0, 1.0], [2.0]]


def test_predict_with_default_predict_step_calls_forward(make_trainer):
    model = BoringModel()
    loader = _loader(4, 2)
    predictions = make_trainer().predict(model, loader)
    assert len(predictions) == 2
    with torch.no_grad():
        expected = model(next(iter(loader)))
    torch.testing.assert_close(predictions[0], expected)


class _Accuracy(BoringModel):
    """Logs a torchmetrics BinaryAccuracy object; each batch is (predictions, targets)."""

    def __init__(self):
        super().__init__()
        import torchmetrics

        self.acc = torchmetrics.classification.BinaryAccuracy()

    def validation_step(self, batch, batch_idx):
        preds, target = batch
        self.acc(preds, target)
        # batch_size=1 on purpose: a per-batch mean would be wrong, the metric must be computed
        self.log("acc", self.acc, batch_size=1)


def _pairs(correct):
    preds = torch.ones(len(correct))
    target = torch.tensor([1.0 if c else 0.0 for c in correct])
    return DataLoader(TensorDataset(preds, target), batch_size=3)


def test_logging_a_torchmetrics_metric_computes_it_over_the_epoch(make_trainer):
    pytest.importorskip("torchmetrics")
    model = _Accuracy()
    trainer = make_trainer()
    # batches: [right, right, right], [wrong] -> 3/4 over the epoch (a mean of batch values: 1/2)
    assert trainer.validate(model, _pairs([True, True, True, False])) == [{"acc": 0.75}]


def test_a_logged_torchmetrics_metric_is_reset_after_the_epoch(make_trainer):
    pytest.importorskip("torchmetrics")
    model, trainer = _Accuracy(), make_trainer()
    assert trainer.validate(model, _pairs([True, True, True, False])) == [{"acc": 0.75}]
    # as Lightning 2.6, a second run only sees its own data (fulmen was: 0.5, the two runs accumulated)
    assert trainer.validate(model, _pairs([False, False, True, False])) == [{"acc": 0.25}]


@pytest.mark.parametrize(
    "hook", ["setup", "configure_optimizers", "on_fit_start", "on_train_end", "on_fit_end"]
)
def test_logging_in_a_forbidden_hook_names_the_hook(make_trainer, hook):
    class Model(BoringModel):
        pass

    base = getattr(BoringModel, hook)

    def logging_hook(self, *args, **kwargs):
        self.log("x", 1.0)
        return base(self, *args, **kwargs)

    setattr(Model, hook, logging_hook)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(Exception, match=hook):
        trainer.fit(Model())


def test_logging_a_tensor_with_several_elements_is_an_error(make_trainer):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("vector", torch.ones(3))

    with pytest.raises(Exception, match="vector"):
        make_trainer(limit_val_batches=1).validate(Model())


def test_log_every_n_steps_throttles_the_logger_but_not_callback_metrics(make_trainer, memory_logger):
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("s", float(batch_idx))
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            seen.append(float(self.trainer.callback_metrics["s"]))

    trainer = make_trainer(
        max_epochs=2, limit_train_batches=6, limit_val_batches=0, logger=memory_logger, log_every_n_steps=2
    )
    trainer.fit(Model())
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] * 2
    step_calls = [(m["s"], step) for m, step in memory_logger.calls if "s" in m]
    assert [value for value, _ in step_calls] == [1.0, 3.0, 5.0] * 2
    steps = [step for _, step in step_calls]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_epoch_level_metrics_reach_the_logger_with_an_epoch_key(make_trainer, memory_logger):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("t", 1.0, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            self.log("v", 2.0)

    trainer = make_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, logger=memory_logger
    )
    trainer.fit(Model())
    t_calls = [(m, step) for m, step in memory_logger.calls if "t" in m]
    v_calls = [(m, step) for m, step in memory_logger.calls if "v" in m]
    assert [m["epoch"] for m, _ in t_calls] == [0, 1]
    assert [m["epoch"] for m, _ in v_calls] == [0, 1]
    assert t_calls[0][1] is not None and t_calls[1][1] > t_calls[0][1]


def test_results_table_has_one_column_per_dataloader_under_its_header(make_trainer, capsys):
    """Parity with Lightning 2.6: the results table has one centred column per dataloader."""

    # Lightning 2.6 prints "Test metric | DataLoader 0 | DataLoader 1", each value centred under its header
    class Model(BoringModel):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("score", float(dataloader_idx + 1))

    loaders = [DataLoader(RandomDataset(32, 2)), DataLoader(RandomDataset(32, 2))]
    make_trainer().test(Model(), loaders)
    lines = capsys.readouterr().out.splitlines()
    header, row = lines[1], lines[3]
    assert header.split() == ["Test", "metric", "DataLoader", "0", "DataLoader", "1"]
    assert row.split() == ["score", "1.0", "2.0"]
    for value, title in (("1.0", "DataLoader 0"), ("2.0", "DataLoader 1")):
        centre = header.index(title) + len(title) / 2
        assert abs(row.index(value) + len(value) / 2 - centre) <= 1


def test_add_dataloader_idx_false_keeps_each_key_in_its_own_dataloader_dict(make_trainer):
    """Parity with Lightning 2.6: add_dataloader_idx=False keeps each dataloader's keys in its own dict."""

    class Model(BoringModel):
        def val_dataloader(self):
            return [DataLoader(RandomDataset(32, 2)), DataLoader(RandomDataset(32, 2))]

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log(f"v{dataloader_idx}", 1.0, add_dataloader_idx=False)

    results = make_trainer().validate(Model())
    assert results == [{"v0": 1.0}, {"v1": 1.0}]


def test_a_logged_metric_does_not_carry_sanity_check_batches_into_epoch_0(make_trainer) -> None:
    """Parity with Lightning 2.6: a logged metric object is reset after the sanity check."""
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


def test_after_test_callback_metrics_hold_no_step_values(make_trainer):
    """Parity with Lightning 2.6: after test, callback_metrics hold no step values."""
    # Lightning 2.6: ['test_loss', 'test_loss_epoch'] (no test_loss_step, no step-only key)
    trainer = make_trainer(limit_test_batches=2)
    trainer.test(_StepAndEpoch(), _loader(8, 2), verbose=False)
    assert sorted(trainer.callback_metrics) == ["test_loss", "test_loss_epoch"]


def test_after_fit_training_step_values_stay_and_validation_step_values_do_not(make_trainer):
    """Parity with Lightning 2.6: after fit, callback_metrics keep training step values, not validation's."""
    # Lightning 2.6 after fit: train_loss_step and train_steponly stay; val_loss_step and val_steponly do not
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(_StepAndEpoch(), _loader(8, 2), _loader(8, 2))
    assert sorted(trainer.callback_metrics) == [
        "train_loss",
        "train_loss_epoch",
        "train_loss_step",
        "train_steponly",
        "val_loss",
        "val_loss_epoch",
    ]


def test_callbacks_never_see_validation_step_values(make_trainer):
    """Parity with Lightning 2.6: callbacks never see validation step values in callback_metrics."""
    seen = []

    class Peek(L.Callback):
        def on_validation_batch_end(self, trainer, *args):
            seen.append(sorted(trainer.callback_metrics))

    trainer = make_trainer(limit_val_batches=1, callbacks=[Peek()])
    trainer.validate(_StepAndEpoch(), _loader(8, 2), verbose=False)
    assert seen == [[]]  # Lightning 2.6: empty during the epoch, epoch values after it


def test_several_dataloaders_put_the_index_after_the_step_epoch_suffix(make_trainer):
    """Parity with Lightning 2.6: the dataloader index comes after the _step/_epoch suffix."""
    # Lightning 2.6: x_epoch/dataloader_idx_0, never x/dataloader_idx_0_epoch
    trainer = make_trainer(limit_test_batches=1)
    results = trainer.test(_StepAndEpoch(), [_loader(8, 2), _loader(8, 2)], verbose=False)
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
    """Parity with Lightning 2.6: callback_metrics is one dict that keeps what a user writes into it."""
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(_StepAndEpoch(), _loader(8, 2), _loader(8, 2))
    trainer.callback_metrics["external"] = torch.tensor(3.0)
    assert trainer.callback_metrics is trainer.callback_metrics
    assert trainer.callback_metrics["external"] == 3.0 and "val_loss" in trainer.callback_metrics


def test_a_value_written_during_fit_reaches_a_monitoring_callback(make_trainer):
    """Parity with Lightning 2.6: a value written into callback_metrics during fit is monitored."""

    class Feed(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.callback_metrics["fed"] = torch.tensor(float(trainer.current_epoch))

    stop = L.callbacks.EarlyStopping(monitor="fed", mode="min", patience=0)
    trainer = make_trainer(max_epochs=5, limit_train_batches=1, limit_val_batches=0, callbacks=[Feed(), stop])
    trainer.fit(_StepAndEpoch(), _loader(8, 2))
    assert trainer.current_epoch == 2  # "fed" rose after epoch 0: patience 0 stops after the second epoch


def test_training_step_returning_none_warns_once_per_fit(make_trainer):
    """Parity with Lightning 2.6: a training_step returning None warns once per fit."""

    class Skips(BoringModel):
        def training_step(self, batch, batch_idx):
            return None

    with pytest.warns(UserWarning, match=r"`training_step` returned `None`") as record:
        make_trainer(limit_train_batches=3, limit_val_batches=0).fit(Skips(), _loader(8, 2))
    assert sum("returned `None`" in str(w.message) for w in record) == 1


def test_fewer_batches_than_log_every_n_steps_warns_when_logging(make_trainer, tmp_path):
    """Parity with Lightning 2.6: fewer batches than log_every_n_steps warns when a logger is on."""
    logger = L.loggers.CSVLogger(tmp_path)
    with pytest.warns(
        PossibleUserWarning, match=r"number of training batches \(4\) is smaller than the logging interval"
    ):
        make_trainer(logger=logger, limit_val_batches=0).fit(BoringModel(), _loader(8, 2))


def test_no_logging_interval_warning_without_a_logger(make_trainer, recwarn):
    """Parity with Lightning 2.6: no logging-interval warning without a logger."""
    make_trainer(limit_val_batches=0).fit(BoringModel(), _loader(8, 2))
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
    """Parity with Lightning 2.6: self.log of a value it cannot log names the call and the type."""
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
    """Parity with Lightning 2.6: self.log with a reserved name or options that cannot work is refused."""
    from fulmen.utilities import MisconfigurationException

    with pytest.raises(MisconfigurationException, match=match):
        make_trainer(max_steps=1, limit_val_batches=0).fit(_logs_in_training_step(name, 1.0, **log_kwargs))


def test_a_name_carrying_the_dataloader_index_is_kept_with_add_dataloader_idx_false(make_trainer):
    """Parity with Lightning 2.6: add_dataloader_idx=False allows a name with a dataloader index."""
    trainer = make_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(_logs_in_training_step("foo/dataloader_idx_0", 2.0, add_dataloader_idx=False))
    assert trainer.callback_metrics["foo/dataloader_idx_0"] == 2.0


def test_a_metric_the_module_does_not_hold_is_refused_naming_the_fix(make_trainer):
    """Parity with Lightning 2.6: logging a metric object the module does not hold names the fix."""
    torchmetrics = pytest.importorskip("torchmetrics")
    from fulmen.utilities import MisconfigurationException

    model = _logs_in_training_step("foo", torchmetrics.classification.BinaryAccuracy())
    with pytest.raises(MisconfigurationException, match="by setting an attribute for the metric in your"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(model)


def test_a_metric_not_among_the_module_attributes_lists_the_candidates(make_trainer):
    """Parity with Lightning 2.6: that refusal lists the module's metric attributes."""
    torchmetrics = pytest.importorskip("torchmetrics")
    from fulmen.utilities import MisconfigurationException

    model = _logs_in_training_step("foo", torchmetrics.classification.BinaryAccuracy())
    model.bar = torchmetrics.classification.BinaryAccuracy()
    with pytest.raises(
        MisconfigurationException, match=r"metric_attribute=name\)` where `name` is one of \['bar'\]"
    ):
        make_trainer(max_steps=1, limit_val_batches=0).fit(model)


def test_a_metric_of_a_deep_copied_module_is_found(make_trainer):
    """Parity with Lightning 2.6: a deep-copied module's metric attributes are found."""
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
    """Parity with Lightning 2.6: evaluation step values are logged at each dataloader's own step."""
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
    """Parity with Lightning 2.6: validation step values in fit are logged at steps counting across epochs."""
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
    """Parity with Lightning 2.6: fast_dev_run logs every step."""

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("a", 2.0, on_step=True, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(fast_dev_run=True, logger=True)
    trainer.fit(Model())
    assert trainer.log_every_n_steps == 1
    assert set(trainer.logged_metrics) == {"a_step", "a_epoch"}


def test_logging_a_name_twice_in_a_hook_with_other_options_is_refused(make_trainer):
    """Parity with Lightning 2.6: logging one name twice in a hook with other options is refused."""
    from fulmen.utilities import MisconfigurationException

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("foo", 1.0, prog_bar=False)
            self.log("foo", 1.0, prog_bar=True)
            return super().training_step(batch, batch_idx)

    with pytest.raises(MisconfigurationException, match=r"`self.log\(foo, ...\)` twice in `training_step`"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(Model())


def test_logging_a_name_twice_with_the_same_options_keeps_the_last_value(make_trainer):
    """Parity with Lightning 2.6: logging one name twice with the same options keeps the last value."""

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("foo", 1.0, on_step=True, on_epoch=False)
            self.log("foo", 2.0, on_step=True, on_epoch=False)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(Model())
    assert trainer.callback_metrics["foo"] == 2.0


def test_after_validate_with_two_dataloaders_callback_metrics_hold_epoch_values_only(make_trainer):
    """Parity with Lightning 2.6: after validate with two dataloaders, callback_metrics hold epoch values."""

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
    """Parity with Lightning 2.6: Python's min, max and sum are accepted as reduce_fx."""

    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("v", float(batch_idx), reduce_fx=reduce_fx)

    assert make_trainer(limit_val_batches=2).validate(Model()) == [{"v": expected}]


def test_progress_bar_metrics_keep_keys_logged_in_earlier_epochs(make_trainer):
    """As Lightning: one dict per run; a key logged at one epoch's end stays shown in the next epochs."""

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            self.log("shared", 100.0, prog_bar=True, logger=False)
            return super().training_step(batch, batch_idx)

        def on_train_epoch_end(self):
            self.log_dict(
                {f"epoch_{self.current_epoch}": float(self.current_epoch), "shared": 111.0}, prog_bar=True
            )

    trainer = make_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(Model())
    assert trainer.progress_bar_metrics == {"shared": 111.0, "epoch_0": 0.0, "epoch_1": 1.0, "epoch_2": 2.0}


def test_callbacks_log_through_the_module_with_self_log(make_trainer):
    """As Lightning: every callback gets `log`/`log_dict` bound to the module's for the run."""

    class Logging(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.log("start", 1.0)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.log_dict({"batch_end": 3.0})

        def on_train_epoch_end(self, trainer, pl_module):
            self.log("epoch_end", 5.0)

    trainer = make_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[Logging()])
    trainer.fit(BoringModel())
    assert _floats(trainer.callback_metrics) == {"start": 1.0, "batch_end": 3.0, "epoch_end": 5.0}

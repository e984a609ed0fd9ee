"""results.py, what self.log / self.log_dict record: defaults per hook, reduction, where the values end up."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fulmen.demos import BoringModel, RandomDataset


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

"""checkpoint/: the checkpoint dict, safe loading, atomic and durable files, restoring every counter."""

import contextlib
import fractions
import functools
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen import checkpoint
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.demos import BoringModel, RandomDataset, RandomIterableDataset
from fulmen.utilities import MisconfigurationException

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


class LoggingModel(BoringModel):
    def __init__(self, lr: float = 0.1, sizes: tuple = (32, 2)) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.step(batch))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


@pytest.fixture
def ckpt_trainer(make_trainer):
    """make_trainer with checkpointing as the Trainer's default has it (None: on), 4 training and 2 validation
    batches."""
    return functools.partial(
        make_trainer, enable_checkpointing=None, limit_train_batches=4, limit_val_batches=2
    )


def _fitted(ckpt_trainer, **kwargs):
    model = LoggingModel()
    trainer = ckpt_trainer(**kwargs)
    trainer.fit(model)
    return model, trainer


# ------------------------------------------------------------------------------------------ contents
def test_checkpoint_has_lightning_top_level_keys(tmp_path, ckpt_trainer):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    expected = {
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "fulmen_version",
        "state_dict",
        "loops",
        "callbacks",
        "optimizer_states",
        "lr_schedulers",
        "hparams_name",
        "hyper_parameters",
        "rng_states",
    }
    assert expected <= set(ckpt)
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1  # saved after fit: the epoch is complete
    assert ckpt["hyper_parameters"] == {"lr": 0.1, "sizes": (32, 2)}
    assert ckpt["loops"]["fit_loop"]["epoch"] == 1


def test_weights_only_checkpoint_has_no_training_state(tmp_path, ckpt_trainer):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    ckpt = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert "optimizer_states" not in ckpt and "rng_states" not in ckpt
    assert set(ckpt["state_dict"]) == {"layer.weight", "layer.bias"}


def test_load_from_checkpoint_rebuilds_module_with_saved_and_overridden_hparams(tmp_path, ckpt_trainer):
    model, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    loaded = LoggingModel.load_from_checkpoint(tmp_path / "a.ckpt", lr=0.5)
    assert loaded.hparams.lr == 0.5 and loaded.hparams.sizes == (32, 2)
    assert torch.equal(loaded.layer.weight, model.layer.weight)


def test_object_added_in_on_save_checkpoint_raises_naming_the_key(tmp_path, ckpt_trainer):
    class AddsObject(BoringModel):
        def on_save_checkpoint(self, ckpt):
            ckpt["extra"] = {"when": fractions.Fraction(1, 3)}

    trainer = ckpt_trainer(enable_checkpointing=False, limit_train_batches=1)
    trainer.fit(AddsObject())
    with pytest.raises(
        MisconfigurationException, match=r"checkpoint\['extra'\]\['when'\] is a fractions.Fraction"
    ):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")


# ------------------------------------------------------------------------------------------ safe loading
class _Payload:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_runs_no_code(tmp_path, ckpt_trainer):
    marker = str(tmp_path / "code_ran")
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(checkpoint.UnsafeCheckpointError, match=r"evil\.ckpt.*add_safe_globals.*trusted=True"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.UnsafeCheckpointError):
        ckpt_trainer(enable_checkpointing=False).fit(BoringModel(), ckpt_path=path)
    assert not os.path.exists(marker)


def test_trusted_file_with_plain_python_objects_loads_with_explicit_opt_in(tmp_path):
    path = tmp_path / "trusted.ckpt"
    torch.save({"state_dict": {}, "ratio": fractions.Fraction(1, 3)}, path)
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="Fraction"):
        checkpoint.load(path)
    assert checkpoint.load(path, trusted=True)["ratio"] == fractions.Fraction(1, 3)


def test_truncated_checkpoint_is_reported_as_damaged_naming_the_file(tmp_path, ckpt_trainer):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    path = tmp_path / "cut.ckpt"
    trainer.save_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match=r"cut\.ckpt.*damaged or truncated"):
        checkpoint.load(path)


def test_missing_ckpt_path_fails_before_any_hook_runs(tmp_path, ckpt_trainer):
    calls = []

    class Recorder(BoringModel):
        def prepare_data(self):
            calls.append("prepare_data")

        def setup(self, stage):
            calls.append("setup")

    with pytest.raises(checkpoint.CheckpointError, match=r"nope\.ckpt.*does not exist"):
        ckpt_trainer().fit(Recorder(), ckpt_path=tmp_path / "nope.ckpt")
    assert calls == []


def test_ckpt_path_last_without_any_checkpoint_warns_and_trains_from_scratch(ckpt_trainer):
    trainer = ckpt_trainer(limit_val_batches=0)
    with pytest.warns(UserWarning, match="found no last checkpoint"):
        trainer.fit(BoringModel(), ckpt_path="last")
    assert trainer.global_step == 4


# ------------------------------------------------------------------------------------------ durable files
KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from fulmen import checkpoint

    path = sys.argv[1]
    checkpoint.atomic_save({"state_dict": {"w": torch.zeros(3)}, "version": 1}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    checkpoint.atomic_save({"state_dict": {"w": torch.ones(3)}, "version": 2}, path)
    """
)


@pytest.mark.slow
def test_process_killed_while_saving_leaves_previous_checkpoint_intact(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(KILL_DURING_SAVE)
    path = tmp_path / "model.ckpt"
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, str(script), str(path)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    ckpt = checkpoint.load(path)
    assert ckpt["version"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.zeros(3))
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert len(leftovers) == 1  # the half-written file of the killed process
    checkpoint.atomic_save({"state_dict": {}}, str(tmp_path / "other.ckpt"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # cleaned by the next save


def test_fsspec_memory_url_save_load_and_resume(tmp_path, ckpt_trainer):
    pytest.importorskip("fsspec")
    model, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    url = "memory://fulmen-test/run/a.ckpt"
    trainer.save_checkpoint(url)
    loaded = LoggingModel.load_from_checkpoint(url)
    assert torch.equal(loaded.layer.weight, model.layer.weight)
    resumed = ckpt_trainer(enable_checkpointing=False, max_epochs=2)
    resumed.fit(LoggingModel(), ckpt_path=url)
    assert resumed.global_step == 8
    checkpoint.remove(url)
    assert not checkpoint.exists(url)


# ------------------------------------------------------------------------------------------ resume state
def test_resume_restores_epoch_step_scheduler_and_callback_state(tmp_path, ckpt_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=2, save_last=True)
    es = EarlyStopping(monitor="val_loss", patience=10, mode="max")
    model, trainer = _fitted(ckpt_trainer, max_epochs=2, callbacks=[mc, es])
    saved_best_k = {k: float(v) for k, v in mc.best_k_models.items()}

    mc2 = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=2, save_last=True)
    es2 = EarlyStopping(monitor="val_loss", patience=10, mode="max")
    seen = {}

    class Peek(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["epoch"], seen["step"] = trainer.current_epoch, trainer.global_step
            seen["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
            seen["sched"] = trainer.lr_scheduler_configs[0].scheduler.last_epoch
            seen["best_k"] = {k: float(v) for k, v in mc2.best_k_models.items()}
            seen["es"] = (es2.wait_count, float(es2.best_score))

    trainer2 = ckpt_trainer(max_epochs=3, callbacks=[mc2, es2, Peek()])
    trainer2.fit(LoggingModel(), ckpt_path=mc.last_model_path)
    assert seen["epoch"] == 2 and seen["step"] == 8
    assert seen["sched"] == 2 and seen["lr"] == pytest.approx(0.1 * 0.5**2)
    assert seen["best_k"] == saved_best_k
    assert seen["es"] == (es.wait_count, float(es.best_score))
    assert trainer2.global_step == 12 and trainer2.current_epoch == 3


def test_legacy_resume_from_checkpoint_flag_resumes(tmp_path, ckpt_trainer):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.warns(DeprecationWarning):
        legacy = ckpt_trainer(max_epochs=2, resume_from_checkpoint=str(tmp_path / "a.ckpt"))
    legacy.fit(LoggingModel())
    assert legacy.global_step == 8


def test_mid_epoch_resume_skips_trained_batches_without_reading_them(tmp_path, ckpt_trainer, interrupt_at):
    reads = []

    class Counting(RandomDataset):
        def __getitem__(self, index):
            reads.append(index)
            return super().__getitem__(index)

    data = Counting(32, 8)
    loader = DataLoader(data, batch_size=2, shuffle=True)
    trainer = ckpt_trainer(
        enable_checkpointing=False, limit_train_batches=None, callbacks=[interrupt_at(0, 2)]
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(BoringModel(), train_dataloaders=loader)
    first_epoch_order = list(reads)
    reads.clear()
    trainer = ckpt_trainer(enable_checkpointing=False, limit_train_batches=None)
    trainer.fit(BoringModel(), train_dataloaders=loader, ckpt_path=tmp_path / "mid.ckpt")
    assert len(reads) == 2  # only the one batch left was read
    assert sorted(first_epoch_order + reads) == list(range(8))  # the same permutation, continued


def _interrupt_mid_epoch(ckpt_trainer, interrupt_at, loader):
    """Fit until the end of batch 1, which writes mid.ckpt; returns a fresh trainer to resume with."""
    trainer = ckpt_trainer(enable_checkpointing=False, limit_train_batches=4, callbacks=[interrupt_at(0, 1)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(BoringModel(), train_dataloaders=loader)
    return ckpt_trainer(enable_checkpointing=False, limit_train_batches=4)


def test_mid_epoch_resume_of_an_iterable_dataset_warns_that_batches_are_replayed(
    tmp_path, ckpt_trainer, interrupt_at
):
    loader = DataLoader(RandomIterableDataset(32, 16), batch_size=2)
    trainer = _interrupt_mid_epoch(ckpt_trainer, interrupt_at, loader)
    with pytest.warns(UserWarning, match=r"IterableDataset.*reads and discards the 2 batches"):
        trainer.fit(BoringModel(), train_dataloaders=loader, ckpt_path=tmp_path / "mid.ckpt")
    assert trainer.global_step == 4


def test_mid_epoch_resume_with_custom_sampler_without_state_dict_warns(tmp_path, ckpt_trainer, interrupt_at):
    class MySampler(torch.utils.data.Sampler):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(torch.randperm(self.n).tolist())

        def __len__(self):
            return self.n

    loader = DataLoader(RandomDataset(32, 16), batch_size=2, sampler=MySampler(16))
    trainer = _interrupt_mid_epoch(ckpt_trainer, interrupt_at, loader)
    with pytest.warns(UserWarning, match=r"MySampler has no `state_dict`/`load_state_dict`"):
        trainer.fit(BoringModel(), train_dataloaders=loader, ckpt_path=tmp_path / "mid.ckpt")


def test_resume_hook_order_restores_module_and_callbacks_before_configure_optimizers(tmp_path, ckpt_trainer):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    calls = []

    class Recording(LoggingModel):
        def on_load_checkpoint(self, ckpt):
            calls.append("module.on_load_checkpoint")

        def configure_optimizers(self):
            calls.append("configure_optimizers")
            return super().configure_optimizers()

        def on_fit_start(self):
            calls.append("on_fit_start")

    class Cb(L.Callback):
        def on_load_checkpoint(self, trainer, pl_module, ckpt):
            calls.append("callback.on_load_checkpoint")

    ckpt_trainer(max_epochs=2, callbacks=[Cb()]).fit(Recording(), ckpt_path=tmp_path / "a.ckpt")
    assert calls == [
        "module.on_load_checkpoint",
        "callback.on_load_checkpoint",
        "configure_optimizers",
        "on_fit_start",
    ]


class _DropoutModel(BoringModel):
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def training_step(self, batch, batch_idx):
        return self.loss(self.layer(self.drop(batch)))

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.step(batch))


def _train_shuffled(ckpt_trainer, folder, callbacks=(), ckpt_path=None):
    L.seed_everything(11, verbose=False)
    model = _DropoutModel()
    loader = DataLoader(RandomDataset(32, 12), batch_size=3, shuffle=True)
    val = DataLoader(RandomDataset(32, 4), batch_size=2)
    trainer = ckpt_trainer(
        default_root_dir=folder, max_epochs=2, limit_train_batches=None, callbacks=list(callbacks)
    )
    trainer.fit(model, loader, val, ckpt_path=ckpt_path)
    return model


def test_resume_from_checkpoint_saved_after_the_epochs_last_batch_is_exact(tmp_path, ckpt_trainer):
    class SaveAfterValidation(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking and trainer.current_epoch == 0:
                trainer.save_checkpoint(tmp_path / "val_end.ckpt")
                raise KeyboardInterrupt

    reference = _train_shuffled(ckpt_trainer, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _train_shuffled(ckpt_trainer, tmp_path / "run", [SaveAfterValidation()])
    assert torch.load(tmp_path / "val_end.ckpt", weights_only=True)["loops"]["fit_loop"]["epoch_batches"] == 4
    resumed = _train_shuffled(ckpt_trainer, tmp_path / "run", ckpt_path=tmp_path / "val_end.ckpt")
    assert torch.equal(reference.layer.weight, resumed.layer.weight)


def test_checkpoint_hooks_of_module_datamodule_and_callback_add_and_read_entries(tmp_path, ckpt_trainer):
    from fulmen.demos import BoringDataModule

    loaded = {}

    class Model(BoringModel):
        def on_save_checkpoint(self, ckpt):
            ckpt["module_extra"] = torch.tensor([1.0, 2.0])

        def on_load_checkpoint(self, ckpt):
            loaded["module"] = ckpt["module_extra"].tolist()

    class DM(BoringDataModule):
        def __init__(self, batch_size: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.reads = 0

        def state_dict(self):
            return {"reads": 7}

        def load_state_dict(self, state):
            self.reads = state["reads"]

        def on_save_checkpoint(self, ckpt):
            ckpt["dm_extra"] = "hello"

        def on_load_checkpoint(self, ckpt):
            loaded["dm"] = ckpt["dm_extra"]

    class Cb(L.Callback):
        def state_dict(self):
            return {"count": 3}

        def load_state_dict(self, state):
            loaded["cb_state"] = state["count"]

        def on_save_checkpoint(self, trainer, pl_module, ckpt):
            ckpt["cb_extra"] = [1, 2]

        def on_load_checkpoint(self, trainer, pl_module, ckpt):
            loaded["cb"] = ckpt["cb_extra"]

    trainer = ckpt_trainer(enable_checkpointing=False, callbacks=[Cb()])
    trainer.fit(Model(), datamodule=DM())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    dm = DM()
    ckpt_trainer(enable_checkpointing=False, max_epochs=2, callbacks=[Cb()]).fit(
        Model(), datamodule=dm, ckpt_path=tmp_path / "a.ckpt"
    )
    assert loaded == {"module": [1.0, 2.0], "dm": "hello", "cb_state": 3, "cb": [1, 2]}
    assert dm.reads == 7
    rebuilt = DM.load_from_checkpoint(tmp_path / "a.ckpt", batch_size=4)
    assert rebuilt.hparams.batch_size == 4 and rebuilt.reads == 7


def test_precision_state_such_as_a_grad_scaler_is_saved_and_restored(tmp_path, ckpt_trainer):
    from fulmen.precision import Precision

    class ScalingPrecision(Precision):
        def __init__(self):
            self.scale = 1.0

        def state_dict(self):
            return {"scale": self.scale}

        def load_state_dict(self, state):
            self.scale = state["scale"]

    precision = ScalingPrecision()
    trainer = ckpt_trainer(enable_checkpointing=False, precision=precision)
    trainer.fit(LoggingModel())
    precision.scale = 512.0
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["ScalingPrecision"] == {"scale": 512.0}
    restored = ScalingPrecision()
    ckpt_trainer(enable_checkpointing=False, max_epochs=2, precision=restored).fit(
        LoggingModel(), ckpt_path=tmp_path / "a.ckpt"
    )
    assert restored.scale == 512.0


def _lightning_loops(epoch_started, epoch_processed, batch_processed, batch_completed, stepped, total):
    """The loop progress of a Lightning 2.6 checkpoint (the parts fulmen reads), as Lightning writes it."""
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_progress": {
                "current": {
                    "ready": epoch_started,
                    "started": epoch_started,
                    "processed": epoch_processed,
                    "completed": epoch_processed - (epoch_started == epoch_processed),
                },
            },
            "epoch_loop.batch_progress": {
                "current": {
                    "ready": batch_processed,
                    "started": batch_processed,
                    "processed": batch_processed,
                    "completed": batch_completed,
                },
                "total": {"ready": total, "started": total, "processed": total, "completed": total - 1},
                "is_last_batch": False,
            },
            "epoch_loop.state_dict": {"_batches_that_stepped": stepped},
        }
    }


@pytest.mark.parametrize(
    ("loops", "global_step", "expected_first_batch"),
    [
        # saved in on_train_batch_end of epoch 1, batch 2 (5 batches per epoch)
        (_lightning_loops(2, 1, 3, 2, stepped=7, total=8), 8, (1, 3, 8, 8)),
        # saved in on_train_epoch_end of epoch 1 (schedulers already stepped by Lightning)
        (_lightning_loops(2, 2, 5, 5, stepped=10, total=10), 10, (2, 0, 10, 10)),
    ],
)
def test_checkpoint_written_by_lightning_resumes_at_its_position(
    tmp_path, ckpt_trainer, loops, global_step, expected_first_batch
):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False, limit_train_batches=5)
    ckpt = checkpoint.dump(trainer)
    for key in ("fulmen_version", "rng_states"):
        ckpt.pop(key)
    ckpt.update(loops=loops, global_step=global_step)
    torch.save(ckpt, tmp_path / "lightning.ckpt")
    first = []

    class Peek(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            p = trainer._progress
            first.append((trainer.current_epoch, batch_idx, trainer.global_step, p.batches_that_stepped))

    resumed = ckpt_trainer(
        enable_checkpointing=False, max_epochs=3, limit_train_batches=5, callbacks=[Peek()]
    )
    mid_epoch = (
        expected_first_batch[1] > 0
    )  # no epoch-start record: batches are read and skipped, with a warning
    with pytest.warns(UserWarning, match="does not record where") if mid_epoch else contextlib.nullcontext():
        resumed.fit(LoggingModel(), ckpt_path=tmp_path / "lightning.ckpt")
    assert first[0] == expected_first_batch
    assert resumed.global_step == 15


def test_load_from_checkpoint_takes_hyper_parameters_from_an_hparams_file(tmp_path, ckpt_trainer):
    _, trainer = _fitted(ckpt_trainer, enable_checkpointing=False)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    (tmp_path / "hparams.yaml").write_text("lr: 0.25\nsizes: [32, 2]\n")
    loaded = LoggingModel.load_from_checkpoint(tmp_path / "a.ckpt", hparams_file=tmp_path / "hparams.yaml")
    assert loaded.hparams.lr == 0.25 and list(loaded.hparams.sizes) == [32, 2]


def test_each_callback_state_dict_is_asked_once_per_save(tmp_path):
    """A callback's state_dict may be costly or counted (Lightning's recorded-hook tests count it): once per file."""
    calls = []

    class Stateful(L.Callback):
        def state_dict(self):
            calls.append("state_dict")
            return {"n": len(calls)}

    stateful = Stateful()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[stateful],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    trainer.save_checkpoint(tmp_path / "again.ckpt")
    assert calls == ["state_dict", "state_dict"]  # the epoch-end checkpoint, then the explicit one
    saved = torch.load(tmp_path / "again.ckpt", weights_only=True)
    assert saved["callbacks"][stateful.state_key] == {"n": 2}

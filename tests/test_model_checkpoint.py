"""ModelCheckpoint: when and where it saves, file names, top-k bookkeeping, last.ckpt."""

import functools
import os

import pytest
import torch

import fulmen as L
from fulmen.callbacks import ModelCheckpoint
from fulmen.demos import BoringModel
from fulmen.loggers import CSVLogger
from fulmen.utilities import MisconfigurationException


class ScoredModel(BoringModel):
    """Logs `score` = a fixed value per epoch, so the top-k ranking is known in advance."""

    def __init__(self, scores=(0.5, 0.2, 0.9, 0.1)):
        super().__init__()
        self.scores = scores

    def validation_step(self, batch, batch_idx):
        self.log("score", self.scores[min(self.current_epoch, len(self.scores) - 1)])


@pytest.fixture
def mc_trainer(make_trainer):
    """make_trainer with checkpointing as the Trainer's default has it (None: on), 4 epochs of 2 training
    batches and 1 validation batch, no sanity check."""
    options = dict(max_epochs=4, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    return functools.partial(make_trainer, enable_checkpointing=None, **options)


def _files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".ckpt"))


def test_checkpointing_is_on_by_default_under_the_loggers_version_folder(tmp_path, mc_trainer):
    trainer = mc_trainer(max_epochs=2, logger=CSVLogger(tmp_path, name="runs"))
    trainer.fit(BoringModel())
    folder = os.path.join(tmp_path, "runs", "version_0", "checkpoints")
    assert trainer.checkpoint_callback.dirpath == os.path.realpath(folder)
    assert _files(folder) == ["epoch=1-step=4.ckpt"]  # top-1 without monitor keeps the latest


def test_default_folder_without_logger_is_root_checkpoints(tmp_path, mc_trainer):
    trainer = mc_trainer(max_epochs=1)
    trainer.fit(BoringModel())
    assert _files(tmp_path / "checkpoints") == ["epoch=0-step=2.ckpt"]


def test_filename_template_inserts_metric_names_and_formats():
    mc = ModelCheckpoint(dirpath="/ckpts", filename="{epoch}-{val_loss:.2f}")
    metrics = {"epoch": torch.tensor(2), "val_loss": torch.tensor(0.0234)}
    assert mc.format_checkpoint_name(metrics) == "/ckpts/epoch=2-val_loss=0.02.ckpt"


def test_filename_template_without_metric_names_and_with_slashes_and_version():
    mc = ModelCheckpoint(
        dirpath="/ckpts", filename="e{epoch:02d}-{val/acc:.1f}", auto_insert_metric_name=False
    )
    metrics = {"epoch": 3, "val/acc": 0.87}
    assert mc.format_checkpoint_name(metrics, ver=2) == "/ckpts/e03-0.9-v2.ckpt"


def test_missing_template_metric_is_written_as_zero():
    mc = ModelCheckpoint(dirpath="/c", filename="{epoch}-{nope}")
    assert mc.format_checkpoint_name({"epoch": 1}) == "/c/epoch=1-nope=0.ckpt"


def test_save_top_k_keeps_the_best_k_by_monitor_with_min_mode(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-{score:.1f}", monitor="score", save_top_k=2)
    mc_trainer(callbacks=[mc]).fit(ScoredModel())
    assert _files(tmp_path) == ["epoch=1-score=0.2.ckpt", "epoch=3-score=0.1.ckpt"]
    assert mc.best_model_path == str(tmp_path / "epoch=3-score=0.1.ckpt")
    assert float(mc.best_model_score) == pytest.approx(0.1)
    assert mc.kth_best_model_path == str(tmp_path / "epoch=1-score=0.2.ckpt")
    assert {os.path.basename(k): round(float(v), 3) for k, v in mc.best_k_models.items()} == {
        "epoch=1-score=0.2.ckpt": 0.2,
        "epoch=3-score=0.1.ckpt": 0.1,
    }


def test_save_top_k_with_max_mode_and_all_kept(tmp_path, mc_trainer):
    best = ModelCheckpoint(dirpath=tmp_path / "max", monitor="score", mode="max")
    every = ModelCheckpoint(dirpath=tmp_path / "all", monitor="score", save_top_k=-1)
    mc_trainer(callbacks=[best, every]).fit(ScoredModel())
    assert _files(tmp_path / "max") == ["epoch=2-step=6.ckpt"]
    assert len(_files(tmp_path / "all")) == 4


def test_save_last_writes_last_ckpt_that_resumes(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    mc_trainer(max_epochs=2, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["last.ckpt"]
    assert mc.last_model_path == str(tmp_path / "last.ckpt")
    assert torch.load(mc.last_model_path, weights_only=True)["global_step"] == 4


def test_save_last_link_points_at_the_newest_checkpoint(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, save_last="link")
    mc_trainer(max_epochs=2, callbacks=[mc]).fit(BoringModel())
    last = tmp_path / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch=1-step=4.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_every_n_train_steps_saves_at_those_steps(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    mc_trainer(max_epochs=4, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["epoch=1-step=3.ckpt", "epoch=2-step=6.ckpt"]


def test_every_n_epochs_saves_every_other_epoch(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1)
    mc_trainer(max_epochs=4, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"]


def test_existing_file_gets_a_version_suffix(tmp_path, mc_trainer):
    (tmp_path / "epoch=0-step=2.ckpt").write_bytes(b"someone else's file")
    mc = ModelCheckpoint(dirpath=tmp_path)
    mc_trainer(max_epochs=1, callbacks=[mc]).fit(BoringModel())
    assert mc.best_model_path == str(tmp_path / "epoch=0-step=2-v1.ckpt")
    assert (tmp_path / "epoch=0-step=2.ckpt").read_bytes() == b"someone else's file"


def test_save_weights_only_files_hold_no_optimizer_state(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    mc_trainer(max_epochs=1, callbacks=[mc]).fit(BoringModel())
    ckpt = torch.load(mc.best_model_path, weights_only=True)
    assert "optimizer_states" not in ckpt and "state_dict" in ckpt


def test_monitor_that_was_never_logged_is_an_error_listing_logged_metrics(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    with pytest.raises(MisconfigurationException, match=r"'val_acc'.*\['score'\]"):
        mc_trainer(callbacks=[mc]).fit(ScoredModel())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "avg"}, "`mode` can be 'min' or 'max' but got avg"),
        ({"save_top_k": 3}, "no quantity to rank"),
        ({"save_top_k": -2}, r"save_top_k=-2\) is not valid. Must be >= -1"),
        ({"every_n_epochs": -3}, r"every_n_epochs=-3\) is not valid. Must be >= 0"),
        ({"every_n_train_steps": -1}, r"every_n_train_steps=-1\) is not valid. Must be >= 0"),
        ({"every_n_train_steps": 2, "every_n_epochs": 1}, "Combination of parameters every_n_train_steps"),
        ({"save_last": "yes"}, "save_last='yes'"),
    ],
)
def test_invalid_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        ModelCheckpoint(**kwargs)


def test_best_checkpoint_is_used_by_ckpt_path_best(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="score", mode="max")
    trainer = mc_trainer(callbacks=[mc])
    trainer.fit(ScoredModel())
    trainer.validate(ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == str(tmp_path / "epoch=2-step=6.ckpt")


def test_state_key_distinguishes_configurations():
    a = ModelCheckpoint(monitor="a")
    b = ModelCheckpoint(monitor="b", mode="max")
    assert a.state_key != b.state_key and a.state_key.startswith("ModelCheckpoint{")


def test_train_time_interval_saves_once_the_interval_has_passed(tmp_path, mc_trainer):
    import datetime

    mc = ModelCheckpoint(dirpath=tmp_path, train_time_interval=datetime.timedelta(0), save_top_k=-1)
    mc_trainer(max_epochs=1, limit_train_batches=3, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]


def test_restoring_state_from_another_folder_keeps_only_best_model_path(tmp_path):
    old = ModelCheckpoint(dirpath=tmp_path / "old", monitor="score")
    old.best_model_path, old.best_model_score = "/old/best.ckpt", torch.tensor(0.5)
    new = ModelCheckpoint(dirpath=tmp_path / "new", monitor="score")
    with pytest.warns(UserWarning, match="The dirpath has changed from"):
        new.load_state_dict(old.state_dict())
    assert new.best_model_path == "/old/best.ckpt" and new.best_model_score is None


def test_monitor_missing_before_the_first_validation_only_warns(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="score", every_n_train_steps=1)
    trainer = mc_trainer(max_epochs=1, limit_train_batches=2, callbacks=[mc])
    with pytest.warns(UserWarning, match="validation has not run yet"):
        trainer.fit(ScoredModel())
    assert _files(tmp_path) == []


def test_ckpt_path_last_finds_the_previous_runs_file_in_another_logger_version(tmp_path, mc_trainer):
    def run(max_epochs, ckpt_path=None):
        trainer = mc_trainer(
            max_epochs=max_epochs,
            logger=CSVLogger(tmp_path),
            callbacks=[ModelCheckpoint(save_last=True)],
        )
        trainer.fit(BoringModel(), ckpt_path=ckpt_path)
        return trainer

    run(1)
    with pytest.warns(UserWarning, match="The dirpath has changed from"):  # a new run writes to version_1
        resumed = run(2, ckpt_path="last")  # ... and finds the file in version_0
    assert resumed.ckpt_path == os.path.realpath(
        tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    )
    assert resumed.global_step == 4


def test_fsspec_url_as_dirpath_keeps_top_k_and_last(mc_trainer):
    fsspec = pytest.importorskip("fsspec")
    mc = ModelCheckpoint(dirpath="memory://fulmen-mc/run", monitor="score", save_top_k=1, save_last=True)
    mc_trainer(callbacks=[mc]).fit(ScoredModel())
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("/fulmen-mc/run", detail=False)) == [
        "epoch=3-step=8.ckpt",
        "last.ckpt",
    ]
    assert mc.best_model_path == "memory://fulmen-mc/run/epoch=3-step=8.ckpt"
    fs.rm("/fulmen-mc", recursive=True)


# ------------------------------------------------------------------ what it may delete (issue 13 item 1)
def test_resuming_keeps_the_checkpoint_it_resumed_from(tmp_path, mc_trainer):
    """A second run in a new version folder, resumed from the first run's file, must not delete that file."""
    first = mc_trainer(max_epochs=1, logger=CSVLogger(tmp_path), limit_val_batches=0)
    first.fit(BoringModel())
    source = first.checkpoint_callback.best_model_path
    assert os.path.basename(os.path.dirname(os.path.dirname(source))) == "version_0"

    second = mc_trainer(max_epochs=3, logger=CSVLogger(tmp_path), limit_val_batches=0)
    second.fit(BoringModel(), ckpt_path=source)
    assert os.path.isfile(source)
    assert sorted(os.listdir(os.path.dirname(source))) == ["epoch=0-step=2.ckpt"]
    new_folder = os.path.dirname(second.checkpoint_callback.best_model_path)
    assert sorted(os.listdir(new_folder)) == ["epoch=2-step=6.ckpt"]


def test_resuming_in_the_same_folder_keeps_the_source_but_replaces_the_runs_other_files(tmp_path, mc_trainer):
    folder = tmp_path / "ckpts"
    first = mc_trainer(max_epochs=2, callbacks=[ModelCheckpoint(dirpath=folder, save_last=True)])
    first.fit(BoringModel())
    assert sorted(os.listdir(folder)) == ["epoch=1-step=4.ckpt", "last.ckpt"]

    source = str(folder / "epoch=1-step=4.ckpt")
    second = mc_trainer(max_epochs=4, callbacks=[ModelCheckpoint(dirpath=folder, save_last=True)])
    second.fit(BoringModel(), ckpt_path=source)
    # the resume source stays; the run's own later files replace each other as usual
    assert sorted(os.listdir(folder)) == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt", "last.ckpt"]


def test_a_file_outside_its_folder_is_never_deleted(tmp_path, mc_trainer):
    outside = tmp_path / "elsewhere.ckpt"
    outside.write_bytes(b"not ours")
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts")
    trainer = mc_trainer(max_epochs=2, callbacks=[cb])
    cb.best_model_path = str(outside)  # e.g. restored from a checkpoint of another folder
    trainer.fit(BoringModel())
    assert outside.read_bytes() == b"not ours"


# ------------------------------------------------------------------ Lightning options (issue 14)
def test_every_n_train_steps_with_every_n_epochs_zero_is_accepted(tmp_path, mc_trainer):
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, every_n_epochs=0, save_top_k=-1)
    mc_trainer(max_epochs=2, limit_train_batches=4, callbacks=[cb]).fit(BoringModel())
    assert sorted(os.listdir(tmp_path)) == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]


def test_two_nonzero_triggers_are_still_rejected():
    with pytest.raises(MisconfigurationException, match="mutually exclusive"):
        ModelCheckpoint(every_n_train_steps=3, every_n_epochs=1)


class _Fails(BoringModel):
    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            raise ValueError("boom")
        return super().training_step(batch, batch_idx)


def test_save_on_exception_writes_a_checkpoint_of_the_failing_step(tmp_path, mc_trainer):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_on_exception=True)
    trainer = mc_trainer(limit_val_batches=0, callbacks=[cb])
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(_Fails())
    assert sorted(os.listdir(tmp_path / "ckpts")) == ["epoch=0-step=2.ckpt", "epoch=1-step=3.ckpt"]
    saved = torch.load(tmp_path / "ckpts" / "epoch=1-step=3.ckpt", weights_only=True)
    assert saved["global_step"] == 3


def test_without_save_on_exception_nothing_extra_is_saved(tmp_path, mc_trainer):
    trainer = mc_trainer(limit_val_batches=0, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpts")])
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(_Fails())
    assert sorted(os.listdir(tmp_path / "ckpts")) == ["epoch=0-step=2.ckpt"]


def test_saves_go_through_an_overridden_trainer_save_checkpoint(tmp_path, mc_trainer):
    calls = []

    class MyTrainer(L.Trainer):
        def save_checkpoint(self, filepath, weights_only=False, storage_options=None):
            calls.append((os.path.basename(filepath), weights_only))
            super().save_checkpoint(filepath, weights_only, storage_options)

    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_weights_only=True, save_last=True)
    trainer = mc_trainer(MyTrainer, max_epochs=2, limit_val_batches=0, callbacks=[cb])
    trainer.fit(BoringModel())
    assert calls == [
        ("epoch=0-step=2.ckpt", True),
        ("last.ckpt", True),
        ("epoch=1-step=4.ckpt", True),
        ("last.ckpt", True),
    ]


def test_saves_go_through_a_save_checkpoint_patched_on_the_instance(tmp_path, mc_trainer):
    trainer = mc_trainer(max_epochs=1, limit_val_batches=0, callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    real = trainer.save_checkpoint
    calls = []

    def spy(filepath, weights_only=False, storage_options=None):
        calls.append(os.path.basename(filepath))
        real(filepath, weights_only, storage_options)

    trainer.save_checkpoint = spy
    trainer.fit(BoringModel())
    assert calls == ["epoch=0-step=2.ckpt"]


# ------------------------------------------------------------------ announced paths (issue 12)
@pytest.fixture
def slow_writes(monkeypatch):
    """Every background checkpoint write takes 0.3 s."""
    import time

    from fulmen.checkpoint import files as checkpoint

    real = checkpoint._write_atomically

    def slow(path, write):
        time.sleep(0.3)
        real(path, write)

    monkeypatch.setattr(checkpoint, "_write_atomically", slow)


def test_an_announced_path_names_a_complete_file_in_the_next_hook(tmp_path, mc_trainer, slow_writes):
    seen = []

    class Copy(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            cb = trainer.checkpoint_callback
            for path in [cb.best_model_path, cb.last_model_path, *cb.best_k_models]:
                if path:
                    seen.append(torch.load(path, weights_only=True)["global_step"])

    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_last=True, save_top_k=2, monitor="score")
    mc_trainer(max_epochs=3, callbacks=[Copy(), cb]).fit(ScoredModel())
    # epoch 1 starts with epoch 0's files (best, last, top-k), epoch 2 with epoch 1's
    assert seen == [2, 2, 2, 4, 4, 2, 4]


def test_save_last_does_not_wait_for_the_top_k_write(tmp_path, mc_trainer, slow_writes):
    import time

    durations = []

    class Clock(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module):
            if hasattr(self, "t0"):
                durations.append(time.perf_counter() - self.t0)

    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    mc_trainer(max_epochs=3, limit_val_batches=0, callbacks=[Clock(), cb]).fit(BoringModel())
    assert len(durations) == 2
    assert max(durations) < 0.25  # two 0.3 s writes per epoch are queued, not waited for
    assert sorted(os.listdir(tmp_path / "c")) == ["epoch=2-step=6.ckpt", "last.ckpt"]


def test_save_last_link_is_made_off_the_training_thread_and_points_at_a_complete_file(
    tmp_path, mc_trainer, slow_writes
):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", save_last="link", save_top_k=-1)
    mc_trainer(max_epochs=2, limit_val_batches=0, callbacks=[cb]).fit(BoringModel())
    link = tmp_path / "c" / "last.ckpt"
    assert os.path.islink(link)
    assert os.readlink(link) == "epoch=1-step=4.ckpt"
    assert torch.load(link, weights_only=True)["global_step"] == 4


def test_a_failed_background_save_stops_the_run_at_the_next_step(tmp_path, mc_trainer, monkeypatch):
    import time

    from fulmen.checkpoint import files as checkpoint
    from fulmen.writer import BackgroundWriteError

    def disk_full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_atomically", disk_full)
    steps = []

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            steps.append(trainer.global_step)

    class Slow(BoringModel):
        def training_step(self, batch, batch_idx):
            time.sleep(0.1)  # the background write fails while this step runs
            return super().training_step(batch, batch_idx)

    cb = ModelCheckpoint(dirpath=tmp_path / "c", every_n_train_steps=2)
    trainer = mc_trainer(max_epochs=1, limit_train_batches=8, limit_val_batches=0, callbacks=[Count(), cb])
    with pytest.raises(BackgroundWriteError, match="No space left on device"):
        trainer.fit(Slow())
    # the save after step 2 failed in the background; the run stops at the end of the next step,
    # not at the next save (after step 4)
    assert steps == [0, 1, 2]


def test_every_n_epochs_is_public_and_defaults_to_one():
    assert ModelCheckpoint().every_n_epochs == 1
    assert ModelCheckpoint(every_n_epochs=3).every_n_epochs == 3
    assert ModelCheckpoint(every_n_train_steps=5).every_n_epochs == 0


def test_to_yaml_writes_best_k_models_that_read_back_as_floats(tmp_path, mc_trainer):
    import yaml

    mc = ModelCheckpoint(dirpath=tmp_path, monitor="score", save_top_k=2)
    mc_trainer(max_epochs=2, callbacks=[mc]).fit(ScoredModel(scores=(1e-5, 0.25)))
    mc.to_yaml(tmp_path / "best.yaml")
    with open(tmp_path / "best.yaml") as f:
        loaded = yaml.safe_load(f)
    assert loaded == {
        str(tmp_path / "epoch=0-step=2.ckpt"): pytest.approx(1e-5),
        str(tmp_path / "epoch=1-step=4.ckpt"): 0.25,
    }


def test_to_yaml_with_no_checkpoints_writes_an_empty_mapping(tmp_path):
    ModelCheckpoint(dirpath=tmp_path).to_yaml(tmp_path / "best.yaml")
    with open(tmp_path / "best.yaml") as f:
        import yaml

        assert yaml.safe_load(f) == {}


@pytest.mark.parametrize("barebones", [False, True])
def test_checkpoint_callback_with_checkpointing_disabled_is_an_error(tmp_path, barebones):
    flags = {"barebones": True} if barebones else {"enable_checkpointing": False}
    with pytest.raises(
        MisconfigurationException, match="`enable_checkpointing=False` but found `ModelCheckpoint`"
    ):
        L.Trainer(default_root_dir=tmp_path, callbacks=[ModelCheckpoint()], **flags)


def test_save_last_link_to_a_url_dirpath_is_refused_at_setup(tmp_path):
    mc = ModelCheckpoint(dirpath="memory://somewhere", save_last="link")
    with pytest.raises(ValueError, match="save_last='link'.* is only supported for local file paths"):
        mc.setup(L.Trainer(default_root_dir=tmp_path, logger=False), BoringModel(), "fit")


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("no", False), ("link", "link")])
def test_save_last_annotation_parses_from_the_command_line(text, expected):
    from inspect import signature

    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--save_last", type=signature(ModelCheckpoint).parameters["save_last"].annotation)
    assert parser.parse_args(["--save_last", text]).save_last == expected


@pytest.mark.parametrize("every_n_epochs", [0, 5])
def test_save_last_at_epoch_end_follows_saved_checkpoints_not_every_n_epochs(mc_trainer, every_n_epochs):
    mc = ModelCheckpoint(
        every_n_epochs=every_n_epochs, save_last=True, save_top_k=0, save_on_train_epoch_end=True
    )
    trainer = mc_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=0, callbacks=[mc])
    saved_at = []
    trainer.save_checkpoint = lambda path, weights_only=False, storage_options=None: saved_at.append(
        (trainer.global_step, os.path.basename(path))
    )
    trainer.fit(BoringModel())
    assert saved_at == [(3, "last.ckpt")]  # only the end-of-training save: no top-k file was ever written


def test_save_last_without_validation_or_train_epoch_end_saving_still_writes_last(tmp_path, mc_trainer):
    model = BoringModel()
    model.validation_step = None
    mc = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_on_train_epoch_end=False)
    mc_trainer(max_epochs=2, limit_val_batches=0, callbacks=[mc]).fit(model)
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4


def test_save_last_is_not_rewritten_when_the_score_did_not_improve(tmp_path, mc_trainer):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="score", save_last=True)
    mc_trainer(max_epochs=3, callbacks=[mc]).fit(ScoredModel(scores=(0.5, 0.2, 0.9)))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4  # epoch 1, the best


def test_fast_dev_run_accepts_a_checkpoint_callback(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path)
    trainer = L.Trainer(default_root_dir=tmp_path, fast_dev_run=2, callbacks=[mc], logger=False)
    assert mc in trainer.callbacks

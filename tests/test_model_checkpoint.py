"""ModelCheckpoint: when and where it saves, file names, top-k bookkeeping, last.ckpt."""

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


def _trainer(tmp_path, **kwargs):
    options = dict(
        default_root_dir=tmp_path,
        max_epochs=4,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(**options)


def _files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".ckpt"))


def test_checkpointing_is_on_by_default_under_the_loggers_version_folder(tmp_path):
    trainer = _trainer(tmp_path, max_epochs=2, logger=CSVLogger(tmp_path, name="runs"))
    trainer.fit(BoringModel())
    folder = os.path.join(tmp_path, "runs", "version_0", "checkpoints")
    assert trainer.checkpoint_callback.dirpath == os.path.realpath(folder)
    assert _files(folder) == ["epoch=1-step=4.ckpt"]  # top-1 without monitor keeps the latest


def test_default_folder_without_logger_is_root_checkpoints(tmp_path):
    trainer = _trainer(tmp_path, max_epochs=1)
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


def test_save_top_k_keeps_the_best_k_by_monitor_with_min_mode(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-{score:.1f}", monitor="score", save_top_k=2)
    _trainer(tmp_path, callbacks=[mc]).fit(ScoredModel())
    assert _files(tmp_path) == ["epoch=1-score=0.2.ckpt", "epoch=3-score=0.1.ckpt"]
    assert mc.best_model_path == str(tmp_path / "epoch=3-score=0.1.ckpt")
    assert float(mc.best_model_score) == pytest.approx(0.1)
    assert mc.kth_best_model_path == str(tmp_path / "epoch=1-score=0.2.ckpt")
    assert {os.path.basename(k): round(float(v), 3) for k, v in mc.best_k_models.items()} == {
        "epoch=1-score=0.2.ckpt": 0.2,
        "epoch=3-score=0.1.ckpt": 0.1,
    }


def test_save_top_k_with_max_mode_and_all_kept(tmp_path):
    best = ModelCheckpoint(dirpath=tmp_path / "max", monitor="score", mode="max")
    every = ModelCheckpoint(dirpath=tmp_path / "all", monitor="score", save_top_k=-1)
    _trainer(tmp_path, callbacks=[best, every]).fit(ScoredModel())
    assert _files(tmp_path / "max") == ["epoch=2-step=6.ckpt"]
    assert len(_files(tmp_path / "all")) == 4


def test_save_last_writes_last_ckpt_that_resumes(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    _trainer(tmp_path, max_epochs=2, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["last.ckpt"]
    assert mc.last_model_path == str(tmp_path / "last.ckpt")
    assert torch.load(mc.last_model_path, weights_only=True)["global_step"] == 4


def test_save_last_link_points_at_the_newest_checkpoint(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, save_last="link")
    _trainer(tmp_path, max_epochs=2, callbacks=[mc]).fit(BoringModel())
    last = tmp_path / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch=1-step=4.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_every_n_train_steps_saves_at_those_steps(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    _trainer(tmp_path, max_epochs=4, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["epoch=1-step=3.ckpt", "epoch=2-step=6.ckpt"]


def test_every_n_epochs_saves_every_other_epoch(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1)
    _trainer(tmp_path, max_epochs=4, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"]


def test_existing_file_gets_a_version_suffix(tmp_path):
    (tmp_path / "epoch=0-step=2.ckpt").write_bytes(b"someone else's file")
    mc = ModelCheckpoint(dirpath=tmp_path)
    _trainer(tmp_path, max_epochs=1, callbacks=[mc]).fit(BoringModel())
    assert mc.best_model_path == str(tmp_path / "epoch=0-step=2-v1.ckpt")
    assert (tmp_path / "epoch=0-step=2.ckpt").read_bytes() == b"someone else's file"


def test_save_weights_only_files_hold_no_optimizer_state(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    _trainer(tmp_path, max_epochs=1, callbacks=[mc]).fit(BoringModel())
    ckpt = torch.load(mc.best_model_path, weights_only=True)
    assert "optimizer_states" not in ckpt and "state_dict" in ckpt


def test_monitor_that_was_never_logged_is_an_error_listing_logged_metrics(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    with pytest.raises(MisconfigurationException, match=r"'val_acc'.*\['score'\]"):
        _trainer(tmp_path, callbacks=[mc]).fit(ScoredModel())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "avg"}, "mode='avg'"),
        ({"save_top_k": 3}, "no quantity to rank"),
        ({"save_top_k": -2}, "save_top_k=-2"),
        ({"every_n_train_steps": 2, "every_n_epochs": 1}, "mutually exclusive"),
        ({"save_last": "yes"}, "save_last='yes'"),
    ],
)
def test_invalid_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        ModelCheckpoint(**kwargs)


def test_best_checkpoint_is_used_by_ckpt_path_best(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="score", mode="max")
    trainer = _trainer(tmp_path, callbacks=[mc])
    trainer.fit(ScoredModel())
    trainer.validate(ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == str(tmp_path / "epoch=2-step=6.ckpt")


def test_state_key_distinguishes_configurations():
    a = ModelCheckpoint(monitor="a")
    b = ModelCheckpoint(monitor="b", mode="max")
    assert a.state_key != b.state_key and a.state_key.startswith("ModelCheckpoint{")


def test_train_time_interval_saves_once_the_interval_has_passed(tmp_path):
    import datetime

    mc = ModelCheckpoint(dirpath=tmp_path, train_time_interval=datetime.timedelta(0), save_top_k=-1)
    _trainer(tmp_path, max_epochs=1, limit_train_batches=3, callbacks=[mc]).fit(BoringModel())
    assert _files(tmp_path) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]


def test_restoring_state_from_another_folder_keeps_only_best_model_path(tmp_path):
    old = ModelCheckpoint(dirpath=tmp_path / "old", monitor="score")
    old.best_model_path, old.best_model_score = "/old/best.ckpt", torch.tensor(0.5)
    new = ModelCheckpoint(dirpath=tmp_path / "new", monitor="score")
    with pytest.warns(UserWarning, match="folder changed"):
        new.load_state_dict(old.state_dict())
    assert new.best_model_path == "/old/best.ckpt" and new.best_model_score is None


def test_monitor_missing_before_the_first_validation_only_warns(tmp_path):
    mc = ModelCheckpoint(dirpath=tmp_path, monitor="score", every_n_train_steps=1)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[mc])
    with pytest.warns(UserWarning, match="validation has not run yet"):
        trainer.fit(ScoredModel())
    assert _files(tmp_path) == []


def test_ckpt_path_last_finds_the_previous_runs_file_in_another_logger_version(tmp_path):
    def run(max_epochs, ckpt_path=None):
        trainer = _trainer(
            tmp_path,
            max_epochs=max_epochs,
            logger=CSVLogger(tmp_path),
            callbacks=[ModelCheckpoint(save_last=True)],
        )
        trainer.fit(BoringModel(), ckpt_path=ckpt_path)
        return trainer

    run(1)
    with pytest.warns(UserWarning, match="folder changed"):  # a new run writes to version_1
        resumed = run(2, ckpt_path="last")  # ... and finds the file in version_0
    assert resumed.ckpt_path == os.path.realpath(
        tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    )
    assert resumed.global_step == 4


def test_fsspec_url_as_dirpath_keeps_top_k_and_last(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    mc = ModelCheckpoint(dirpath="memory://fulmen-mc/run", monitor="score", save_top_k=1, save_last=True)
    _trainer(tmp_path, callbacks=[mc]).fit(ScoredModel())
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("/fulmen-mc/run", detail=False)) == [
        "epoch=3-step=8.ckpt",
        "last.ckpt",
    ]
    assert mc.best_model_path == "memory://fulmen-mc/run/epoch=3-step=8.ckpt"
    fs.rm("/fulmen-mc", recursive=True)

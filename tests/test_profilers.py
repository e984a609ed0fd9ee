import json
import os
import time

import pytest
import torch

import fulmen as L
from fulmen.callbacks.callback import Callback
from fulmen.demos import BoringModel
from fulmen.loggers import CSVLogger
from fulmen.profilers import (
    AdvancedProfiler,
    PassThroughProfiler,
    Profiler,
    PyTorchProfiler,
    SimpleProfiler,
    resolve_profiler,
)
from fulmen.utilities import MisconfigurationException


def _fit(make_trainer, profiler, model=None, **kwargs):
    options = dict(limit_train_batches=4, limit_val_batches=2)
    options.update(kwargs)
    trainer = make_trainer(profiler=profiler, **options)
    trainer.fit(model or BoringModel())
    return trainer


def test_profiler_names_resolve_to_classes():
    assert type(resolve_profiler("simple")) is SimpleProfiler
    assert type(resolve_profiler("advanced")) is AdvancedProfiler
    assert type(resolve_profiler("pytorch")) is PyTorchProfiler
    assert type(resolve_profiler(None)) is PassThroughProfiler
    mine = SimpleProfiler()
    assert resolve_profiler(mine) is mine


def test_bad_profiler_name_lists_the_valid_ones():
    with pytest.raises(MisconfigurationException, match=r"profiler='fast'.*'simple', 'advanced', 'pytorch'"):
        L.Trainer(profiler="fast", logger=False)


def test_default_profiler_is_disabled_and_leaves_the_loop_untouched(make_trainer):
    seen = {}

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            plan = trainer.fit_loop.plan
            seen["profiler"] = plan.profiler
            seen["steps"] = [getattr(plan, n) for n in ("training_step", "backward", "optimizer_step")]
            seen["strategy"] = [
                getattr(trainer.strategy, n) for n in ("training_step", "backward", "optimizer_step")
            ]

    trainer = _fit(make_trainer, None, callbacks=[Spy()])
    assert isinstance(trainer.profiler, PassThroughProfiler) and not trainer.profiler.enabled
    # without a profiler the loop calls the strategy's own methods: no timing wrapper on the way
    assert seen["profiler"] is None and seen["steps"] == seen["strategy"]


def test_simple_profiler_times_each_action_and_restores_the_methods(make_trainer):
    class Hooked(BoringModel):
        def on_train_batch_end(self, outputs, batch, batch_idx):
            pass

    trainer = _fit(make_trainer, "simple", model=Hooked())
    stats = trainer.profiler.recorded()
    assert stats["training_step"]["count"] == 4
    assert stats["backward"]["count"] == 4
    assert stats["optimizer_step"]["count"] == 4
    assert stats["run_training_batch"]["count"] == 4
    assert stats["train_dataloader_next"]["count"] >= 4
    assert stats["[LightningModule]Hooked.on_train_batch_end"]["count"] == 4
    assert stats["validation_step"]["count"] == 4  # 2 sanity + 2 validation batches
    assert stats["validate_dataloader_next"]["count"] >= 4
    assert all(v["total"] >= 0 and v["mean"] == v["total"] / v["count"] for v in stats.values())
    # nothing was patched onto the strategy: the timing lives in the run plan
    assert "training_step" not in vars(trainer.strategy)
    assert trainer.fit_loop.plan.training_step != trainer.strategy.training_step


def test_simple_profiler_report_is_sorted_and_written_to_log_dir(make_trainer, tmp_path):
    class SlowData(BoringModel):
        def train_dataloader(self):
            class Slow(torch.utils.data.Dataset):
                def __len__(self):
                    return 4

                def __getitem__(self, i):
                    time.sleep(0.02)
                    return torch.randn(32)

            return torch.utils.data.DataLoader(Slow())

    trainer = _fit(make_trainer, "simple", model=SlowData(), logger=CSVLogger(tmp_path))
    path = trainer.profiler.output_path
    assert path == os.path.join(trainer.log_dir, "fit-profile.txt")
    text = open(path).read()
    assert "Share of run" in text and "Count" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Total run" not in line][1:]
    totals = [float(line.split()[-4]) for line in rows]
    assert totals == sorted(totals, reverse=True)
    # the sleeping dataloader is the bottleneck, and the table says so (after the epoch that contains it)
    actions = [line.split()[1] for line in rows]
    assert actions[0] == "run_training_epoch"
    assert [a for a in actions if not a.startswith("run_")][0] == "train_dataloader_next"
    assert trainer.profiler.recorded()["train_dataloader_next"]["total"] >= 0.08


def test_simple_profiler_dirpath_and_filename_choose_the_report_file(make_trainer, tmp_path):
    profiler = SimpleProfiler(dirpath=tmp_path / "prof", filename="perf")
    trainer = _fit(make_trainer, profiler)
    trainer.validate(BoringModel(), verbose=False)
    assert os.path.exists(tmp_path / "prof" / "fit-perf.txt")
    assert profiler.output_path == os.fspath(tmp_path / "prof" / "validate-perf.txt")
    assert "validation_step" in open(profiler.output_path).read()


class _ProfilesMySection(BoringModel):
    def training_step(self, batch, batch_idx):
        with self.trainer.profiler.profile("my_section"):
            return super().training_step(batch, batch_idx)


def test_user_code_can_profile_its_own_sections(make_trainer):
    trainer = _fit(make_trainer, "simple", model=_ProfilesMySection())
    assert trainer.profiler.recorded()["my_section"]["count"] == 4


def test_user_sections_are_free_with_the_default_profiler(make_trainer):
    trainer = _fit(make_trainer, None, model=_ProfilesMySection())
    assert trainer.profiler.summary() == ""


def test_simple_profiler_rejects_mismatched_start_stop():
    profiler = SimpleProfiler()
    profiler.start("a")
    with pytest.raises(ValueError, match="'a' was started again"):
        profiler.start("a")
    with pytest.raises(ValueError, match=r"stop\('b'\) was called without start"):
        profiler.stop("b")


def test_profile_iterable_times_every_next_including_the_last():
    profiler = SimpleProfiler()
    assert list(profiler.profile_iterable([1, 2, 3], "next")) == [1, 2, 3]
    assert profiler.recorded()["next"]["count"] == 4  # three items and the StopIteration


def test_advanced_profiler_reports_functions_per_action(make_trainer, tmp_path):
    trainer = _fit(make_trainer, AdvancedProfiler(dirpath=tmp_path, line_count_restriction=5))
    text = open(tmp_path / "fit-profile.txt").read()
    assert "Profile of action: training_step" in text
    assert "Profile of action: optimizer_step" in text
    assert "training_step" in text.split("Profile of action: training_step")[1]
    assert trainer.profiler.output_path == os.fspath(tmp_path / "fit-profile.txt")


def test_advanced_profiler_pauses_the_outer_action_while_an_inner_one_runs():
    profiler = AdvancedProfiler()
    with profiler.profile("outer"):
        with profiler.profile("inner"):
            sum(range(1000))
    text = profiler.summary()
    inner = text.split("Profile of action: inner")[1]
    assert "Profile of action: outer" in text and "sum" in inner


def test_pytorch_profiler_exports_a_chrome_trace_with_named_ranges(make_trainer, tmp_path):
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=2)
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=schedule, row_limit=5)
    trainer = _fit(make_trainer, profiler, limit_val_batches=0)
    assert profiler.trace_paths and all(os.path.exists(p) for p in profiler.trace_paths)
    trace = json.load(open(profiler.trace_paths[0]))
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"training_step", "backward", "optimizer_step"} <= names
    assert "Name" in open(tmp_path / "fit-profile.txt").read()
    assert trainer.profiler is profiler


def test_custom_profiler_subclass_receives_the_actions(make_trainer):
    class Recorder(Profiler):
        def __init__(self):
            super().__init__()
            self.events = []

        def start(self, action_name):
            self.events.append(("start", action_name))

        def stop(self, action_name):
            self.events.append(("stop", action_name))

        def summary(self):
            return ""

    recorder = Recorder()
    _fit(make_trainer, recorder, limit_val_batches=0)
    starts = [name for kind, name in recorder.events if kind == "start"]
    assert starts.count("training_step") == 4
    # backward runs inside the optimizer step (the closure), so its range nests inside it
    first = recorder.events.index(("start", "optimizer_step"))
    assert recorder.events.index(("start", "backward")) > first
    assert recorder.events.index(("stop", "backward")) < recorder.events.index(("stop", "optimizer_step"))


def test_pytorch_profiler_can_also_write_tensorboard_traces(make_trainer, tmp_path):
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=1, repeat=1)
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=schedule, export_to_tensorboard=True)
    _fit(make_trainer, profiler, limit_val_batches=0)
    written = os.listdir(tmp_path / "tensorboard")
    assert written and all(name.endswith(".pt.trace.json") for name in written)


def test_simple_profiler_short_table_without_extended_columns():
    profiler = SimpleProfiler(extended=False)
    with profiler.profile("a"):
        pass
    header = profiler.summary().splitlines()[1]
    assert "Mean (s)" in header and "Total (s)" in header and "Count" not in header


def test_advanced_profiler_can_dump_raw_stats_per_action(make_trainer, tmp_path):
    import pstats

    profiler = AdvancedProfiler(dirpath=tmp_path, dump_stats=True)
    _fit(make_trainer, profiler, limit_val_batches=0)
    names = {os.path.basename(p) for p in profiler.stats_paths}
    assert "fit-profile-training_step.prof" in names
    stats = pstats.Stats(str(tmp_path / "fit-profile-training_step.prof"))
    assert stats.total_calls > 0


def test_pytorch_profiler_groups_by_input_shape_when_asked(make_trainer, tmp_path):
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=2)
    profiler = PyTorchProfiler(dirpath=tmp_path, schedule=schedule, group_by_input_shapes=True, row_limit=50)
    _fit(make_trainer, profiler, limit_val_batches=0)
    assert "Input Shapes" in open(tmp_path / "fit-profile.txt").read()


def test_a_failing_run_still_reports_and_restores_the_methods(make_trainer, tmp_path):
    class Fails(BoringModel):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    profiler = SimpleProfiler(dirpath=tmp_path)
    trainer = make_trainer(profiler=profiler, limit_train_batches=4, limit_val_batches=0)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Fails())
    assert profiler.recorded()["optimizer_step"]["count"] == 3  # two finished and the failing one
    assert os.path.exists(tmp_path / "fit-profile.txt")
    assert "training_step" not in vars(trainer.strategy) and "_run_epoch" not in vars(trainer.fit_loop)
    assert trainer.fit_loop.plan.profiler is profiler

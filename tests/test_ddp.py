"""DDP with real processes on 127.0.0.1 (gloo): scripts in tests/helpers run in subprocesses with timeouts."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import fulmen as L
from fulmen.demos import BoringModel
from fulmen.environments import find_free_port
from fulmen.strategies import DDPStrategy, SingleDeviceStrategy
from fulmen.utilities import MisconfigurationException

HELPERS = Path(__file__).parent / "helpers"
SRC = Path(__file__).parent.parent / "src"
TIMEOUT = 120  # seconds for any one distributed job: a hang fails the test instead of the suite

_RANK_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "GROUP_RANK",
)


def _env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _RANK_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HELPERS)])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _run(args, **extra_env):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *args], env=_env(**extra_env), capture_output=True, text=True, timeout=TIMEOUT
    )
    return proc, time.monotonic() - start


def _load(path):
    return torch.load(path, weights_only=False)


def _expected_weights(per_step=16, epochs=1):
    """A plain PyTorch loop over the same global batches (`per_step` consecutive samples per step)."""
    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_fit import IndexedData, Model
    finally:
        sys.path.remove(str(HELPERS))
    model, data = Model(), IndexedData()
    opt = torch.optim.SGD(model.layer.parameters(), lr=0.1, momentum=0.9)
    for k in list(range(64 // per_step)) * epochs:
        opt.zero_grad()
        window = slice(per_step * k, per_step * (k + 1))
        nn.functional.mse_loss(model(data.x[window]), data.y[window]).backward()
        opt.step()
    return model.state_dict()


def _assert_weights_equal(weights, expected):
    for key, value in expected.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- devices=2, started once
@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    ckpt = out / "ddp.ckpt"
    proc, _ = _run(
        [
            str(HELPERS / "ddp_fit.py"),
            str(out),
            "accelerator=cpu",
            "devices=2",
            "strategy=ddp",
            f"save={ckpt}",
            "logs=1",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [_load(out / f"rank{r}.pt") for r in range(2)], ckpt


@pytest.mark.slow
def test_ddp_ranks_read_disjoint_halves_of_the_data(ddp_run):
    ranks, _ = ddp_run
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 32
    assert seen0.isdisjoint(seen1)
    assert seen0 | seen1 == set(range(64))


@pytest.mark.slow
def test_ddp_weights_identical_across_ranks_and_equal_single_process_loop(ddp_run):
    ranks, _ = ddp_run
    expected = _expected_weights()
    _assert_weights_equal(ranks[0]["weights"], expected)
    _assert_weights_equal(ranks[1]["weights"], expected)


@pytest.mark.slow
def test_ddp_global_step_counts_optimizer_steps(ddp_run):
    ranks, _ = ddp_run
    assert [r["global_step"] for r in ranks] == [4, 4]  # 64 samples / (2 processes x batch 8)
    assert [r["world_size"] for r in ranks] == [2, 2]


@pytest.mark.slow
def test_ddp_sync_dist_validation_counts_each_sample_once(ddp_run):
    ranks, _ = ddp_run
    for r in ranks:
        assert r["metrics"]["val_count"] == 10.0  # 10 samples split 5/5, summed: no padded duplicates
        assert r["metrics"]["val_rank"] == pytest.approx(0.5)  # mean of rank ids weighted by samples
        assert r["metrics"]["train_loss_epoch"] == pytest.approx(ranks[0]["metrics"]["train_loss_epoch"])


@pytest.mark.slow
def test_ddp_sync_dist_step_value_is_reduced_at_once(ddp_run):
    ranks, _ = ddp_run
    assert ranks[0]["metrics"]["train_loss_step"] == pytest.approx(ranks[1]["metrics"]["train_loss_step"])


@pytest.mark.slow
def test_ddp_only_rank_zero_writes_logs_and_checkpoints(ddp_run):
    ranks, ckpt = ddp_run
    out = ckpt.parent
    assert [p.name for p in (out / "lightning_logs").iterdir()] == ["version_0"]
    assert len(list(out.rglob("metrics.csv"))) == 1
    checkpoints = [p for p in out.rglob("*.ckpt") if p != ckpt]
    assert [p.name for p in checkpoints] == ["epoch=0-step=4.ckpt"]
    assert ranks[0]["best"] == ranks[1]["best"] == str(checkpoints[0])


@pytest.mark.slow
def test_ddp_all_gather_and_broadcast(ddp_run):
    ranks, _ = ddp_run
    for r in ranks:
        assert r["gathered"] == [[0], [1]]
        assert r["broadcast"] == "from rank 0"


@pytest.mark.slow
def test_ddp_checkpoint_resumes_in_a_single_process(ddp_run, make_trainer):
    _, ckpt = ddp_run
    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_fit import Model
    finally:
        sys.path.remove(str(HELPERS))
    model = Model()
    trainer = make_trainer(max_epochs=2, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(model, ckpt_path=str(ckpt))
    assert isinstance(trainer.strategy, SingleDeviceStrategy)
    assert trainer.current_epoch == 2
    assert trainer.global_step == 4 + 8  # resumed after the DDP epoch; one process takes 8 steps of 8


@pytest.mark.slow
def test_ddp_gradient_accumulation_skips_sync_but_matches_the_single_process_loop(tmp_path):
    proc, _ = _run(
        [
            str(HELPERS / "ddp_fit.py"),
            str(tmp_path),
            "accelerator=cpu",
            "devices=2",
            "accumulate_grad_batches=2",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [_load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["global_step"] for r in ranks] == [2, 2]
    for r in ranks:  # 2 processes x 2 batches of 8 per step; the mean of per-batch means = a mean over 32
        _assert_weights_equal(r["weights"], _expected_weights(per_step=32))


# ---------------------------------------------------------------------------- other ways to start
@pytest.mark.slow
@pytest.mark.parametrize("per_node", [1, 2])
def test_two_nodes_started_separately_with_node_rank(tmp_path, per_node):
    """The article's recipe on one machine: MASTER_ADDR, MASTER_PORT, NODE_RANK and num_nodes=2.

    With 2 processes per node, each "node" also starts its second process itself (RANK = node * 2 + 1).
    """
    port = str(find_free_port())
    args = [
        sys.executable,
        str(HELPERS / "ddp_fit.py"),
        str(tmp_path),
        f"num_processes={per_node}",
        "num_nodes=2",
        "accelerator=ddp",
    ]
    procs = [
        subprocess.Popen(
            args,
            env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    world = 2 * per_node
    ranks = [_load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert [r["world_size"] for r in ranks] == [world] * world
    assert sorted(i for r in ranks for i in r["seen"]) == list(range(64))
    for r in ranks:
        _assert_weights_equal(r["weights"], _expected_weights(per_step=8 * world))


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    proc, _ = _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(HELPERS / "ddp_fit.py"),
            str(tmp_path),
            "accelerator=cpu",
            "devices=2",
            "strategy=ddp",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [_load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert {r["env_rank"] for r in ranks} == {"0", "1"}  # torchrun set RANK; fulmen started nothing
    _assert_weights_equal(ranks[0]["weights"], _expected_weights())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_spawn_brings_results_back_to_the_calling_process(tmp_path, strategy):
    out = tmp_path / "parent.pt"
    proc, _ = _run([str(HELPERS / "ddp_spawn_fit.py"), str(out), strategy])
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent = _load(out)
    _assert_weights_equal(parent["weights"], _expected_weights())
    assert parent["global_step"] == 4
    if strategy == "ddp_spawn":
        assert parent["validate"] == [{"val_count": 10.0, "val_rank": 0.5}]
    assert parent["metrics"]["val_count"] == 10.0
    # the run happened in other processes; the calling Trainer's state says how it ended, as in Lightning
    assert parent["state"] == ("finished", "validate" if strategy == "ddp_spawn" else "fit", None)


@pytest.mark.slow
def test_spawn_brings_back_results_larger_than_a_pipe_buffer(tmp_path):
    """Rank 0's results (here 256 KiB of frozen weights) outgrow the pipe: the parent reads while joining."""
    out = tmp_path / "parent.pt"
    proc, _ = _run([str(HELPERS / "ddp_spawn_fit.py"), str(out), "ddp_spawn", "-1", "big"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent = _load(out)
    _assert_weights_equal(parent["weights"], _expected_weights())
    assert parent["weights"]["wide.weight"].shape == (256, 256)
    assert parent["global_step"] == 4


# ---------------------------------------------------------------------------- failing fast
@pytest.mark.slow
def test_a_rank_that_raises_ends_the_job_naming_it(tmp_path):
    proc, elapsed = _run(
        [str(HELPERS / "ddp_fit.py"), str(tmp_path), "accelerator=cpu", "devices=2", "fail_rank=1"]
    )
    assert proc.returncode != 0
    assert "rank 1 failed with ZeroDivisionError: boom on rank 1" in proc.stderr
    assert elapsed < 60
    assert not list(tmp_path.glob("rank*.pt"))


@pytest.mark.slow
def test_rank_zero_that_raises_ends_the_job_with_its_error(tmp_path):
    proc, elapsed = _run(
        [str(HELPERS / "ddp_fit.py"), str(tmp_path), "accelerator=cpu", "devices=2", "fail_rank=0"]
    )
    assert proc.returncode != 0
    assert "ZeroDivisionError: boom on rank 0" in proc.stderr
    assert elapsed < 60


@pytest.mark.slow
def test_a_rank_killed_by_sigkill_ends_the_job_naming_it(tmp_path):
    proc, elapsed = _run(
        [str(HELPERS / "ddp_fit.py"), str(tmp_path), "accelerator=cpu", "devices=2", "kill_rank=1"]
    )
    assert proc.returncode != 0
    assert "rank 1" in proc.stderr and "SIGKILL" in proc.stderr
    assert elapsed < 60


@pytest.mark.slow
def test_main_process_stuck_after_a_child_died_is_stopped(tmp_path):
    """Rank 0 is busy outside any collective (as if NCCL waited for its timeout) when rank 1 fails."""
    proc, elapsed = _run(
        [
            str(HELPERS / "ddp_fit.py"),
            str(tmp_path),
            "accelerator=cpu",
            "devices=2",
            "fail_rank=1",
            "stall_rank=0",
        ]
    )
    assert proc.returncode == 1
    assert (
        "rank 1 (pid" in proc.stderr
        and "exited with code 1" in proc.stderr
        and "Stopping the job" in proc.stderr
    )
    assert elapsed < 60  # the stall lasts 120 s


@pytest.mark.slow
def test_main_script_dying_after_fit_does_not_wait_for_its_children(tmp_path):
    """Rank 0's script raises after fit while rank 1 goes on to its next collective: the job still ends."""
    proc, elapsed = _run(
        [str(HELPERS / "ddp_fit.py"), str(tmp_path), "accelerator=cpu", "devices=2", "raise_after_fit_rank=0"]
    )
    assert proc.returncode == 1
    assert "ValueError: after fit, on rank 0 only" in proc.stderr
    assert elapsed < 60


@pytest.mark.slow
def test_spawned_rank_that_raises_is_named(tmp_path):
    proc, elapsed = _run([str(HELPERS / "ddp_spawn_fit.py"), str(tmp_path / "x.pt"), "ddp_spawn", "1"])
    assert proc.returncode != 0
    assert "ProcessFailedError: rank 1" in proc.stderr
    assert "ZeroDivisionError: boom on rank 1" in proc.stderr
    assert elapsed < 60


# ---------------------------------------------------------------------------- in-process units
def test_devices_2_selects_ddp_that_reruns_the_script(monkeypatch):
    import fulmen.strategies

    monkeypatch.setattr(fulmen.strategies, "_interactive", lambda: False)  # as from a script (xdist is not)
    trainer = L.Trainer(accelerator="cpu", devices=2, logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy.start_method == "popen"
    assert (trainer.world_size, trainer.global_rank, trainer.num_devices) == (2, 0, 2)


@pytest.mark.parametrize(
    ("name", "method", "unused"),
    [
        ("ddp_spawn", "spawn", None),
        ("ddp_fork", "fork", None),
        ("ddp_find_unused_parameters_true", "popen", True),
    ],
)
def test_strategy_names_choose_start_method_and_ddp_arguments(name, method, unused):
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=name, logger=False)
    assert trainer.strategy.start_method == method
    assert trainer.strategy._ddp_kwargs.get("find_unused_parameters") == unused


def test_legacy_flags_num_processes_and_accelerator_ddp_select_ddp():
    with pytest.warns(DeprecationWarning):
        trainer = L.Trainer(num_processes=2, accelerator="ddp", logger=False)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.accelerator.name == "cpu"
    assert trainer.num_devices == 2


def test_legacy_accelerator_ddp_spawn_survives_num_processes():
    with pytest.warns(DeprecationWarning):
        trainer = L.Trainer(num_processes=2, accelerator="ddp_spawn", logger=False)
    assert trainer.strategy.start_method == "spawn"


def test_user_built_ddp_strategy_gets_devices_and_nodes():
    strategy = DDPStrategy(find_unused_parameters=True, start_method="spawn")
    trainer = L.Trainer(accelerator="cpu", devices=3, strategy=strategy, logger=False)
    assert trainer.strategy is strategy
    assert strategy.world_size == 3 and strategy.num_processes == 3


def test_removed_strategy_dp_names_the_replacement():
    with pytest.raises(MisconfigurationException, match="strategy='ddp'"):
        L.Trainer(accelerator="cpu", devices=2, strategy="dp", logger=False)


def test_script_launcher_refuses_to_rerun_pytest():
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, max_epochs=1)
    with pytest.raises(MisconfigurationException, match="ddp_spawn"):
        trainer.fit(BoringModel())
    assert "MASTER_PORT" not in os.environ or os.environ.get("MASTER_PORT") == _env().get("MASTER_PORT")


def _strategy(world=2):
    strategy = DDPStrategy(parallel_devices=[torch.device("cpu")] * world)
    return strategy


def test_train_loader_gets_distributed_sampler_keeping_shuffle_and_drop_last():
    strategy = _strategy()
    loader = DataLoader(list(range(10)), batch_size=2, shuffle=True, drop_last=True)
    out = strategy.process_dataloader(loader, shuffle=True, training=True)
    assert isinstance(out.sampler, DistributedSampler)
    assert (out.sampler.num_replicas, out.sampler.rank, out.sampler.shuffle) == (2, 0, True)
    assert out.sampler.drop_last and out.drop_last and out.batch_size == 2


def test_eval_loader_shards_without_padding():
    strategy = _strategy()
    loader = DataLoader(list(range(11)), batch_size=4)
    out = strategy.process_dataloader(loader, shuffle=False)
    assert list(out.sampler) == [0, 2, 4, 6, 8, 10]
    strategy._global_rank = 1
    assert list(strategy.process_dataloader(loader, shuffle=False).sampler) == [1, 3, 5, 7, 9]


def test_eval_loader_smaller_than_the_world_is_padded_so_no_rank_is_empty():
    strategy = _strategy(world=3)
    loader = DataLoader(list(range(2)), batch_size=4)
    with pytest.warns(UserWarning, match="2 samples for 3 processes"):
        shards = [strategy.process_dataloader(loader, shuffle=False) for strategy._global_rank in range(3)]
    assert [list(s.sampler) for s in shards] == [[0], [1], [0]]


def test_use_distributed_sampler_false_keeps_the_loader(make_trainer):
    strategy = _strategy()
    strategy._trainer = make_trainer(use_distributed_sampler=False)
    loader = DataLoader(list(range(10)), batch_size=2)
    assert strategy.process_dataloader(loader, shuffle=False, training=True) is loader


def test_collectives_without_a_process_group_are_identities():
    strategy = _strategy()
    t = torch.tensor([1.0, 2.0])
    assert strategy.reduce(t) is t
    assert strategy.broadcast("x") == "x"
    assert strategy.reduce_boolean_decision(False) is False


def test_sync_batchnorm_on_cpu_is_refused_before_training(make_trainer):
    strategy = _strategy()
    strategy._trainer = make_trainer(sync_batchnorm=True)
    with pytest.raises(MisconfigurationException, match="needs GPUs: torch.s SyncBatchNorm"):
        strategy._wrap(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


def test_each_epoch_reaches_the_distributed_sampler():
    from fulmen.data import set_sampler_epoch

    loader = _strategy().process_dataloader(
        DataLoader(list(range(8)), shuffle=True), shuffle=True, training=True
    )
    set_sampler_epoch(loader, 3)
    assert loader.sampler.epoch == 3


def test_ddp_spawn_with_an_unpicklable_model_names_the_alternatives(monkeypatch, make_trainer):
    monkeypatch.setenv("MASTER_PORT", str(find_free_port()))  # so the launcher exports nothing lasting

    class LocalModel(BoringModel):  # defined in a function: spawn cannot pickle it
        pass

    trainer = make_trainer(accelerator="cpu", devices=2, strategy="ddp_spawn")
    with pytest.raises(MisconfigurationException, match="ddp_fork"):
        trainer.fit(LocalModel())


@pytest.mark.parametrize(("backend", "expected"), [("nccl", "meta"), ("gloo", "cpu")])
def test_collectives_move_cpu_tensors_to_the_device_only_under_nccl(monkeypatch, backend, expected):
    """NCCL only moves CUDA tensors: a CPU value handed to reduce goes to the process's device first.

    Without a GPU, torch.distributed is replaced by recorders and the "device" is `meta`; tests/test_gpu.py
    runs the real thing over NCCL.
    """
    import fulmen.strategies.ddp as ddp_module

    seen = []
    dist = ddp_module.dist
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None, group=None: seen.append(tensor.device))
    strategy = DDPStrategy()
    strategy._root_device = torch.device("meta")
    out = strategy.reduce(torch.tensor(3.0), "sum")
    assert seen == [torch.device(expected)]
    assert out.device == torch.device(expected)


# ---------------------------------------------------------------------------- exit status and timeouts
@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "how"), [("ddp", "sys"), ("ddp", "raise"), ("fsdp", "sys")])
def test_exit_code_of_a_ddp_script_is_its_exit_status(tmp_path, strategy, how):
    """`sys.exit(3)` or `raise SystemExit(3)` after fit on every rank: the job's status is 3, as in Lightning.

    (FSDP's sharded module keeps its process group alive to the end, so its processes end by the
    fallback, which knows the code given to `sys.exit`.)
    """
    proc, elapsed = _run(
        [
            str(HELPERS / "ddp_fit.py"),
            str(tmp_path),
            "accelerator=cpu",
            "devices=2",
            f"strategy={strategy}",
            f"exit_after_fit={how}",
        ]
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert elapsed < 60


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_a_bare_raise_system_exit_on_one_rank_is_the_jobs_status(tmp_path, rank):
    """Only one rank ends its script with `raise SystemExit(3)`, the other ends normally: the job exits 3.

    Rank 0 is the launcher's own process, so for rank 0 the status is that process's own, not a child's.
    """
    proc, _ = _run(
        [
            str(HELPERS / "ddp_fit.py"),
            str(tmp_path),
            "accelerator=cpu",
            "devices=2",
            f"exit_at_end_rank={rank}",
        ]
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]
    assert "terminate called" not in proc.stderr


@pytest.mark.slow
def test_a_ddp_script_that_ends_normally_exits_zero(tmp_path):
    proc, _ = _run([str(HELPERS / "ddp_fit.py"), str(tmp_path), "accelerator=cpu", "devices=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]


@pytest.mark.slow
def test_a_rank_that_stops_answering_is_named_when_the_timeout_ends_the_job(tmp_path):
    """Rank 1 stalls outside any collective; rank 0's collective times out after 15 s and names rank 1.

    (The timeout also bounds the rendezvous, so it must leave the second process time to start.)
    """
    proc, elapsed = _run(
        [
            str(HELPERS / "ddp_fit.py"),
            str(tmp_path),
            "accelerator=cpu",
            "devices=2",
            "stall_rank=1",
            "timeout_s=15",
        ]
    )
    assert proc.returncode == 1
    assert "rank 1 did not answer" in proc.stderr, proc.stderr[-3000:]
    assert "timeout" in proc.stderr and "killed by a signal" not in proc.stderr
    assert elapsed < 100  # the stall lasts 120 s


def test_ddp_and_fsdp_are_parallel_strategies():
    from fulmen.strategies import DDPStrategy, FSDPStrategy, ParallelStrategy, SingleDeviceStrategy

    ddp = DDPStrategy(parallel_devices=[torch.device("cpu")] * 2)
    assert isinstance(ddp, ParallelStrategy) and issubclass(FSDPStrategy, ParallelStrategy)
    assert not isinstance(SingleDeviceStrategy(), ParallelStrategy)
    assert ddp.num_processes == 2
    assert ddp.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0}
    calls = []

    class Wrapped(torch.nn.Module):
        def no_sync(self):
            calls.append("no_sync")
            return contextlib.nullcontext()

    ddp.model = Wrapped()
    with ddp.block_backward_sync():
        calls.append("backward")
    assert calls == ["no_sync", "backward"]


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (
            "DDPStrategy",
            {"find_unused_paramters": True},
            r"DDPStrategy\(find_unused_paramters=...\) is not an argument",
        ),
        (
            "FSDPStrategy",
            {"bogus": 1},
            r"FSDPStrategy\(bogus=...\) is not an argument of FSDPStrategy, nor of fully_shard",
        ),
    ],
)
def test_a_strategy_argument_nothing_takes_is_refused_at_construction(cls, kwargs, match):
    import fulmen.strategies as strategies

    with pytest.raises(MisconfigurationException, match=match):
        getattr(strategies, cls)(**kwargs)


def test_ddp_strategy_takes_lightnings_checkpoint_io_and_precision_plugin_arguments():
    from fulmen.plugins import DoublePrecision, TorchCheckpointIO

    io, precision = TorchCheckpointIO(), DoublePrecision()
    strategy = DDPStrategy(checkpoint_io=io, precision_plugin=precision, find_unused_parameters=True)
    assert strategy.checkpoint_io is io
    assert strategy.precision_plugin is precision
    assert strategy._ddp_kwargs == {"find_unused_parameters": True}

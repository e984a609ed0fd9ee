"""Trainer(plugins=[...]): cluster environments (SLURM auto-requeue included), precision classes, layer sync."""

import os
import signal
import stat

import pytest
import torch
from torch import nn

from fulmen.demos import BoringModel
from fulmen.environments import (
    ClusterEnvironment,
    KubeflowEnvironment,
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    hpc_checkpoint_path,
)
from fulmen.layer_sync import LayerSync, TorchSyncBatchNorm
from fulmen.precision import (
    DoublePrecision,
    FSDPPrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
    XLAPrecision,
)
from fulmen.utilities import MisconfigurationException

_SLURM = ("SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME")


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    for name in _SLURM:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- environments through plugins=
def test_an_environment_in_plugins_is_the_one_a_ddp_strategy_uses(make_trainer):
    env = LightningEnvironment()
    trainer = make_trainer(plugins=[env], strategy="ddp", devices=2)
    assert trainer.strategy.cluster_environment is env
    assert (env.num_devices, env.num_nodes) == (2, 1)


def test_an_environment_is_given_to_a_user_built_strategy(make_trainer):
    from fulmen.strategies import DDPStrategy

    env = LightningEnvironment()
    trainer = make_trainer(plugins=env, strategy=DDPStrategy(), devices=2)
    assert trainer.strategy.cluster_environment is env


def test_kubeflow_ranks_come_from_its_variables(monkeypatch):
    for name, value in dict(KUBERNETES_PORT="tcp://x:443", MASTER_ADDR="pod-0", MASTER_PORT="23456").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    env = KubeflowEnvironment()
    assert KubeflowEnvironment.detect()
    assert (env.main_address, env.main_port, env.world_size(), env.global_rank()) == ("pod-0", 23456, 4, 3)
    assert (env.local_rank(), env.node_rank()) == (0, 3)


def test_lsf_ranks_and_hosts(monkeypatch, tmp_path):
    import socket

    rankfile = tmp_path / "ranks"
    rankfile.write_text(f"batch01\nnodeA\nnodeA\n{socket.gethostname()}\n{socket.gethostname()}\n")
    for name, value in dict(
        LSB_JOBID="4321",
        LSB_DJOB_RANKFILE=str(rankfile),
        JSM_NAMESPACE_LOCAL_RANK="1",
        JSM_NAMESPACE_SIZE="4",
        JSM_NAMESPACE_RANK="3",
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = LSFEnvironment()
    assert LSFEnvironment.detect()
    assert env.main_address == "nodeA"  # the first compute host; the first line is the launch node
    assert env.main_port == 10000 + 4321 % 1000
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 3, 1, 1)


def test_torchelastic_environment_reads_torchrun_variables(monkeypatch):
    for name, value in dict(
        TORCHELASTIC_RUN_ID="r", WORLD_SIZE="8", RANK="5", LOCAL_RANK="1", GROUP_RANK="2"
    ).items():
        monkeypatch.setenv(name, value)
    env = TorchElasticEnvironment()
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 5, 1, 2)


def test_mpi_environment_needs_mpi4py():
    pytest.importorskip("sys")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="mpi4py"):
            MPIEnvironment()
        assert not MPIEnvironment.detect()
    else:
        pytest.skip("mpi4py is installed")


def test_lightning_style_environment_methods_exist():
    env = LightningEnvironment()
    env.set_world_size(4)
    env.set_global_rank(1)
    env.validate_settings(num_devices=1, num_nodes=1)
    env.teardown()
    assert isinstance(env, ClusterEnvironment)


# ---------------------------------------------------------------- SLURM auto-requeue
def _stub_scontrol(tmp_path, monkeypatch):
    """A fake `scontrol` on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol_calls"
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


class SignalsAtStep(BoringModel):
    """Sends itself SLURM's requeue signal during training step `at`."""

    def __init__(self, at):
        super().__init__()
        self.at = at
        self.steps_seen = []

    def training_step(self, batch, batch_idx):
        self.steps_seen.append(self.global_step)
        if self.global_step == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().training_step(batch, batch_idx)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_requeue_signal_checkpoints_requeues_and_the_requeued_job_resumes(
    tmp_path, monkeypatch, make_trainer
):
    calls = _stub_scontrol(tmp_path, monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    trainer = make_trainer(plugins=[SLURMEnvironment(auto_requeue=True)], max_epochs=3, limit_train_batches=4)
    model = SignalsAtStep(at=2)
    trainer.fit(model)
    assert trainer.global_step == 3  # the batch that got the signal finished, then fit stopped
    assert calls.read_text().split() == ["requeue", "1234"]
    path = hpc_checkpoint_path(str(tmp_path))
    assert path is not None and os.path.basename(path) == "hpc_ckpt_1.ckpt"
    assert torch.load(path, weights_only=False)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is gone after fit

    resumed = SignalsAtStep(at=-1)
    second = make_trainer(plugins=[SLURMEnvironment()], max_epochs=2, limit_train_batches=4)
    second.fit(resumed)  # no ckpt_path: the requeued job continues from hpc_ckpt_1.ckpt
    # the stopped epoch counts as ended (fit ends an epoch on should_stop): epoch 1 trains steps 3..6
    assert resumed.steps_seen == [3, 4, 5, 6]
    assert second.global_step == 7


def test_array_jobs_are_requeued_by_array_and_task_id(tmp_path, monkeypatch):
    calls = _stub_scontrol(tmp_path, monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "50")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert SLURMEnvironment().requeue() is True
    assert calls.read_text().split() == ["requeue", "50_7"]


def test_a_failing_scontrol_warns(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexit 3\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    with pytest.warns(UserWarning, match="exit code 3"):
        assert SLURMEnvironment().requeue() is False


def test_auto_requeue_false_installs_no_handler(make_trainer):
    seen = []

    class Probe(BoringModel):
        def on_train_start(self):
            seen.append(signal.getsignal(signal.SIGUSR1))

    trainer = make_trainer(
        plugins=[SLURMEnvironment(auto_requeue=False)], limit_train_batches=1, limit_val_batches=0
    )
    trainer.fit(Probe())
    assert seen == [signal.SIG_DFL]


def test_custom_requeue_signal_is_honoured(make_trainer):
    seen = []

    class Probe(BoringModel):
        def on_train_start(self):
            seen.append(callable(signal.getsignal(signal.SIGUSR2)))

    env = SLURMEnvironment(requeue_signal=signal.SIGUSR2)
    make_trainer(plugins=[env], limit_train_batches=1, limit_val_batches=0).fit(Probe())
    assert env.requeue_signal == signal.SIGUSR2 and seen == [True]
    assert SLURMEnvironment().requeue_signal == signal.SIGUSR1  # Lightning's default


# ---------------------------------------------------------------- precision plugin classes
def test_precision_classes_in_plugins_set_the_mode(make_trainer):
    assert make_trainer(plugins=[MixedPrecision("bf16-mixed", "cpu")]).precision == "bf16-mixed"
    assert make_trainer(plugins=[HalfPrecision()]).precision == "16-true"  # Lightning's default mode
    assert make_trainer(plugins=[DoublePrecision()]).precision == "64-true"
    assert make_trainer(plugins=[Precision()]).precision == "32-true"


def test_mixed_precision_takes_lightnings_device_keyword():
    assert MixedPrecision(precision="bf16-mixed", device="cpu").device_type == "cpu"


def test_fsdp_precision_acts_as_its_mode(make_trainer):
    model = BoringModel()
    trainer = make_trainer(plugins=[FSDPPrecision("bf16-true")], limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.precision == "bf16-true" and model.layer.weight.dtype == torch.bfloat16
    with pytest.raises(MisconfigurationException, match="not valid"):
        FSDPPrecision("8-true")


def test_xla_precision_is_out_of_scope():
    with pytest.raises(NotImplementedError, match="XLAPrecision.*out of scope"):
        XLAPrecision("bf16-true")


# ---------------------------------------------------------------- layer sync and bad plugins
def test_torch_sync_batchnorm_plugin_turns_sync_batchnorm_on_and_converts_both_ways(make_trainer):
    plugin = TorchSyncBatchNorm()
    trainer = make_trainer(plugins=[plugin])
    assert trainer.sync_batchnorm is True and trainer.strategy.layer_sync is plugin
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    model[1].running_mean.fill_(3.0)
    synced = plugin.apply(model)
    assert isinstance(synced[1], nn.SyncBatchNorm)
    back = plugin.revert(synced)
    assert not isinstance(back[1], nn.SyncBatchNorm) and isinstance(back[1], nn.modules.batchnorm._BatchNorm)
    assert torch.equal(back[1].running_mean, torch.full((4,), 3.0))
    assert isinstance(plugin, LayerSync)


def test_an_unknown_plugin_is_named(make_trainer):
    with pytest.raises(MisconfigurationException, match="not a plugin"):
        make_trainer(plugins=["bf16-mixed"])


def test_two_environments_are_refused(make_trainer):
    with pytest.raises(MisconfigurationException, match="two cluster_environment plugins"):
        make_trainer(plugins=[LightningEnvironment(), SLURMEnvironment()])


def test_with_several_processes_the_ranks_agree_on_the_requeue_signal_every_8_batches():
    from types import SimpleNamespace

    from fulmen.environments import REQUEUE_SYNC_EVERY, SlurmRequeue

    votes = []

    def reduce_boolean_decision(decision, all=True):
        votes.append(decision)
        return True  # another rank received the signal

    trainer = SimpleNamespace(
        world_size=2,
        should_stop=False,
        strategy=SimpleNamespace(reduce_boolean_decision=reduce_boolean_decision),
    )
    requeue = SlurmRequeue(trainer)
    requeue._synced = True  # what entering the fit with world_size=2 sets
    requeue.poll(batch_idx=3)
    assert votes == [] and trainer.should_stop is False  # no collective between the agreed batches
    requeue.poll(batch_idx=REQUEUE_SYNC_EVERY)
    assert votes == [False] and trainer.should_stop is True and requeue.stopped

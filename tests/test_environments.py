"""Cluster environments resolved from variables set by hand (SLURM, torchrun, the plain recipe)."""

import pytest

from fulmen.environments import (
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
    detect_environment,
    first_slurm_host,
)
from fulmen.utilities import MisconfigurationException

_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "SLURM_NTASKS",
    "SLURM_JOB_NAME",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NODELIST",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_ID",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_NNODES",
    "SLURM_JOB_NUM_NODES",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in _VARIABLES:
        monkeypatch.setenv(name, "")  # recorded, so whatever a test or fulmen sets is undone afterwards
        monkeypatch.delenv(name)
    return monkeypatch


def _setenv(monkeypatch, variables):
    for key, value in variables.items():
        monkeypatch.setenv(key, value)


def _slurm_variables(procid=0, localid=0, nodeid=0):
    """A SLURM job of 2 nodes x 2 tasks as SLURM describes it to task `procid`."""
    return dict(
        SLURM_NTASKS="4",
        SLURM_JOB_NAME="train.sh",
        SLURM_PROCID=str(procid),
        SLURM_LOCALID=str(localid),
        SLURM_NODEID=str(nodeid),
        SLURM_NODELIST="gpu[003-004]",
        SLURM_JOB_ID="123456",
        SLURM_NTASKS_PER_NODE="2",
        SLURM_NNODES="2",
    )


def _slurm(monkeypatch, procid, localid, nodeid):
    _setenv(monkeypatch, _slurm_variables(procid, localid, nodeid))


def test_slurm_task_resolves_ranks_world_size_and_rendezvous(clean_env):
    _slurm(clean_env, procid=3, localid=1, nodeid=1)
    env = detect_environment(num_devices=2, num_nodes=2)
    assert isinstance(env, SLURMEnvironment)
    env.validate()
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (3, 1, 1, 4)
    assert env.main_address == "gpu003"
    assert env.main_port == 15000 + 123456 % 20000
    assert env.creates_processes_externally


def test_slurm_master_port_variable_wins(clean_env):
    _slurm(clean_env, procid=0, localid=0, nodeid=0)
    clean_env.setenv("MASTER_PORT", "29999")
    assert SLURMEnvironment(num_devices=2, num_nodes=2).main_port == 29999


def test_interactive_slurm_shell_is_treated_as_plain(clean_env):
    _slurm(clean_env, procid=0, localid=0, nodeid=0)
    clean_env.setenv("SLURM_JOB_NAME", "bash")
    assert isinstance(detect_environment(2, 1), LightningEnvironment)


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("node01", "node01"), ("gpu[003-005,010],cpu01", "gpu003"), ("a[7,9]", "a7"), ("h1,h2", "h1")],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_torchrun_variables_are_detected(clean_env):
    variables = dict(
        TORCHELASTIC_RUN_ID="x", RANK="3", LOCAL_RANK="1", WORLD_SIZE="4", GROUP_RANK="1", MASTER_PORT="1234"
    )
    _setenv(clean_env, variables)
    env = detect_environment(num_devices=2, num_nodes=2)
    assert isinstance(env, TorchElasticEnvironment)
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (3, 1, 1, 4)
    assert env.main_port == 1234


def test_plain_recipe_computes_global_rank_from_node_rank(clean_env):
    clean_env.setenv("NODE_RANK", "2")
    clean_env.setenv("MASTER_ADDR", "10.0.0.1")
    clean_env.setenv("MASTER_PORT", "29500")
    env = detect_environment(num_devices=1, num_nodes=3)
    env.validate()
    assert isinstance(env, LightningEnvironment)
    assert (env.global_rank(), env.world_size(), env.main_address, env.main_port) == (2, 3, "10.0.0.1", 29500)
    assert not env.creates_processes_externally  # fulmen starts the other local processes


def test_plain_child_process_has_local_rank(clean_env):
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("NODE_RANK", "1")
    env = LightningEnvironment(num_devices=2, num_nodes=2)
    assert env.global_rank() == 3
    assert env.creates_processes_externally


def test_single_machine_picks_a_free_port_once(clean_env):
    env = LightningEnvironment(num_devices=2, num_nodes=1)
    port = env.main_port
    assert 0 < port < 65536
    assert env.main_port == port  # exported, so the started processes use the same one


@pytest.mark.parametrize(
    ("variables", "check", "match"),
    [
        pytest.param(
            _slurm_variables(),
            lambda: SLURMEnvironment(num_devices=4, num_nodes=2).validate(),
            "--ntasks-per-node",
            id="slurm-tasks-per-node-are-not-devices",
        ),
        pytest.param(
            _slurm_variables(),
            lambda: SLURMEnvironment(num_devices=2, num_nodes=3).validate(),
            "num_nodes=3",
            id="slurm-nodes-are-not-num-nodes",
        ),
        pytest.param(
            {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4"},
            lambda: TorchElasticEnvironment(num_devices=2, num_nodes=1).validate(),
            "--nproc-per-node",
            id="torchrun-world-size-is-not-devices-times-nodes",
        ),
        pytest.param(
            {},
            lambda: LightningEnvironment(num_devices=1, num_nodes=2).main_port,
            "MASTER_PORT",
            id="multi-node-without-master-port",
        ),
        pytest.param(
            {"MASTER_PORT": "29500"},
            lambda: LightningEnvironment(num_devices=1, num_nodes=2).validate(),
            "MASTER_ADDR",
            id="multi-node-without-master-addr",
        ),
        pytest.param(
            {"NODE_RANK": "3"},
            lambda: LightningEnvironment(num_devices=1, num_nodes=3).validate(),
            "NODE_RANK=3",
            id="node-rank-out-of-range",
        ),
        pytest.param(
            {"NODE_RANK": "one"},
            lambda: LightningEnvironment(1, 2).node_rank(),
            "NODE_RANK='one'",
            id="non-integer-rank-variable",
        ),
    ],
)
def test_a_misconfigured_environment_names_the_variable(clean_env, variables, check, match):
    _setenv(clean_env, variables)
    with pytest.raises(MisconfigurationException, match=match):
        check()

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


def _slurm(monkeypatch, procid, localid, nodeid):
    for key, value in dict(
        SLURM_NTASKS="4",
        SLURM_JOB_NAME="train.sh",
        SLURM_PROCID=str(procid),
        SLURM_LOCALID=str(localid),
        SLURM_NODEID=str(nodeid),
        SLURM_NODELIST="gpu[003-004]",
        SLURM_JOB_ID="123456",
        SLURM_NTASKS_PER_NODE="2",
        SLURM_NNODES="2",
    ).items():
        monkeypatch.setenv(key, value)


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


def test_slurm_tasks_per_node_must_match_devices(clean_env):
    _slurm(clean_env, procid=0, localid=0, nodeid=0)
    with pytest.raises(MisconfigurationException, match="--ntasks-per-node"):
        SLURMEnvironment(num_devices=4, num_nodes=2).validate()


def test_slurm_nodes_must_match_num_nodes(clean_env):
    _slurm(clean_env, procid=0, localid=0, nodeid=0)
    with pytest.raises(MisconfigurationException, match="num_nodes=3"):
        SLURMEnvironment(num_devices=2, num_nodes=3).validate()


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
    for key, value in dict(
        TORCHELASTIC_RUN_ID="x", RANK="3", LOCAL_RANK="1", WORLD_SIZE="4", GROUP_RANK="1", MASTER_PORT="1234"
    ).items():
        clean_env.setenv(key, value)
    env = detect_environment(num_devices=2, num_nodes=2)
    assert isinstance(env, TorchElasticEnvironment)
    assert (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (3, 1, 1, 4)
    assert env.main_port == 1234


def test_torchrun_world_size_must_match_devices_times_nodes(clean_env):
    clean_env.setenv("TORCHELASTIC_RUN_ID", "x")
    clean_env.setenv("WORLD_SIZE", "4")
    with pytest.raises(MisconfigurationException, match="--nproc-per-node"):
        TorchElasticEnvironment(num_devices=2, num_nodes=1).validate()


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


def test_multi_node_without_master_port_names_the_variables(clean_env):
    with pytest.raises(MisconfigurationException, match="MASTER_PORT"):
        _ = LightningEnvironment(num_devices=1, num_nodes=2).main_port


def test_multi_node_without_master_addr_names_the_variable(clean_env):
    clean_env.setenv("MASTER_PORT", "29500")
    with pytest.raises(MisconfigurationException, match="MASTER_ADDR"):
        LightningEnvironment(num_devices=1, num_nodes=2).validate()


def test_node_rank_out_of_range_is_an_error(clean_env):
    clean_env.setenv("NODE_RANK", "3")
    with pytest.raises(MisconfigurationException, match="NODE_RANK=3"):
        LightningEnvironment(num_devices=1, num_nodes=3).validate()


def test_non_integer_rank_variable_is_named(clean_env):
    clean_env.setenv("NODE_RANK", "one")
    with pytest.raises(MisconfigurationException, match="NODE_RANK='one'"):
        LightningEnvironment(1, 2).node_rank()

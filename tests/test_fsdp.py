"""FSDP (fully_shard) on CPU with gloo: real processes, full-state checkpoints in and out."""

import sys

import pytest
import torch
from torch import nn

import fulmen as L
from fulmen.strategies import FSDPStrategy
from fulmen.utilities import MisconfigurationException

try:
    from torch.distributed.fsdp import fully_shard  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed torch
    pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)", allow_module_level=True)

from test_ddp import HELPERS, _assert_weights_equal, _expected_weights, _load, _run  # noqa: E402


def _fit_on_two_cpu_processes(out_dir, *flags, succeed=True):
    """Run helpers/ddp_fit.py in 2 CPU processes with `flags` (name=value); its completed process, which must
    have exited 0 unless `succeed` is False."""
    proc, _ = _run([str(HELPERS / "ddp_fit.py"), str(out_dir), "accelerator=cpu", "devices=2", *flags])
    if succeed:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    ckpt = out / "fsdp.ckpt"
    _fit_on_two_cpu_processes(out, "strategy=fsdp", f"save={ckpt}")
    return [_load(out / f"rank{r}.pt") for r in range(2)], ckpt


@pytest.mark.slow
def test_fsdp_two_processes_match_the_single_process_loop(fsdp_run):
    ranks, _ = fsdp_run
    _assert_weights_equal(ranks[0]["weights"], _expected_weights())
    assert ranks[1]["weights"] == {}  # the full state dict is gathered on rank 0 only
    assert [r["global_step"] for r in ranks] == [4, 4]
    assert set(ranks[0]["seen"]).isdisjoint(ranks[1]["seen"])


@pytest.mark.slow
def test_fsdp_full_checkpoint_holds_plain_tensors_and_resumes_in_one_process(fsdp_run, make_trainer):
    _, ckpt = fsdp_run
    saved = torch.load(ckpt, weights_only=True)
    assert all(type(v) is torch.Tensor for v in saved["state_dict"].values())
    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_fit import Model
    finally:
        sys.path.remove(str(HELPERS))
    trainer = make_trainer(max_epochs=2, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(Model(), ckpt_path=str(ckpt))
    assert trainer.global_step == 4 + 8


@pytest.mark.slow
def test_single_process_checkpoint_resumes_under_fsdp(tmp_path, make_trainer):
    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_fit import Model
    finally:
        sys.path.remove(str(HELPERS))
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(Model())
    ckpt = tmp_path / "single.ckpt"
    trainer.save_checkpoint(ckpt)
    _fit_on_two_cpu_processes(tmp_path, "strategy=fsdp", "max_epochs=2", f"ckpt={ckpt}")
    assert _load(tmp_path / "rank0.pt")["global_step"] == 8 + 4


@pytest.mark.slow
def test_fsdp_no_shard_replicates_and_matches_the_single_process_loop(tmp_path):
    _fit_on_two_cpu_processes(tmp_path, "fsdp_sharding=NO_SHARD")
    _assert_weights_equal(_load(tmp_path / "rank0.pt")["weights"], _expected_weights())


@pytest.mark.slow
def test_fsdp_bf16_mixed_keeps_fp32_weights_close_to_the_fp32_loop(tmp_path):
    _fit_on_two_cpu_processes(tmp_path, "strategy=fsdp", "precision=bf16-mixed")
    weights = _load(tmp_path / "rank0.pt")["weights"]
    for key, value in _expected_weights().items():
        assert weights[key].dtype == torch.float32  # sharded parameters stay fp32; compute runs in bf16
        torch.testing.assert_close(weights[key], value, rtol=0, atol=2e-2)


def test_fsdp_cpu_offload_on_cpu_names_the_fix():
    strategy = FSDPStrategy(cpu_offload=True, parallel_devices=[torch.device("cpu")] * 2)
    with pytest.raises(MisconfigurationException, match="remove cpu_offload=True"):
        strategy._wrap(nn.Linear(2, 2))


def test_fsdp_strategy_name_selects_fsdp():
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="fsdp", logger=False)
    assert isinstance(trainer.strategy, FSDPStrategy)
    assert trainer.strategy.state_dict_type == "full"


def test_fsdp_invalid_sharding_strategy_names_the_choices():
    with pytest.raises(MisconfigurationException, match="HYBRID_SHARD"):
        FSDPStrategy(sharding_strategy="ZERO4")


@pytest.fixture(scope="module")
def sharded_resume(tmp_path_factory):
    """Save a sharded checkpoint after one epoch, then resume it for a second epoch (two FSDP jobs)."""
    first, second = tmp_path_factory.mktemp("sharded1"), tmp_path_factory.mktemp("sharded2")
    ckpt = first / "sharded.ckpt"
    _fit_on_two_cpu_processes(first, "fsdp_sharded_checkpoint=1", f"save={ckpt}")
    _fit_on_two_cpu_processes(second, "fsdp_sharded_checkpoint=1", f"ckpt={ckpt}", "max_epochs=2")
    return ckpt, _load(second / "rank0.pt")


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_is_a_file_plus_a_shard_folder(sharded_resume):
    ckpt, _ = sharded_resume
    saved = torch.load(ckpt, weights_only=True)
    assert saved["state_dict"] == {"__fulmen_sharded__": True}
    assert saved["global_step"] == 4
    shards = ckpt.parent / (ckpt.name + ".shards")
    assert (shards / ".metadata").exists() and len(list(shards.glob("*.distcp"))) == 2


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_resumes_exactly_under_fsdp(sharded_resume):
    _, resumed = sharded_resume
    assert resumed["global_step"] == 8
    # equal to two uninterrupted epochs: weights and SGD momentum came back from the shards
    _assert_weights_equal(resumed["weights"], _expected_weights(epochs=2))


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_in_one_process_names_the_fix(sharded_resume, make_trainer):
    ckpt, _ = sharded_resume
    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_fit import Model
    finally:
        sys.path.remove(str(HELPERS))
    trainer = make_trainer(max_epochs=2, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    with pytest.raises(MisconfigurationException, match="state_dict_type='full'"):
        trainer.fit(Model(), ckpt_path=str(ckpt))


def test_removing_a_checkpoint_removes_its_shard_folder(tmp_path):
    from fulmen.checkpoint import remove

    (tmp_path / "a.ckpt").write_bytes(b"x")
    (tmp_path / "a.ckpt.shards").mkdir()
    (tmp_path / "a.ckpt.shards" / ".metadata").write_bytes(b"x")
    remove(tmp_path / "a.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_fsdp_auto_wrap_policy_must_hold_module_classes():
    with pytest.raises(MisconfigurationException, match="nn.Module classes"):
        FSDPStrategy(auto_wrap_policy={"Linear"})


def test_fsdp_auto_wrap_policy_picks_the_listed_classes():
    strategy = FSDPStrategy(auto_wrap_policy={nn.Linear})
    assert strategy._should_wrap(nn.Linear(2, 2)) and not strategy._should_wrap(nn.ReLU())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_crafted_shard_index_is_refused_when_resuming_under_fsdp(sharded_resume, tmp_path):
    """Issue 13 item 2: the `.metadata` of the shard folder must not run code (two real FSDP processes)."""
    import pickle
    import shutil

    ckpt, _ = sharded_resume
    copy = tmp_path / "sharded.ckpt"
    shutil.copy(ckpt, copy)
    shutil.copytree(str(ckpt) + ".shards", str(copy) + ".shards")
    marker = tmp_path / "MARKER"
    with open(str(copy) + ".shards/.metadata", "wb") as f:
        pickle.dump(_RunsCode(marker), f)
    proc = _fit_on_two_cpu_processes(
        tmp_path / "out", "fsdp_sharded_checkpoint=1", f"ckpt={copy}", "max_epochs=2", succeed=False
    )
    assert proc.returncode != 0
    assert "Refusing to load the shard index" in proc.stderr
    assert not marker.exists()

"""checkpoint/files.py: faults a checkpoint must survive (crafted shard indexes, flipped bytes, a full
disk, file modes)."""

import errno
import os
import pickle
import zipfile

import pytest
import torch

from fulmen.checkpoint import CheckpointError, UnsafeCheckpointError, atomic_save, load
from fulmen.checkpoint import files as checkpoint_files


# ------------------------------------------------------------------ shard index (.metadata) of FSDP checkpoints
def _shard_state(fill=0.0):
    return {
        "model": {"w": torch.full((3, 4), fill), "b": torch.full((2,), fill, dtype=torch.bfloat16)},
        "optimizer_0": {
            "state": {"w": {"step": torch.tensor(fill)}},
            "param_groups": [{"lr": fill, "params": ["w"]}],
        },
    }


@pytest.fixture
def shard_folder(tmp_path):
    """A real torch.distributed.checkpoint folder (one process), as FSDPStrategy(state_dict_type='sharded') writes."""
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "model.ckpt.shards"
    with pytest.warns(UserWarning):
        dcp.save(_shard_state(1.5), checkpoint_id=str(folder), no_dist=True)
    return folder


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _load_shards(folder, trusted=False):
    import torch.distributed.checkpoint as dcp

    state = _shard_state(0.0)
    with pytest.warns(UserWarning):
        dcp.load(state, storage_reader=checkpoint_files.shard_reader(str(folder), trusted), no_dist=True)
    return state


def test_a_real_shard_index_loads_through_the_restricted_reader(shard_folder):
    state = _load_shards(shard_folder)
    assert torch.equal(state["model"]["w"], torch.full((3, 4), 1.5))
    assert state["model"]["b"].dtype == torch.bfloat16 and float(state["model"]["b"][0]) == 1.5
    assert state["optimizer_0"]["param_groups"] == [{"lr": 1.5, "params": ["w"]}]


def test_a_crafted_shard_index_is_refused_and_never_runs(shard_folder, tmp_path):
    marker = tmp_path / "MARKER"
    with open(shard_folder / ".metadata", "wb") as f:
        pickle.dump(_RunsCode(marker), f)
    with pytest.raises(
        UnsafeCheckpointError, match=r"Refusing to load the shard index .*posix\.system.*weights_only"
    ):
        checkpoint_files.shard_reader(str(shard_folder))
    assert not marker.exists()


def test_a_trusted_shard_index_is_read_by_torchs_own_reader(shard_folder):
    state = _load_shards(shard_folder, trusted=True)
    assert torch.equal(state["model"]["w"], torch.full((3, 4), 1.5))


# ------------------------------------------------------------------ flipped bytes (issue 13 item 6)
def _record_offset(path, suffix):
    """Where the bytes of the archive record whose name ends with `suffix` start in the file."""
    import struct

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.ckpt"
    atomic_save({"state_dict": {"w": torch.arange(64, dtype=torch.float32)}, "global_step": 3}, str(path))
    return path


def test_a_flipped_byte_in_tensor_data_is_reported_as_damage(saved):
    _flip(saved, _record_offset(saved, "data/0") + 17)
    with pytest.raises(
        CheckpointError, match=r"is damaged: its record '.*data/0' does not match the checksum"
    ):
        load(saved)


def test_a_flipped_byte_in_the_pickle_is_damage_not_an_unsafe_file(saved):
    _flip(saved, _record_offset(saved, "data.pkl") + 20)
    with pytest.raises(CheckpointError) as info:
        load(saved)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "damaged" in str(info.value) and "trusted=True" not in str(info.value)


def test_an_intact_file_still_loads(saved):
    assert torch.equal(load(saved)["state_dict"]["w"], torch.arange(64, dtype=torch.float32))


def test_records_saved_without_checksums_are_not_reported(tmp_path):
    path = tmp_path / "nocrc.ckpt"
    previous = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"state_dict": {"w": torch.ones(4)}}, path)
    finally:
        torch.serialization.set_crc32_options(previous)
    with zipfile.ZipFile(path) as archive:
        assert {i.CRC for i in archive.infolist() if i.file_size} == {0}
    assert torch.equal(load(path)["state_dict"]["w"], torch.ones(4))


# ------------------------------------------------------------------ file mode (issue 13 item 8)
@pytest.fixture
def umask():
    def set_to(mask):
        os.umask(mask)

    previous = os.umask(0o022)
    os.umask(previous)
    yield set_to
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_honour_the_umask_like_torch_save(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_save({"state_dict": {}}, str(tmp_path / "sync.ckpt"))
    atomic_save({"state_dict": {}}, str(tmp_path / "background.ckpt"), wait=False)
    checkpoint_files.finish_writes()
    torch.save({}, tmp_path / "torch.pt")
    modes = {
        name: os.stat(tmp_path / name).st_mode & 0o777
        for name in ("sync.ckpt", "background.ckpt", "torch.pt")
    }
    assert modes == {"sync.ckpt": mode, "background.ckpt": mode, "torch.pt": mode}


# ------------------------------------------------------------------ a full disk (weak spot)
@pytest.fixture
def full_disk(monkeypatch):
    """os.write into a checkpoint's temporary file fails with ENOSPC, as on a full disk."""
    real = os.write

    def write(fd, data):
        if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_synchronous_save_on_a_full_disk_names_the_disk_and_the_file(tmp_path, make_trainer, full_disk):
    from fulmen.demos import BoringModel

    (tmp_path / "model.ckpt").write_bytes(b"previous")
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=0)
    trainer.fit(BoringModel())
    with pytest.raises(
        OSError, match=r"No space left on device: could not write checkpoint '.*model\.ckpt'"
    ) as info:
        trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert info.value.errno == errno.ENOSPC
    assert (tmp_path / "model.ckpt").read_bytes() == b"previous"  # the old file is untouched
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []  # no half-written leftovers

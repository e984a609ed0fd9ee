import dataclasses
import importlib.machinery
import importlib.util
import sys
import types
from collections import namedtuple

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.accelerators import (
    CPUAccelerator,
    CUDAAccelerator,
    XLAAccelerator,
    parse_devices,
    select_accelerator,
)
from fulmen.demos import BoringModel, RandomDataset
from fulmen.utilities import MisconfigurationException, move_data_to_device

Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    name: str = "batch"


# ------------------------------------------------------------------ choosing the accelerator


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the GPU here")
def test_auto_picks_the_cpu_without_accelerators():
    assert isinstance(select_accelerator("auto"), CPUAccelerator)
    trainer = L.Trainer(logger=False)
    assert trainer.strategy.root_device == torch.device("cpu") and trainer.num_devices == 1


@pytest.mark.parametrize("name", ["cuda", "gpu"])
def test_gpu_names_map_to_cuda(name, monkeypatch):
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert isinstance(select_accelerator(name), CUDAAccelerator)


@pytest.fixture
def no_torch_xla(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch_xla" else real(name, *a)
    )


@pytest.mark.parametrize("name", ["tpu", "xla"])
def test_tpu_without_torch_xla_names_the_package(name, no_torch_xla):
    with pytest.raises(
        MisconfigurationException, match=r"needs the `torch_xla` package.*pip install torch_xla"
    ):
        L.Trainer(accelerator=name, logger=False)


def test_tpu_cores_maps_to_the_tpu_accelerator(no_torch_xla):
    with pytest.warns(DeprecationWarning, match="tpu_cores"):
        with pytest.raises(MisconfigurationException, match="torch_xla"):
            L.Trainer(tpu_cores=8, logger=False)


@pytest.fixture
def fake_torch_xla(monkeypatch):
    """A stand-in `torch_xla` with four devices, enough to test the selection logic without a TPU."""
    package = types.ModuleType("torch_xla")
    runtime = types.ModuleType("torch_xla.runtime")
    runtime.addressable_device_count = lambda: 4
    package.runtime = runtime
    monkeypatch.setitem(sys.modules, "torch_xla", package)
    monkeypatch.setitem(sys.modules, "torch_xla.runtime", runtime)
    real = importlib.util.find_spec
    spec = importlib.machinery.ModuleSpec("torch_xla", None)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: spec if name == "torch_xla" else real(name, *a)
    )


def test_tpu_with_torch_xla_selects_xla_devices(fake_torch_xla):
    accelerator = select_accelerator("tpu")
    assert isinstance(accelerator, XLAAccelerator)
    assert parse_devices("auto", accelerator) == [0, 1, 2, 3]
    assert accelerator.parallel_devices([0, 1]) == [torch.device("xla", 0), torch.device("xla", 1)]
    with pytest.raises(MisconfigurationException, match="only 4 tpu device"):
        parse_devices(8, accelerator)


def test_auto_prefers_an_installed_tpu(fake_torch_xla):
    assert isinstance(select_accelerator("auto"), XLAAccelerator)


def test_bf16_mixed_is_allowed_on_tpu_and_16_mixed_is_not():
    from fulmen.precision import MixedPrecision, resolve_precision

    precision = resolve_precision("bf16-mixed", "tpu")
    assert isinstance(precision, MixedPrecision) and precision.device_type == "xla"
    with pytest.raises(MisconfigurationException, match="16-mixed"):
        resolve_precision("16-mixed", "tpu")


# ------------------------------------------------------------------ moving batches


def _leaves_on(data, device_type):
    if isinstance(data, torch.Tensor):
        return [data.device.type == device_type]
    if isinstance(data, dict):
        return [v for value in data.values() for v in _leaves_on(value, device_type)]
    if dataclasses.is_dataclass(data):
        return [v for f in dataclasses.fields(data) for v in _leaves_on(getattr(data, f.name), device_type)]
    if isinstance(data, (list, tuple)):
        return [v for value in data for v in _leaves_on(value, device_type)]
    return []


@pytest.mark.parametrize(
    "batch",
    [
        torch.ones(2, 3),
        (torch.ones(2), torch.zeros(2)),
        [torch.ones(2), torch.zeros(2)],
        {"x": torch.ones(2), "y": torch.zeros(2, dtype=torch.long)},
        Pair(torch.ones(2), torch.zeros(2)),
        Batch(torch.ones(2), torch.zeros(2)),
        {"nested": [Pair(torch.ones(1), {"deep": torch.ones(1)})]},
    ],
    ids=["tensor", "tuple", "list", "dict", "namedtuple", "dataclass", "nested"],
)
def test_move_data_to_device_moves_every_tensor_and_keeps_the_structure(batch):
    moved = move_data_to_device(batch, "meta")  # the meta device stands in for an accelerator
    assert type(moved) is type(batch)
    leaves = _leaves_on(moved, "meta")
    assert leaves and all(leaves)


def test_move_data_to_device_keeps_non_tensors_and_fields():
    moved = move_data_to_device(Batch(torch.ones(2), torch.zeros(2), name="keep"), "meta")
    assert moved.name == "keep" and moved.x.shape == (2,)
    pair = move_data_to_device(Pair(torch.ones(2), "label"), "meta")
    assert pair.y == "label" and pair.x.device.type == "meta" and pair._fields == ("x", "y")
    assert move_data_to_device([1, "a", None], "meta") == [1, "a", None]


def test_transfer_batch_to_device_hook_receives_each_batch_and_device(make_trainer):
    seen = []

    class Model(BoringModel):
        def train_dataloader(self):
            data = RandomDataset(32, 8)
            return DataLoader(
                data, batch_size=4, collate_fn=lambda items: Batch(torch.stack(items), torch.ones(4))
            )

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            seen.append((type(batch).__name__, device, dataloader_idx))
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

        def training_step(self, batch, batch_idx):
            assert isinstance(batch, Batch) and batch.x.device.type == "cpu"
            return super().training_step(batch.x, batch_idx)

    make_trainer(limit_val_batches=0).fit(Model())
    assert seen == [("Batch", torch.device("cpu"), 0)] * 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_reach_the_gpu_from_pinned_memory(make_trainer):
    devices = []

    class Model(BoringModel):
        def train_dataloader(self):
            return DataLoader(RandomDataset(32, 8), batch_size=4, pin_memory=True)

        def training_step(self, batch, batch_idx):
            devices.append(batch.device.type)
            return super().training_step(batch, batch_idx)

    make_trainer(accelerator="gpu", devices=1, limit_val_batches=0).fit(Model())
    assert devices == ["cuda", "cuda"]


def test_one_tpu_gets_the_xla_strategy_which_marks_each_step(fake_torch_xla, monkeypatch):
    from fulmen.precision import Precision
    from fulmen.strategies import select_strategy
    from fulmen.strategies import xla as xla_strategy

    accelerator = select_accelerator("tpu")
    strategy = select_strategy("auto", accelerator, [0], 1, Precision())
    assert isinstance(strategy, xla_strategy.SingleDeviceXLAStrategy)
    assert strategy.root_device == torch.device("xla", 0)
    marks = []
    monkeypatch.setattr(xla_strategy, "_mark_step", lambda: marks.append(1))
    model = BoringModel()
    strategy.connect(model)
    strategy.validation_step(torch.randn(2, 32), 0)
    assert marks == [1]


def test_several_tpus_are_refused_with_a_clear_message(fake_torch_xla):
    from fulmen.precision import Precision
    from fulmen.strategies import select_strategy

    with pytest.raises(MisconfigurationException, match="one device for now.*devices=1"):
        select_strategy("auto", select_accelerator("tpu"), [0, 1], 1, Precision())


def test_find_usable_cuda_devices_without_cuda() -> None:
    from fulmen.accelerators import find_usable_cuda_devices

    assert find_usable_cuda_devices(0) == []
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no visible CUDA devices"):
            find_usable_cuda_devices(-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_find_usable_cuda_devices_on_gpus() -> None:
    from fulmen.accelerators import find_usable_cuda_devices

    every = find_usable_cuda_devices(-1)
    assert every == list(range(torch.cuda.device_count()))
    assert find_usable_cuda_devices(1) == every[:1]
    with pytest.raises(ValueError, match="visible"):
        find_usable_cuda_devices(torch.cuda.device_count() + 1)


def test_bad_accelerator_names_the_valid_ones():
    with pytest.raises(Exception, match="banana") as info:
        L.Trainer(accelerator="banana")
    assert "cpu" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_a_clear_error():
    with pytest.raises(Exception, match="(?i)gpu|cuda"):
        L.Trainer(accelerator="gpu", devices=1)

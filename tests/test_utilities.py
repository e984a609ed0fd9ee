"""fulmen.utilities: the helpers Lightning users import from lightning.pytorch.utilities."""

from __future__ import annotations

import os
import pickle
import random
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fulmen.utilities import (
    PossibleUserWarning,
    WarningCache,
    disable_possible_user_warnings,
    rank_prefixed_message,
    rank_zero_only,
)
from fulmen.utilities.data import is_shared_filesystem, suggested_max_num_workers
from fulmen.utilities.memory import (
    garbage_collection_cuda,
    is_cuda_out_of_memory,
    is_cudnn_snafu,
    is_oom_error,
    is_out_of_cpu_memory,
    recursive_detach,
)
from fulmen.utilities.migration import migrate_checkpoint
from fulmen.utilities.model_helpers import (
    find_shared_parameters,
    get_torchvision_model,
    grad_norm,
    is_picklable,
    measure_flops,
    set_shared_parameters,
)
from fulmen.utilities.model_summary import ModelSummary, get_human_readable_count, summarize


def _two_layers() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model(torch.ones(1, 2)).sum().backward()
    return model


def test_grad_norm_keys_and_values() -> None:
    model = _two_layers()
    norms = grad_norm(model, 2)
    names = ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert list(norms) == [f"grad_2.0_norm/{n}" for n in names] + ["grad_2.0_norm_total"]
    grads = [p.grad for p in model.parameters()]
    assert norms["grad_2.0_norm/0.weight"] == pytest.approx(grads[0].norm(2).item())
    total = torch.cat([g.flatten() for g in grads]).norm(2).item()
    assert norms["grad_2.0_norm_total"] == pytest.approx(total, rel=1e-5)


def test_grad_norm_inf_and_bad_type() -> None:
    model = _two_layers()
    norms = grad_norm(model, "inf", group_separator="_")
    top = max(p.grad.abs().max().item() for p in model.parameters())
    assert norms["grad_inf_norm_total"] == pytest.approx(top)
    assert "grad_inf_norm_1.bias" in norms
    with pytest.raises(ValueError, match="positive"):
        grad_norm(model, 0)


def test_find_and_set_shared_parameters() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)
            self.b.weight = self.a.weight

    shared = find_shared_parameters(Tied())
    assert shared == [["a.weight", "b.weight"]]
    untied = Tied()
    untied.b.weight = nn.Parameter(torch.zeros(2, 2))
    assert find_shared_parameters(untied) == []
    set_shared_parameters(untied, shared)
    assert untied.b.weight is untied.a.weight


def test_measure_flops_forward_and_backward() -> None:
    layer = nn.Linear(4, 3)
    x = torch.ones(2, 4)
    forward = measure_flops(layer, lambda: layer(x))
    assert forward == 2 * 2 * 4 * 3  # one multiply-add per weight per example
    assert measure_flops(layer, lambda: layer(x), lambda y: y.sum()) == 2 * forward


def test_is_picklable() -> None:
    assert is_picklable({"lr": 0.1})
    assert not is_picklable(lambda: 1)


def test_suggested_max_num_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from fulmen.utilities import data

    monkeypatch.setattr(data, "_num_cpus_available", lambda: 16)
    assert suggested_max_num_workers(1) == 15
    assert suggested_max_num_workers(4) == 3
    assert suggested_max_num_workers(32) == 1
    with pytest.raises(ValueError, match=">= 1"):
        suggested_max_num_workers(0)


def test_is_shared_filesystem_single_process_is_true(tmp_path: os.PathLike[str]) -> None:
    from fulmen.strategies import SingleDeviceStrategy

    assert is_shared_filesystem(SingleDeviceStrategy(), tmp_path) is True


class _TwoRanks:
    """The collectives `is_shared_filesystem` uses, as seen from one rank of two (the other agrees)."""

    world_size = 2

    def __init__(self, global_zero: bool) -> None:
        self.is_global_zero = global_zero
        self.names: list[str] = []

    def broadcast(self, obj: Any) -> Any:
        name = obj if obj is not None else ".fulmen_shared_fs_check_from_rank_0"
        self.names.append(name)
        return name

    def barrier(self, *args: Any) -> None:
        pass

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


def test_is_shared_filesystem_finds_rank_zeros_marker_and_removes_it(tmp_path: os.PathLike[str]) -> None:
    rank0 = _TwoRanks(global_zero=True)
    assert is_shared_filesystem(rank0, tmp_path) is True
    assert rank0.names[0].startswith(".fulmen_shared_fs_check_")
    assert list(Path(tmp_path).iterdir()) == []  # the marker is gone afterwards


def test_is_shared_filesystem_is_false_when_the_marker_never_appears(tmp_path: os.PathLike[str]) -> None:
    other = _TwoRanks(global_zero=False)  # rank 0 wrote its marker on a disk this rank does not see
    assert is_shared_filesystem(other, tmp_path, timeout=0) is False


def test_memory_error_recognition() -> None:
    assert is_cuda_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_cudnn_snafu(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear"))
    assert is_out_of_cpu_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert is_oom_error(RuntimeError("MPS backend out of memory"))
    assert not is_oom_error(RuntimeError("shape mismatch"))
    assert not is_oom_error(ValueError("CUDA out of memory"))
    garbage_collection_cuda()  # no CUDA here: must simply return


def test_recursive_detach() -> None:
    x = torch.ones(2, requires_grad=True) * 2
    out = recursive_detach({"a": x, "b": {"c": x}, "d": 3}, to_cpu=True)
    assert not out["a"].requires_grad and not out["b"]["c"].requires_grad
    assert out["d"] == 3 and torch.equal(out["a"], x.detach())


class OldCallback:
    """A callback class, as checkpoints before Lightning 1.9 used it as the key of its state."""


def test_migrate_checkpoint_applies_newer_migrations_only() -> None:
    ckpt = {
        "pytorch-lightning_version": "0.9.0",
        "checkpoint_callback_best_model_score": 0.5,
        "callbacks": {OldCallback: {"x": 1}},
        "amp_scaling_state": {"scale": 1},
    }
    migrated, applied = migrate_checkpoint(ckpt)
    assert migrated is ckpt
    assert list(applied) == ["0.10.0", "1.9.0", "2.0.0"]
    assert ckpt["callbacks"] == {"ModelCheckpoint": {"best_model_score": 0.5}, "OldCallback": {"x": 1}}
    assert "amp_scaling_state" not in ckpt
    assert ckpt["pytorch-lightning_version"] == "2.5.0"
    assert migrate_checkpoint(ckpt) == (ckpt, {})


def test_migrate_checkpoint_stops_at_target_version() -> None:
    ckpt = {"pytorch-lightning_version": "1.5.0", "amp_scaling_state": {}}
    _, applied = migrate_checkpoint(ckpt, target_version="1.9.0")
    assert list(applied) == ["1.9.0"]
    assert "amp_scaling_state" in ckpt and ckpt["pytorch-lightning_version"] == "1.9.0"


def test_model_summary_counts() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.Linear(3, 2), nn.ReLU()))
    model[0].weight.requires_grad_(False)
    summary = summarize(model, max_depth=1)
    assert isinstance(summary, ModelSummary)
    assert summary.layer_names == ["0", "1"]
    assert summary.layer_types == ["Linear", "Sequential"]
    assert summary.param_nums == [15, 8]
    assert summary.total_parameters == 23 and summary.trainable_parameters == 11
    assert summary.model_size == pytest.approx(23 * 4 / 1e6)
    assert ModelSummary(model, max_depth=-1).layer_names == ["0", "1", "1.0", "1.1"]
    assert "Total params" in str(summary)
    with pytest.raises(ValueError, match="max_depth"):
        ModelSummary(model, max_depth=-2)


def test_human_readable_count() -> None:
    assert [get_human_readable_count(n) for n in (123, 1234, 2_000_000, 3e9)] == [
        "123",
        "1.2 K",
        "2.0 M",
        "3.0 B",
    ]


def test_rank_prefixed_message_and_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rank_prefixed_message("hi", 3) == "[rank: 3] hi"
    assert rank_prefixed_message("hi", None) == "hi"
    calls: list[int] = []
    speak = rank_zero_only(lambda: calls.append(1))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    speak()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    speak()
    assert calls == [1]


def test_warning_cache_warns_once() -> None:
    cache = WarningCache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.warn("careful")
        cache.warn("careful")
    assert [str(w.message) for w in caught] == ["careful"]


def test_disable_possible_user_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disable_possible_user_warnings()
        warnings.warn("maybe wrong", PossibleUserWarning, stacklevel=1)
        warnings.warn("other", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["other"]


def test_isolate_rng_restores_every_generator() -> None:
    import numpy as np
    from fulmen.utilities.seed import isolate_rng

    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    expected = (torch.rand(1).item(), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    with isolate_rng():
        torch.rand(5), random.random(), np.random.rand(3)
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == expected


def test_attribute_dict_round_trips_through_pickle_with_attribute_access() -> None:
    from fulmen.utilities.parsing import AttributeDict

    hp = AttributeDict(lr=0.1)
    assert pickle.loads(pickle.dumps(hp)) == {"lr": 0.1} and hp.lr == 0.1


def test_lightning_attr_helpers_search_module_hparams_and_datamodule() -> None:
    from types import SimpleNamespace

    import fulmen
    from fulmen.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr

    class Model(fulmen.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()

    class Data(fulmen.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.batch_size = 8

    model = Model()
    assert lightning_hasattr(model, "lr") and not lightning_hasattr(model, "batch_size")
    assert lightning_getattr(model, "lr") == 0.1
    model._trainer = SimpleNamespace(datamodule=Data())  # what Trainer.fit(datamodule=...) attaches
    assert lightning_getattr(model, "batch_size") == 8
    lightning_setattr(model, "batch_size", 32)
    lightning_setattr(model, "lr", 0.5)
    assert model._trainer.datamodule.batch_size == 32 and model.hparams.lr == 0.5
    with pytest.raises(AttributeError, match="'momentum' is neither"):
        lightning_getattr(model, "momentum")
    with pytest.raises(AttributeError, match="'momentum' is neither"):
        lightning_setattr(model, "momentum", 0.9)


def test_get_torchvision_model_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as when it is not installed
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ModuleNotFoundError, match=r"get_torchvision_model\('resnet18'\) needs torchvision"):
        get_torchvision_model("resnet18")


def test_get_torchvision_model_builds_by_name_with_the_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, dict]] = []

    def get_model(name: str, **kwargs: object) -> nn.Module:
        built.append((name, kwargs))
        return nn.Linear(1, 1)

    registry = types.ModuleType("torchvision.models")
    registry.get_model = get_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", registry)
    model = get_torchvision_model("resnet18", weights="DEFAULT")
    assert isinstance(model, nn.Linear)
    assert built == [("resnet18", {"weights": "DEFAULT"})]


def test_get_torchvision_model_before_the_registry_calls_the_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = types.ModuleType("torchvision.models")
    registry.resnet18 = lambda num_classes: nn.Linear(1, num_classes)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", registry)
    assert get_torchvision_model("resnet18", num_classes=3).out_features == 3


def test_lazy_names_load_each_name_from_its_module_on_first_use():
    import json

    from fulmen.utilities.lazy import lazy_names

    getattr_, dir_ = lazy_names("pkg", {"dumps": "json"}, {"own": 1})
    assert getattr_("dumps") is json.dumps
    assert dir_() == ["dumps", "own"]
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'loads'"):
        getattr_("loads")

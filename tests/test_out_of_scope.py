"""Out-of-scope Lightning features: importable, and a clear OutOfScopeError where a user reaches for them."""

from __future__ import annotations

import importlib

import pytest

import fulmen
from fulmen.out_of_scope import FEATURES, OutOfScopeError

WHERE = {
    "Fabric": "fulmen",
    "DeepSpeedStrategy": "fulmen.strategies",
    "ModelParallelStrategy": "fulmen.strategies",
    "XLAStrategy": "fulmen.strategies",
    "DeepSpeedPrecision": "fulmen.plugins.precision",
    "BitsandbytesPrecision": "fulmen.plugins",
    "TransformerEnginePrecision": "fulmen.plugins.precision",
    "XLAPrecision": "fulmen.plugins",
    "XLAProfiler": "fulmen.profilers",
    "XLAEnvironment": "fulmen.plugins.environments",
    "LitLogger": "fulmen.loggers",
    "HPUAccelerator": "fulmen.out_of_scope",
}


def test_every_feature_is_placed() -> None:
    assert sorted(WHERE) == sorted(FEATURES)


@pytest.mark.parametrize("name", sorted(WHERE))
def test_building_one_raises_with_the_alternative(name: str) -> None:
    cls = getattr(importlib.import_module(WHERE[name]), name)
    with pytest.raises(OutOfScopeError, match=f"{name}: .* is out of scope for fulmen; .*docs/migrating.md"):
        cls()


def test_a_subclass_also_raises_when_built() -> None:
    from fulmen.strategies import DeepSpeedStrategy

    class Mine(DeepSpeedStrategy):  # type: ignore[misc,valid-type]
        pass

    with pytest.raises(OutOfScopeError, match="use strategy='fsdp'"):
        Mine(stage=3)


@pytest.mark.parametrize(
    ("flags", "feature"),
    [
        ({"strategy": "deepspeed"}, "DeepSpeedStrategy"),
        ({"strategy": "deepspeed_stage_2_offload"}, "DeepSpeedStrategy"),
        ({"strategy": "model_parallel"}, "ModelParallelStrategy"),
        ({"accelerator": "hpu"}, "HPUAccelerator"),
    ],
)
def test_trainer_flags_naming_them_raise(flags: dict[str, str], feature: str) -> None:
    with pytest.raises(OutOfScopeError, match=f"{next(iter(flags))}=.*{feature}"):
        fulmen.Trainer(logger=False, enable_checkpointing=False, **flags)


def test_lightning_paths_of_out_of_scope_modules_import() -> None:
    from fulmen.loggers.litlogger import LitLogger
    from fulmen.plugins.precision.bitsandbytes import BitsandbytesPrecision
    from fulmen.strategies.deepspeed import DeepSpeedStrategy

    assert {LitLogger.__name__, BitsandbytesPrecision.__name__, DeepSpeedStrategy.__name__} == {
        "LitLogger",
        "BitsandbytesPrecision",
        "DeepSpeedStrategy",
    }

"""hparams.yaml reading and writing (Lightning's core.saving)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from fulmen.core.saving import load_hparams_from_yaml, save_hparams_to_yaml


def test_round_trip_of_plain_values(tmp_path: Path) -> None:
    path = tmp_path / "hparams.yaml"
    save_hparams_to_yaml(path, {"lr": 0.1, "layers": (1, 2), "opt": {"name": "adam"}, "none": None})
    assert load_hparams_from_yaml(path, use_omegaconf=False) == {
        "lr": 0.1,
        "layers": [1, 2],
        "opt": {"name": "adam"},
        "none": None,
    }


def test_objects_are_written_as_text_never_as_code(tmp_path: Path) -> None:
    path = tmp_path / "hparams.yaml"
    save_hparams_to_yaml(path, argparse.Namespace(act=len))
    assert "!!python" not in path.read_text()
    assert load_hparams_from_yaml(path, use_omegaconf=False) == {"act": repr(len)}


def test_omegaconf_in_and_out(tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    path = tmp_path / "hparams.yaml"
    save_hparams_to_yaml(path, omegaconf.OmegaConf.create({"model": {"lr": 0.1, "dims": [1, 2]}}))
    loaded = load_hparams_from_yaml(path)
    assert isinstance(loaded, omegaconf.DictConfig)
    assert loaded.model.lr == 0.1 and list(loaded.model.dims) == [1, 2]


def test_missing_file_warns_and_gives_nothing(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no file"):
        assert load_hparams_from_yaml(tmp_path / "missing.yaml") == {}


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        save_hparams_to_yaml(tmp_path / "nope" / "hparams.yaml", {"a": 1})

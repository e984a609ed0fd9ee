"""hparams.yaml: the hyper-parameters of a run as a YAML file, written by loggers and read back on load.

Written with `yaml.safe_dump`, read with `yaml.safe_load`: the file holds plain values only (numbers,
strings, lists, mappings); anything else is written as its `repr`, so reading it back never runs code.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fulmen.hparams import is_omegaconf

__all__ = ["load_hparams_from_yaml", "plain_hparams", "save_hparams_to_yaml"]


def _to_container(value: Any) -> Any:
    # OmegaConf's DictConfig/ListConfig (every Hydra project) become plain dicts and lists
    if is_omegaconf(value):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def plain_hparams(value: Any) -> Any:
    """`value` as YAML-safe plain values: mappings and sequences recursively, other objects as their repr."""
    value = _to_container(value)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): plain_hparams(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_hparams(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def save_hparams_to_yaml(
    config_yaml: str | Path, hparams: dict[str, Any] | argparse.Namespace, use_omegaconf: bool = True
) -> None:
    """Write `hparams` to the YAML file `config_yaml` (its folder must exist)."""
    folder = os.path.dirname(os.fspath(config_yaml)) or "."
    if not os.path.exists(folder):  # a file in its place fails in open() below, with the OS's own error
        raise RuntimeError(f"save_hparams_to_yaml: the folder {folder!r} does not exist; create it first.")
    import yaml

    with open(config_yaml, "w", encoding="utf-8") as f:
        yaml.safe_dump(plain_hparams(hparams), f)


def load_hparams_from_yaml(config_yaml: str | Path, use_omegaconf: bool = True) -> dict[str, Any]:
    """The hyper-parameters in the YAML file `config_yaml` ({} with a warning when the file is missing).

    With `use_omegaconf` and the `omegaconf` package installed, the result is a `DictConfig`, as in Lightning.
    """
    if not os.path.isfile(config_yaml):
        warnings.warn(
            f"load_hparams_from_yaml: no file {os.fspath(config_yaml)!r}; returning no hyper-parameters.",
            stacklevel=2,
        )
        return {}
    import yaml

    with open(config_yaml, encoding="utf-8") as f:
        hparams = yaml.safe_load(f) or {}
    if not isinstance(hparams, dict):
        raise ValueError(f"{os.fspath(config_yaml)!r} must hold a YAML mapping of name: value.")
    if use_omegaconf:
        try:
            from omegaconf import OmegaConf
        except ImportError:
            return hparams
        return OmegaConf.create(hparams)  # type: ignore[return-value]
    return hparams

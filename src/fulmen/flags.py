"""Reading the Trainer's flags: the 1.x spellings, time limits, and the checks that name bad values."""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Mapping
from typing import Any

from fulmen.utilities import MisconfigurationException, rank_zero_deprecation

_STRATEGY_AS_ACCELERATOR = (
    "ddp",
    "ddp_spawn",
    "ddp2",
    "dp",
    "ddp_cpu",
    "ddp_sharded",
    "fsdp",
    "ddp_notebook",
)


def map_legacy_flags(flags: dict[str, Any], legacy: dict[str, Any], known: list[str]) -> str | None:
    """Rewrite 1.x flags in `legacy` onto the 2.x `flags` (with a DeprecationWarning each).

    Returns:
        The checkpoint path given as `resume_from_checkpoint`, if any.
    """
    resume: str | None = None
    accelerator = flags.get("accelerator")
    if isinstance(accelerator, str) and accelerator.lower() in _STRATEGY_AS_ACCELERATOR:
        # read before `gpus`/`num_processes` below set `accelerator` to the device kind
        rank_zero_deprecation(
            f"Trainer(accelerator={accelerator!r}) names a strategy, the 1.x way; use "
            f"Trainer(strategy={accelerator!r}) (and accelerator='cpu' or 'gpu')."
        )
        strategy = accelerator.lower()
        flags["strategy"] = "ddp" if strategy == "ddp_cpu" else strategy
        flags["accelerator"] = "cpu" if strategy == "ddp_cpu" else "auto"
    for name, value in legacy.items():
        if name == "gpus":
            rank_zero_deprecation(
                f"Trainer(gpus={value!r}) is the 1.x spelling; use Trainer(accelerator='gpu', devices={value!r})."
            )
            if value not in (None, 0, "0", []):
                flags["accelerator"] = "gpu"
                flags["devices"] = value
        elif name == "tpu_cores":
            rank_zero_deprecation(
                f"Trainer(tpu_cores={value!r}) is the 1.x spelling; use Trainer(accelerator='tpu', devices={value!r})."
            )
            if value:
                flags["accelerator"] = "tpu"
                flags["devices"] = value
        elif name == "num_processes":
            rank_zero_deprecation(
                f"Trainer(num_processes={value!r}) is the 1.x spelling; use Trainer(accelerator='cpu', "
                f"devices={value!r})."
            )
            flags["accelerator"] = "cpu"
            flags["devices"] = value
        elif name == "resume_from_checkpoint":
            rank_zero_deprecation(
                "Trainer(resume_from_checkpoint=...) is the 1.x spelling; use trainer.fit(model, ckpt_path=...)."
            )
            resume = value
        elif name == "checkpoint_callback":
            rank_zero_deprecation(
                f"Trainer(checkpoint_callback={value!r}) is the 1.x spelling; use enable_checkpointing={value!r}."
            )
            flags["enable_checkpointing"] = bool(value)
        elif name == "weights_summary":
            rank_zero_deprecation(
                "Trainer(weights_summary=...) is the 1.x spelling; use enable_model_summary or the ModelSummary "
                "callback."
            )
            flags["enable_model_summary"] = value is not None
        elif name == "terminate_on_nan":
            rank_zero_deprecation(
                "Trainer(terminate_on_nan=...) is the 1.x spelling; use detect_anomaly=True."
            )
            flags["detect_anomaly"] = bool(value)
        elif name == "progress_bar_refresh_rate":
            rank_zero_deprecation(
                "Trainer(progress_bar_refresh_rate=...) is the 1.x spelling; use "
                "callbacks=[TQDMProgressBar(refresh_rate=...)] or enable_progress_bar."
            )
            flags["enable_progress_bar"] = bool(value)
        else:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise TypeError(f"Trainer got an unknown flag `{name}`.{hint}")
    return resume


def parse_max_time(value: Any) -> datetime.timedelta | None:
    """`max_time` as "DD:HH:MM:SS", a timedelta, or a dict of timedelta arguments."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value
    if isinstance(value, Mapping):
        return datetime.timedelta(**value)
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise MisconfigurationException(
                f"max_time={value!r} is not valid; use 'DD:HH:MM:SS', e.g. '00:12:00:00'."
            )
        d, h, m, s = (int(p) for p in parts)
        return datetime.timedelta(days=d, hours=h, minutes=m, seconds=s)
    raise MisconfigurationException(
        f"max_time={value!r} is not valid; use 'DD:HH:MM:SS', a datetime.timedelta or a dict like {{'hours': 2}}."
    )


def check_choice(flag: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise a MisconfigurationException naming the valid values when `value` is not one of `choices`."""
    if value not in choices:
        raise MisconfigurationException(f"{flag}={value!r} is not valid; use one of {list(choices)}.")


def check_limit(flag: str, value: Any) -> int | float:
    """A limit flag is an int >= 0 (batches) or a float in [0, 1] (a fraction)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MisconfigurationException(
            f"{flag}={value!r} is not valid; use an int >= 0 or a float in [0.0, 1.0]."
        )
    if isinstance(value, int) and value < 0:
        raise MisconfigurationException(
            f"{flag}={value} is not valid; use an int >= 0 or a float in [0.0, 1.0]."
        )
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise MisconfigurationException(f"{flag}={value} is not valid: a float must be in [0.0, 1.0].")
    return value


def check_count(flag: str, value: Any, minimum: int, meaning: str) -> int:
    """A count flag (epochs, steps) is an int >= `minimum`; an integral float such as 3.0 is taken as 3.

    Args:
        flag: the flag's name, for the message.
        value: what the user passed.
        minimum: the smallest valid value.
        meaning: the valid values in words, e.g. "an int >= 0, or -1 for no limit".
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MisconfigurationException(f"{flag}={value!r} is not valid; use {meaning}.")
    return value

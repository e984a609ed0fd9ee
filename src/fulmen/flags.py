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


def optional_count(flag: str, value: Any, minimum: int, meaning: str) -> int | None:
    """`check_count` for a flag where None means "no limit"."""
    return None if value is None else check_count(flag, value, minimum, meaning)


def flag_or_default(value: bool | None, default: bool) -> bool:
    """A boolean flag whose None means "the Trainer's default for this run"."""
    return default if value is None else bool(value)


def check_barebones(flags: Mapping[str, Any]) -> None:
    """`barebones=True` switches the extras off: refuse flags that switch one back on."""
    for name in ("enable_progress_bar", "enable_model_summary", "enable_checkpointing"):
        if flags[name]:
            raise MisconfigurationException(f"barebones=True turns {name} off; do not also pass {name}=True.")
    if flags["logger"] not in (None, False):
        raise MisconfigurationException(
            "barebones=True runs without loggers; remove logger=... or barebones."
        )


def run_length_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The Trainer's flags for how long to train and how much of each epoch: checked, defaulted, by name.

    `fast_dev_run=n` overrides the others as in Lightning: one epoch of n batches per stage, no sanity check.
    """
    f = flags
    fast_dev_run = f["fast_dev_run"]
    if not isinstance(fast_dev_run, bool):
        fast_dev_run = check_count("fast_dev_run", fast_dev_run, 0, "True, False or an int >= 0")
    elif fast_dev_run:
        fast_dev_run = 1
    out: dict[str, Any] = {"fast_dev_run": fast_dev_run}

    # --- how long to train
    max_steps = check_count("max_steps", f["max_steps"], -1, "an int >= 0, or -1 for no limit")
    if f["max_epochs"] is None:
        max_epochs = 1000 if max_steps == -1 and f["max_time"] is None else -1
    else:
        max_epochs = check_count("max_epochs", f["max_epochs"], -1, "an int >= 0, or -1 for no limit")
    out.update(max_steps=max_steps, max_epochs=max_epochs, max_time=parse_max_time(f["max_time"]))
    out["min_epochs"] = optional_count("min_epochs", f["min_epochs"], 0, "an int >= 0, or None")
    out["min_steps"] = optional_count("min_steps", f["min_steps"], 0, "an int >= 0, or None")

    # --- how much of each epoch
    for stage in ("train", "val", "test", "predict"):
        name = f"limit_{stage}_batches"
        out[name] = 1.0 if f[name] is None else check_limit(name, f[name])
    out["overfit_batches"] = check_limit("overfit_batches", f["overfit_batches"])
    if out["overfit_batches"] > 0:
        out["limit_val_batches"] = out["overfit_batches"]
    interval = 1.0 if f["val_check_interval"] is None else f["val_check_interval"]
    if isinstance(interval, int) and not isinstance(interval, bool):
        interval = check_count(
            "val_check_interval", interval, 1, "an int >= 1 (batches) or a float in (0.0, 1.0]"
        )
    elif isinstance(interval, float) and not 0.0 < interval <= 1.0:
        raise MisconfigurationException(
            f"val_check_interval={interval} is not valid: a float must be in (0.0, 1.0]."
        )
    out["val_check_interval"] = interval
    out["check_val_every_n_epoch"] = optional_count(
        "check_val_every_n_epoch",
        f["check_val_every_n_epoch"],
        1,
        "an int >= 1, or None to validate every val_check_interval batches across epochs",
    )
    sanity = f["num_sanity_val_steps"]
    out["num_sanity_val_steps"] = (
        (0 if f["barebones"] else 2)
        if sanity is None
        else check_count("num_sanity_val_steps", sanity, -1, "an int >= 0, or -1 for every batch")
    )
    every = f["log_every_n_steps"]
    # 0 logs no step values (epoch values still go out), as in Lightning
    out["log_every_n_steps"] = (
        50 if every is None else check_count("log_every_n_steps", every, 0, "an int >= 0")
    )
    out["reload_dataloaders_every_n_epochs"] = check_count(
        "reload_dataloaders_every_n_epochs", f["reload_dataloaders_every_n_epochs"], 0, "an int >= 0"
    )
    out["accumulate_grad_batches"] = check_count(
        "accumulate_grad_batches", f["accumulate_grad_batches"], 1, "an int >= 1"
    )
    if fast_dev_run:
        n = int(fast_dev_run)
        out.update(max_epochs=1, max_steps=n, num_sanity_val_steps=0, val_check_interval=1.0)
        out.update({f"limit_{stage}_batches": n for stage in ("train", "val", "test", "predict")})
        out["check_val_every_n_epoch"] = 1
        out["log_every_n_steps"] = 1  # as in Lightning: each of the few steps reaches the (dummy) logger
    return out


def check_gradient_clipping(value: Any, algorithm: Any) -> None:
    """`gradient_clip_val` is a number >= 0 or None; `gradient_clip_algorithm` is "norm", "value" or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise MisconfigurationException(
            f"gradient_clip_val={value!r} is not valid; use a number >= 0 (0 or None: no clipping)."
        )
    if algorithm is not None:
        check_choice("gradient_clip_algorithm", algorithm, ("norm", "value"))

"""LightningCLI: a command line for any LightningModule, built from type hints by `jsonargparse`.

``LightningCLI(MyModel, MyDataModule)`` gives a script the subcommands ``fit``, ``validate``, ``test``
and ``predict``; every argument of ``Trainer.__init__``, ``MyModel.__init__`` and
``MyDataModule.__init__`` becomes an option (``--trainer.max_epochs 2``, ``--model.lr 0.01``,
``--data.batch_size 64``) or a key of a YAML file given with ``--config``. ``--print_config`` prints
the full configuration, and the configuration of every run is saved as ``config.yaml`` in its log
folder, so that ``--config that/config.yaml`` reruns it.

``jsonargparse`` is an optional dependency (``pip install "jsonargparse[signatures]"``); ``import
fulmen`` does not import this module. Without it the module still imports (the type aliases,
``instantiate_class``, ``ReduceLROnPlateau`` and ``cli_lightning_logo`` work), and building a
LightningCLI says what to install.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import sys
from argparse import Namespace
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from fulmen.callbacks.callback import Callback
from fulmen.datamodule import LightningDataModule
from fulmen.module import LightningModule
from fulmen.seed import seed_everything
from fulmen.trainer import Trainer
from fulmen.utilities import MisconfigurationException, is_overridden, rank_zero_warn
from fulmen.utilities.types import LRSchedulerType, LRSchedulerTypeTuple, LRSchedulerTypeUnion

_SUBCOMMANDS: dict[str, set[str]] = {
    # Trainer method -> its arguments that the CLI fills itself (the rest become options)
    "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
    "validate": {"model", "dataloaders", "datamodule"},
    "test": {"model", "dataloaders", "datamodule"},
    "predict": {"model", "dataloaders", "datamodule"},
}


_NEEDS_JSONARGPARSE = (
    'LightningCLI needs jsonargparse: pip install "jsonargparse[signatures]" (or "fulmen[extra]").'
)

try:
    from jsonargparse import ActionConfigFile, ArgumentParser, lazy_instance
except ImportError:  # an optional dependency: the module still imports; building a parser says what to get

    class ArgumentParser:  # type: ignore[no-redef]
        """Stands in for jsonargparse's parser when it is not installed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ModuleNotFoundError(_NEEDS_JSONARGPARSE)

    ActionConfigFile = None  # type: ignore[misc,assignment]

    def lazy_instance(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        """Stands in for jsonargparse's lazy_instance when it is not installed."""
        raise ModuleNotFoundError(_NEEDS_JSONARGPARSE)


# the types of `configure_optimizers` building blocks that a LightningCLI model takes as arguments
ArgsType = list[str] | dict[str, Any] | Namespace | None
OptimizerCallable = Callable[[Iterable[Any]], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau]


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau that also names the metric it watches (`monitor`), so a config can build it."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


def instantiate_class(args: Any | tuple[Any, ...], init: dict[str, Any]) -> Any:
    """Build ``init["class_path"]`` with positional `args` (one value or a tuple) and ``init["init_args"]``.

    ``instantiate_class(self.parameters(), {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}})``
    """
    if "class_path" not in init:
        raise MisconfigurationException(f"instantiate_class: {init!r} has no 'class_path'.")
    positional = args if isinstance(args, tuple) else (args,)
    cls = _import_object(init["class_path"])
    return cls(*positional, **dict(init.get("init_args") or {}))


_LOGO = r"""
        ___
       /  /      ___     _
      /  /__    | __|  _| |_ __  ___ _ _
     /__   /    | _| || | | '  \/ -_) ' \
       /  /     |_| \_,_|_|_|_|_\___|_||_|
      /  /
     /__/     PyTorch training, drop-in for Lightning
"""


def cli_lightning_logo() -> None:
    """Print fulmen's logo (what Lightning's example scripts print at start)."""
    print(_LOGO)


__all__ = [
    "ArgsType",
    "LightningArgumentParser",
    "LightningCLI",
    "LRSchedulerCallable",
    "LRSchedulerType",
    "LRSchedulerTypeTuple",
    "LRSchedulerTypeUnion",
    "OptimizerCallable",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
    "cli_lightning_logo",
    "instantiate_class",
    "lazy_instance",
]


class LightningArgumentParser(ArgumentParser):
    """A ``jsonargparse.ArgumentParser`` with ``-c/--config`` (YAML files) and `add_lightning_class_args`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("env_prefix", "FULMEN")
        kwargs.setdefault("default_env", False)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-c",
            "--config",
            action=ActionConfigFile,
            help="A YAML configuration file; may be given several times, later ones override earlier ones.",
        )
        self.callback_keys: list[str] = []

    def add_lightning_class_args(
        self, lightning_class: type[Any], nested_key: str, subclass_mode: bool = False, required: bool = True
    ) -> list[str]:
        """Add the arguments of a class under `nested_key`; a Callback class is also added to the Trainer.

        ``parser.add_lightning_class_args(EarlyStopping, "early_stopping")`` gives
        ``--early_stopping.patience 5`` and always-on early stopping.
        """
        if isinstance(lightning_class, type) and issubclass(lightning_class, Callback):
            self.callback_keys.append(nested_key)
        if subclass_mode:
            return list(
                self.add_subclass_arguments(
                    lightning_class, nested_key, fail_untyped=False, required=required
                )
            )
        return list(
            self.add_class_arguments(lightning_class, nested_key, fail_untyped=False, sub_configs=True) or []
        )


class SaveConfigCallback(Callback):
    """Save the run's full configuration as `config_filename` in the trainer's log folder when it starts.

    Args:
        parser: the parser that read the configuration.
        config: the configuration (a jsonargparse Namespace).
        config_filename: the file name.
        overwrite: replace an existing file instead of raising.
        multifile: keep the parts that came from separate files in separate files.
        save_to_log_dir: set False to only call `save_config` (e.g. to send it to a logger).
    """

    def __init__(
        self,
        parser: Any,
        config: Any,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Write the file once, on rank 0, before any step runs."""
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir
            path = os.path.join(log_dir, self.config_filename)
            if not self.overwrite and os.path.isfile(path):
                raise RuntimeError(
                    f"SaveConfigCallback would overwrite {path}, the configuration of an earlier run. Use another "
                    "--trainer.default_root_dir or logger version, or pass "
                    "save_config_kwargs={'overwrite': True} to LightningCLI."
                )
            if trainer.is_global_zero:
                os.makedirs(log_dir, exist_ok=True)
                if self.multifile:
                    self.parser.save(self.config, path, overwrite=self.overwrite, multifile=True)
                else:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(_dump(self.parser, self.config))
        self.already_saved = True
        self.save_config(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Override to also store the configuration elsewhere (e.g. as a logger artifact)."""


class LightningCLI:
    """Build a command line from the model, datamodule and Trainer signatures, parse it and run it.

    Args:
        model_class: the LightningModule class (or, with `subclass_mode_model`, the base class whose
            subclasses ``--model.class_path`` may name). None accepts any LightningModule by class path.
        datamodule_class: likewise for the datamodule (``--data``); None accepts any datamodule by
            class path, optionally.
        save_config_callback: the callback that saves ``config.yaml`` (None: do not save).
        save_config_kwargs: keyword arguments for it (``overwrite``, ``config_filename``, ...).
        trainer_class: the Trainer class.
        trainer_defaults: defaults for Trainer arguments; ``"callbacks"`` given here are always added.
        seed_everything_default: the default of ``--seed_everything``: True picks a random seed (saved in
            the config), an int is the seed, False does not seed.
        parser_kwargs: keyword arguments for the ArgumentParser (e.g. ``prog``, ``description``);
            a dict per subcommand (``{"fit": {...}}``) is also accepted.
        subclass_mode_model: take the model class from ``--model.class_path`` (a subclass of model_class).
        subclass_mode_data: likewise for ``--data.class_path``.
        args: arguments to parse instead of ``sys.argv[1:]`` (a list, or a dict of config values).
        run: True parses a subcommand and runs it; False only builds `model`, `datamodule` and `trainer`.
        auto_configure_optimizers: add ``--optimizer`` and ``--lr_scheduler`` for models that do not
            define ``configure_optimizers``.

    After construction: ``cli.model``, ``cli.datamodule``, ``cli.trainer``, ``cli.config`` (parsed),
    ``cli.config_init`` (instantiated), ``cli.subcommand`` and ``cli.parser``.
    """

    def __init__(
        self,
        model_class: type[LightningModule] | Callable[..., LightningModule] | None = None,
        datamodule_class: type[LightningDataModule] | Callable[..., LightningDataModule] | None = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type[Trainer] | Callable[..., Trainer] = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | None = None,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: Sequence[str] | dict[str, Any] | None = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
    ) -> None:
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = dict(trainer_defaults or {})
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.auto_configure_optimizers = auto_configure_optimizers

        self.model_class = model_class if model_class is not None else LightningModule
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.datamodule_class = datamodule_class if datamodule_class is not None else LightningDataModule
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data
        self._datamodule_required = datamodule_class is not None
        for name, cls, base in (
            ("model_class", self.model_class, LightningModule),
            ("datamodule_class", self.datamodule_class, LightningDataModule),
        ):
            if isinstance(cls, type) and not issubclass(cls, base):
                raise MisconfigurationException(
                    f"LightningCLI({name}={cls.__name__}): {cls.__name__} is not a {base.__name__} subclass."
                )

        main_kwargs, subparser_kwargs = self._split_parser_kwargs(run)
        self.setup_parser(run, main_kwargs, subparser_kwargs)
        self.parse_arguments(self.parser, args)
        self.subcommand: str | None = self.config["subcommand"] if run else None
        self._set_seed()
        self.before_instantiate_classes()
        self.instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # ------------------------------------------------------------------ the parser
    def _split_parser_kwargs(self, run: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        kwargs = self.parser_kwargs
        if run and set(kwargs) & set(_SUBCOMMANDS):
            main = {k: v for k, v in kwargs.items() if k not in _SUBCOMMANDS}
            return main, {k: v for k, v in kwargs.items() if k in _SUBCOMMANDS}
        return dict(kwargs), {}

    def init_parser(self, **kwargs: Any) -> Any:
        """Create a parser (override to use another parser class)."""
        return LightningArgumentParser(**kwargs)

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """Build `self.parser`: one subparser per subcommand, or a single parser when `run=False`."""
        self.parser = self.init_parser(**main_kwargs)
        if add_subcommands:
            self._subcommand_parsers: dict[str, Any] = {}
            self._add_subcommands(self.parser, **subparser_kwargs)
        else:
            self._add_arguments(self.parser)

    def add_core_arguments_to_parser(self, parser: Any) -> None:
        """The seed, the Trainer's, the model's and the datamodule's arguments."""
        parser.add_argument(
            "--seed_everything",
            type=bool | int,
            default=self.seed_everything_default,
            help="Seed for torch, numpy and random: an int, true for a random seed (saved in the config), "
            "or false to not seed.",
        )
        parser.add_class_arguments(
            self.trainer_class, "trainer", fail_untyped=False, instantiate=False, sub_configs=True
        )
        defaults = {f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        if defaults:
            parser.set_defaults(defaults)
        if self.subclass_mode_model:
            parser.add_subclass_arguments(self.model_class, "model", fail_untyped=False, required=True)
        else:
            parser.add_class_arguments(self.model_class, "model", fail_untyped=False, sub_configs=True)
        if self.subclass_mode_data:
            parser.add_subclass_arguments(
                self.datamodule_class,
                "data",
                fail_untyped=False,
                required=self._datamodule_required,
            )
        else:
            parser.add_class_arguments(self.datamodule_class, "data", fail_untyped=False, sub_configs=True)
        if self.auto_configure_optimizers:
            parser.add_subclass_arguments(
                torch.optim.Optimizer,
                "optimizer",
                instantiate=False,
                fail_untyped=False,
                skip={"params"},
                required=False,
            )
            parser.add_subclass_arguments(
                (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
                "lr_scheduler",
                instantiate=False,
                fail_untyped=False,
                skip={"optimizer"},
                required=False,
            )

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Override to add arguments or links (``parser.link_arguments("data.num_classes", "model.num_classes")``)."""

    def _add_arguments(self, parser: Any) -> None:
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Each subcommand (a Trainer method) and the arguments of it that the CLI fills itself."""
        return {name: set(skip) for name, skip in _SUBCOMMANDS.items()}

    def _add_subcommands(self, parser: Any, **kwargs: Any) -> None:
        subcommands = parser.add_subcommands(required=True, dest="subcommand")
        for name, skip in self.subcommands().items():
            method = getattr(self.trainer_class, name)
            description = (method.__doc__ or "").strip().splitlines()[0] if method.__doc__ else name
            sub = self.init_parser(description=description, **kwargs.get(name, {}))
            self._add_arguments(sub)
            sub.add_method_arguments(self.trainer_class, name, skip=skip, fail_untyped=False)
            self._subcommand_parsers[name] = sub
            subcommands.add_subcommand(name, sub, help=description)

    def parse_arguments(self, parser: Any, args: Sequence[str] | dict[str, Any] | None) -> None:
        """Parse `args` (default: the command line) into `self.config`."""
        if isinstance(args, dict):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(list(args) if args is not None else None)

    # ------------------------------------------------------------------ instantiation
    def _section(self) -> Any:
        return self.config[self.subcommand] if self.subcommand is not None else self.config

    def _set_seed(self) -> None:
        section = self._section()
        seed = section.get("seed_everything")
        if seed is False or seed is None:
            return
        if seed is True:
            # a random seed, as Lightning documents (its code uses 0); a process started by the launcher reads the
            # one its parent drew from PL_GLOBAL_SEED, so every rank builds the same model. Saved in config.yaml.
            drawn = os.environ.get("PL_GLOBAL_SEED")
            if drawn is None and _ranks_started_elsewhere():
                # each rank parses its own config and cannot agree on a random draw: Lightning's 0 on all of
                # them, or the DistributedSamplers would shuffle differently and the ranks' data overlap
                rank_zero_warn(
                    "seed_everything=True under torchrun/SLURM with several processes: every rank uses seed 0. "
                    "Set seed_everything to an int (or PL_GLOBAL_SEED) for another seed."
                )
                drawn = "0"
            if drawn is None:
                drawn = str(random.SystemRandom().randint(0, 2**32 - 1))
            section["seed_everything"] = seed_everything(int(drawn), workers=True, verbose=False)
        else:
            seed_everything(int(seed), workers=True, verbose=False)

    def before_instantiate_classes(self) -> None:
        """Override to change `self.config` before the objects are built."""

    def instantiate_classes(self) -> None:
        """Build the model, datamodule (if any) and Trainer from the configuration."""
        parser = self._subcommand_parsers[self.subcommand] if self.subcommand is not None else self.parser
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
        self.config_init = instantiate(self._section())
        init = self.config_init
        self.datamodule: LightningDataModule | None = init.get("data")
        self.model: LightningModule = init["model"]
        self._add_configure_optimizers_method_to_model()
        self.trainer = self.instantiate_trainer()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the Trainer: configured arguments, `trainer_defaults` callbacks, and SaveConfigCallback."""
        trainer_args = dict(self.config_init["trainer"] or {})
        trainer_args.update(kwargs)
        callbacks = _as_list(trainer_args.get("callbacks")) + _as_list(self.trainer_defaults.get("callbacks"))
        parser = self._subcommand_parsers[self.subcommand] if self.subcommand is not None else self.parser
        callbacks += [self.config_init[key] for key in parser.callback_keys if self.config_init.get(key)]
        if (
            self.save_config_callback is not None
            and self.subcommand is not None
            and not trainer_args.get("fast_dev_run")
        ):
            callbacks.append(self.save_config_callback(parser, self._section(), **self.save_config_kwargs))
        trainer_args["callbacks"] = callbacks
        return self.trainer_class(**trainer_args)

    def _add_configure_optimizers_method_to_model(self) -> None:
        section = self.config_init
        optimizer = section.get("optimizer") if self.auto_configure_optimizers else None
        scheduler = section.get("lr_scheduler") if self.auto_configure_optimizers else None
        if optimizer is None:
            if scheduler is not None:
                raise MisconfigurationException(
                    "--lr_scheduler needs --optimizer too; add e.g. --optimizer Adam."
                )
            return
        if is_overridden("configure_optimizers", self.model, LightningModule):
            raise MisconfigurationException(
                f"{type(self.model).__name__} defines configure_optimizers, so --optimizer/--lr_scheduler would be "
                "ignored; remove them, or remove configure_optimizers from the model."
            )
        model = self.model

        def configure_optimizers() -> Any:
            opt = _build(optimizer, params=model.parameters())
            if scheduler is None:
                return opt
            sched = _build(scheduler, optimizer=opt)
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                monitor = getattr(sched, "monitor", None) or "val_loss"
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor}}
            return [opt], [sched]

        model.configure_optimizers = configure_optimizers  # type: ignore[method-assign]

    # ------------------------------------------------------------------ running
    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        kwargs = self._prepare_subcommand_kwargs(subcommand)
        getattr(self.trainer, subcommand)(**kwargs)
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """The Trainer method's arguments: the model and datamodule, plus its options (e.g. ckpt_path)."""
        section = self.config_init
        skip = self.subcommands()[subcommand]
        kwargs: dict[str, Any] = {"model": self.model, "datamodule": self.datamodule}
        for name in inspect.signature(getattr(self.trainer_class, subcommand)).parameters:
            if name != "self" and name not in skip and name in section:
                kwargs[name] = section[name]
        return kwargs


def _dump(parser: Any, config: Any) -> str:
    """The configuration as YAML, None values included (the keyword for that changed in jsonargparse 4.49)."""
    try:
        return str(parser.dump(config, skip_unset=False))
    except TypeError:
        return str(parser.dump(config, skip_none=False))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _build(config: Any, **extra: Any) -> Any:
    """Instantiate a ``{class_path, init_args}`` configuration with extra keyword arguments."""
    cls = _import_object(config["class_path"])
    init_args = dict(config.get("init_args") or {})
    return cls(**extra, **init_args)


def _import_object(path: str) -> Any:
    if ":" in path:
        module_name, name = path.split(":", 1)
    else:
        module_name, _, name = path.rpartition(".")
    if not module_name:
        raise MisconfigurationException(f"{path!r} is not an import path; use 'package.module:ClassName'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise MisconfigurationException(
            f"Cannot import {module_name!r} (from {path!r}): {err}. Run from the folder that holds it, or add it "
            "to PYTHONPATH."
        ) from err
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise MisconfigurationException(f"{module_name!r} has no attribute {part!r} (from {path!r}).")
        obj = getattr(obj, part)
    return obj


def run_main(argv: Sequence[str]) -> int:
    """``fulmen run MODEL [DATAMODULE] [fit|validate|test|predict] [options]``: a LightningCLI for any module.

    MODEL and DATAMODULE are import paths such as ``examples.mnist:MNISTClassifier``; the subcommand
    defaults to ``fit``. Example: ``fulmen run examples.mnist:MNISTClassifier
    examples.mnist:MNISTDataModule --trainer.max_epochs 1``.
    """
    usage = (
        "usage: fulmen run MODEL [DATAMODULE] [fit|validate|test|predict] [options]\n\n"
        "  MODEL, DATAMODULE  import paths, e.g. examples.mnist:MNISTClassifier examples.mnist:MNISTDataModule\n"
        "  options            --trainer.*, --model.*, --data.*, --config FILE, --print_config (see: ... fit --help)"
    )
    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0
    if os.getcwd() not in sys.path:
        sys.path.insert(
            0, os.getcwd()
        )  # import paths are relative to where the command runs, as with python -m
    try:
        model_class = _import_object(args.pop(0))
        datamodule_class = None
        if args and not args[0].startswith("-") and args[0] not in _SUBCOMMANDS:
            datamodule_class = _import_object(args.pop(0))
    except MisconfigurationException as err:
        print(f"fulmen run: {err}", file=sys.stderr)
        return 2
    for what, cls, base in (
        ("MODEL", model_class, LightningModule),
        ("DATAMODULE", datamodule_class, LightningDataModule),
    ):
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, base)):
            print(f"fulmen run: {what} must be a {base.__name__} subclass, got {cls!r}.", file=sys.stderr)
            return 2
    if not args or args[0] not in _SUBCOMMANDS and args[0] not in ("-h", "--help"):
        args.insert(0, "fit")
    LightningCLI(model_class, datamodule_class, args=args, parser_kwargs={"prog": "fulmen run"})
    return 0


def _ranks_started_elsewhere() -> bool:
    """torchrun or SLURM started several processes of this script, each parsing the config on its own."""
    env = os.environ
    return any(
        env.get(name, "1").isdigit() and int(env.get(name, "1")) > 1
        for name in ("WORLD_SIZE", "SLURM_NTASKS")
    )

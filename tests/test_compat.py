"""Zero-change mode: an unmodified Lightning project (own imports, YAML config, tests) runs on fulmen."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fulmen

SRC = str(Path(fulmen.__file__).resolve().parents[1])

# a small Lightning project, written as its users would: three modules, a YAML config and a test file
PROJECT = {
    "mypkg/__init__.py": "",
    "mypkg/model.py": """
        import torch
        import lightning.pytorch as pl
        from lightning.pytorch.utilities.types import OptimizerLRScheduler, STEP_OUTPUT
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        class Regressor(pl.LightningModule):
            def __init__(self, lr: float = 0.1):
                super().__init__()
                self.save_hyperparameters()
                self.layer = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx) -> STEP_OUTPUT:
                x, y = batch
                loss = torch.nn.functional.mse_loss(self.layer(x), y)
                self.log("train_loss", loss)
                return loss

            def configure_optimizers(self) -> OptimizerLRScheduler:
                return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        """,
    "mypkg/data.py": """
        import torch
        from lightning import LightningDataModule
        from lightning.pytorch.demos.boring_classes import RandomDataset

        class Data(LightningDataModule):
            def __init__(self, batch_size: int = 8):
                super().__init__()
                self.batch_size = batch_size

            def train_dataloader(self):
                g = torch.Generator().manual_seed(0)
                x = torch.randn(64, 4, generator=g)
                y = x.sum(1, keepdim=True)
                return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=self.batch_size)
        """,
    "config.yaml": """
        trainer:
          _target_: lightning.pytorch.Trainer
          max_epochs: 3
          logger:
            _target_: lightning.pytorch.loggers.CSVLogger
            save_dir: logs
          enable_checkpointing: false
          enable_progress_bar: false
          accelerator: cpu
          callbacks:
            - _target_: lightning.pytorch.callbacks.LearningRateMonitor
        model:
          _target_: mypkg.model.Regressor
          lr: 0.05
        """,
    "train.py": """
        import importlib, sys, yaml
        import lightning as L
        from lightning.pytorch.callbacks.progress.tqdm_progress import TQDMProgressBar
        from lightning.pytorch.trainer.trainer import Trainer

        def build(node):
            # what Hydra's instantiate does with `_target_`: import the path, call it
            if isinstance(node, list):
                return [build(item) for item in node]
            if not isinstance(node, dict):
                return node
            node = {k: build(v) for k, v in node.items()}
            target = node.pop("_target_", None)
            if target is None:
                return node
            module, _, name = target.rpartition(".")
            return getattr(importlib.import_module(module), name)(**node)

        from mypkg.data import Data

        config = yaml.safe_load(open(sys.argv[1]))
        trainer, model = build(config["trainer"]), build(config["model"])
        assert isinstance(trainer, Trainer) and isinstance(trainer, L.Trainer)
        L.seed_everything(0)
        trainer.fit(model, datamodule=Data())
        print("TRAINED", type(trainer).__module__, trainer.current_epoch, float(trainer.callback_metrics["train_loss"]))
        """,
    "tests/test_model.py": """
        import pytorch_lightning as pl
        from lightning.pytorch import Trainer
        from mypkg.data import Data
        from mypkg.model import Regressor

        def test_fast_dev_run():
            trainer = Trainer(fast_dev_run=True, accelerator="cpu", enable_progress_bar=False)
            trainer.fit(Regressor(), datamodule=Data())
            assert trainer.global_step == 1
            assert pl.Trainer is Trainer
        """,
}


def _write_project(root: Path) -> None:
    for name, text in PROJECT.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}  # the project itself is found from cwd / the script's folder
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_an_unchanged_project_trains_with_fulmen_exec(tmp_path: Path) -> None:
    _write_project(tmp_path)
    result = _run([sys.executable, "-m", "fulmen", "exec", "train.py", "config.yaml"], tmp_path)
    _assert_ok(result)
    line = next(line for line in result.stdout.splitlines() if line.startswith("TRAINED"))
    _, module, epoch, loss = line.split()
    assert module == "fulmen.trainer" and epoch == "3" and float(loss) < 1.0


@pytest.mark.slow
def test_an_unchanged_projects_tests_run_with_python_m_fulmen_compat(tmp_path: Path) -> None:
    _write_project(tmp_path)
    result = _run(
        [sys.executable, "-m", "fulmen.compat", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        tmp_path,
    )
    _assert_ok(result)
    assert "1 passed" in result.stdout


@pytest.mark.slow
def test_pytest_plugin_and_one_line_opt_in(tmp_path: Path) -> None:
    _write_project(tmp_path)
    _assert_ok(
        _run(
            [sys.executable, "-m", "pytest", "-q", "-p", "fulmen.compat", "-p", "no:cacheprovider", "tests"],
            tmp_path,
        )
    )
    (tmp_path / "conftest.py").write_text("import fulmen.compat; fulmen.compat.install()\n")
    _assert_ok(_run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], tmp_path))


def test_never_active_unless_asked() -> None:
    code = "import fulmen, fulmen.pytorch\ntry:\n    import pytorch_lightning\nexcept ImportError:\n    print('absent')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}
    )
    assert result.stdout.strip() == "absent"


def test_refuses_when_the_real_lightning_is_already_imported() -> None:
    code = textwrap.dedent(
        """
        import sys, types
        sys.modules["lightning"] = types.ModuleType("lightning")  # stands for the real package, imported first
        import fulmen.compat
        try:
            fulmen.compat.install()
        except fulmen.compat.LightningAlreadyImportedError as err:
            print("REFUSED", err)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}
    )
    assert result.stdout.startswith(
        "REFUSED the real Lightning is already imported in this process (lightning)"
    )
    assert "fulmen exec" in result.stdout


def test_install_serves_every_lightning_spelling_then_uninstalls() -> None:
    code = textwrap.dedent(
        """
        import fulmen, fulmen.compat
        fulmen.compat.install()
        import lightning, lightning.pytorch as pl, pytorch_lightning
        from lightning.pytorch.utilities.rank_zero import rank_zero_only
        from pytorch_lightning.core.saving import save_hparams_to_yaml
        assert lightning is fulmen and pl is fulmen and pytorch_lightning is fulmen
        assert rank_zero_only is fulmen.utilities.rank_zero_only
        try:
            import lightning.fabric
        except ModuleNotFoundError as err:
            print("FABRIC", err)
        fulmen.compat.uninstall()
        import importlib, sys
        for name in [n for n in sys.modules if n.split(".")[0] in ("lightning", "pytorch_lightning")]:
            del sys.modules[name]
        try:
            importlib.import_module("lightning.pytorch.callbacks")
        except ImportError:
            print("OFF")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}
    )
    assert result.returncode == 0, result.stderr
    assert (
        "FABRIC No module 'lightning.fabric' in fulmen: Fabric: Lightning Fabric is out of scope"
        in result.stdout
    )
    assert result.stdout.strip().endswith("OFF")


def test_pl_legacy_patch_unpickles_lightning_paths() -> None:
    import pickle

    from fulmen.utilities.migration import pl_legacy_patch
    from fulmen.utilities.parsing import AttributeDict

    # the bytes a checkpoint pickled under Lightning holds for AttributeDict(lr=0.1)
    data = pickle.dumps(AttributeDict(lr=0.1), protocol=0).replace(
        b"fulmen.utilities\n", b"pytorch_lightning.utilities.parsing\n"
    )
    assert b"pytorch_lightning.utilities.parsing" in data
    with pl_legacy_patch():
        loaded = pickle.loads(data)
    assert isinstance(loaded, AttributeDict) and loaded.lr == 0.1
    assert "pytorch_lightning" not in sys.modules


@pytest.mark.slow
def test_ddp_processes_started_by_the_script_run_in_zero_change_mode_too(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(
        textwrap.dedent(
            """
            import lightning.pytorch as pl
            from lightning.pytorch.demos.boring_classes import BoringModel

            if __name__ == "__main__":
                trainer = pl.Trainer(
                    strategy="ddp", devices=2, accelerator="cpu", max_steps=2, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                )
                trainer.fit(BoringModel())
                # one file per rank: two processes printing to one pipe may interleave their words
                with open(f"rank{trainer.global_rank}.txt", "w") as f:
                    f.write(f"RANK {trainer.global_rank} OF {trainer.world_size} STEP {trainer.global_step}")
            """
        )
    )
    result = _run([sys.executable, "-m", "fulmen", "exec", "train.py"], tmp_path)
    _assert_ok(result)
    assert sorted(p.read_text() for p in tmp_path.glob("rank*.txt")) == [
        "RANK 0 OF 2 STEP 2",
        "RANK 1 OF 2 STEP 2",
    ]

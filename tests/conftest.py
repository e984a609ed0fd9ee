import pytest

import fulmen as L


@pytest.fixture
def make_trainer(tmp_path):
    """A factory for a quiet, fast Trainer on the CPU: no logger, checkpointing, progress bar or summary.

    The CPU is pinned so that the suite checks the same thing on a machine with a GPU (where "auto" would
    pick it); GPU tests ask for accelerator="gpu" themselves.
    """

    def make(**kwargs):
        options = dict(
            accelerator="cpu",
            default_root_dir=tmp_path,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        options.update(kwargs)
        return L.Trainer(**options)

    return make


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Each test starts from the same process-wide state: seed variables, determinism, rank."""
    import os

    import torch

    from fulmen.utilities import rank_zero_only

    saved_env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    deterministic = torch.are_deterministic_algorithms_enabled()
    rank = rank_zero_only.rank
    yield
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.use_deterministic_algorithms(deterministic)
    rank_zero_only.rank = rank

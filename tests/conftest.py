import pytest

import fulmen as L


@pytest.fixture
def make_trainer(tmp_path):
    """A factory for a quiet, fast Trainer: no logger, checkpointing, progress bar or summary."""

    def make(**kwargs):
        options = dict(
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

"""callbacks/on_exception_checkpoint.py: OnExceptionCheckpoint, a resumable checkpoint when a run fails."""

import pytest
import torch

from fulmen.callbacks import OnExceptionCheckpoint
from fulmen.demos import BoringModel


def test_on_exception_checkpoint_saves_a_resumable_checkpoint(make_trainer, tmp_path):
    class Crash(BoringModel):
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    callback = OnExceptionCheckpoint(tmp_path / "ckpts")
    model = Crash()
    trainer = make_trainer(callbacks=[callback], limit_val_batches=0)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model)
    assert callback.ckpt_path == str(tmp_path / "ckpts" / "on_exception.ckpt")
    ckpt = torch.load(callback.ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 3
    torch.testing.assert_close(ckpt["state_dict"]["layer.weight"], model.layer.weight)

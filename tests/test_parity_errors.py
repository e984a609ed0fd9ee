"""Behaviours checked against Lightning 2.6: errors at the boundary (missing steps, bad flag combos)."""

import pytest
import torch

from fulmen.demos import BoringModel


def test_several_optimizers_with_automatic_optimization_is_an_error(make_trainer):
    class Model(BoringModel):
        def configure_optimizers(self):
            return [
                torch.optim.SGD(self.parameters(), lr=0.1),
                torch.optim.Adam(self.parameters(), lr=0.1),
            ]

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(Exception, match="(?i)manual optimization|automatic_optimization"):
        trainer.fit(Model())


class _Manual(BoringModel):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        pass


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"gradient_clip_val": 1.0}, "gradient_clip_val|clip_gradients"),
        ({"accumulate_grad_batches": 2}, "accumulate_grad_batches"),
    ],
    ids=["gradient-clip-val", "accumulate-grad-batches"],
)
def test_an_automatic_optimization_flag_with_manual_optimization_is_an_error(make_trainer, flags, match):
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0, **flags)
    with pytest.raises(Exception, match=match):
        trainer.fit(_Manual())

"""ModelPruning: sparsity reached, local/global/structured pruning, lottery ticket, permanence, checkpoints."""

import pytest
import torch
from torch import nn

import fulmen as L
from fulmen.callbacks import ModelCheckpoint, ModelPruning
from fulmen.utilities import MisconfigurationException


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _zeros(model):
    return sum(int((p == 0).sum()) for p in model.parameters())


def test_global_pruning_prunes_amount_of_the_remaining_weights_each_epoch(
    tmp_path, make_trainer, regression_data
):
    model = Net()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = make_trainer(
        max_epochs=2, enable_checkpointing=True, callbacks=[ModelPruning("l1_unstructured", amount=0.5), ckpt]
    )
    trainer.fit(model, regression_data())
    # 41 parameters: round(0.5 * 41) = 20 pruned after epoch 0, round(0.5 * 21) = 10 more after epoch 1
    assert _zeros(model) == 30
    # made permanent at the end: plain parameters again, no masks or forward pre-hooks left
    names = [n for n, _ in model.named_parameters()]
    assert names == ["layer.0.weight", "layer.0.bias", "layer.2.weight", "layer.2.bias"]
    assert not any(m._forward_pre_hooks for m in model.modules())
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert sorted(state) == sorted(names)  # the checkpoint holds the pruned weights as plain tensors
    assert sum(int((v == 0).sum()) for v in state.values()) == 30


def test_lottery_ticket_resets_the_surviving_weights_to_their_initial_values(make_trainer, regression_data):
    model = Net()
    initial = model.layer[0].weight.detach().clone()
    trainer = make_trainer(max_epochs=2, callbacks=[ModelPruning("l1_unstructured", amount=0.5)])
    trainer.fit(model, regression_data())
    weight = model.layer[0].weight.detach()
    kept = weight != 0
    assert kept.any() and torch.equal(weight[kept], initial[kept])


def test_local_pruning_with_an_amount_schedule_and_without_lottery_ticket(make_trainer, regression_data):
    model = Net()
    cb = ModelPruning(
        "l1_unstructured",
        amount=lambda epoch: 0.25 if epoch == 1 else 0.0,
        use_global_unstructured=False,
        use_lottery_ticket_hypothesis=False,
        parameter_names=["weight"],
    )
    trainer = make_trainer(max_epochs=3, callbacks=[cb])
    trainer.fit(model, regression_data())
    # only epoch 1 prunes: a quarter of each weight (24 -> 6, 8 -> 2), biases untouched
    assert [int((model.layer[i].weight == 0).sum()) for i in (0, 2)] == [6, 2]
    assert int((model.layer[0].bias == 0).sum()) == 0


def test_structured_pruning_removes_whole_rows(make_trainer, regression_data):
    model = Net()
    cb = ModelPruning(
        "ln_structured",
        amount=0.25,
        pruning_dim=0,
        pruning_norm=2,
        use_global_unstructured=False,
        parameters_to_prune=[(model.layer[0], "weight")],
        use_lottery_ticket_hypothesis=False,
    )
    trainer = make_trainer(max_epochs=1, callbacks=[cb])
    trainer.fit(model, regression_data())
    zero_rows = (model.layer[0].weight == 0).all(dim=1)
    assert int(zero_rows.sum()) == 2  # a quarter of 8 output rows


def test_without_make_permanent_the_masks_stay(make_trainer, regression_data):
    model = Net()
    cb = ModelPruning("random_unstructured", amount=3, make_pruning_permanent=False)
    trainer = make_trainer(max_epochs=1, callbacks=[cb])
    trainer.fit(model, regression_data())
    assert hasattr(model.layer[0], "weight_mask") and hasattr(model.layer[0], "weight_orig")
    assert int(sum((m == 0).sum() for n, m in model.named_buffers() if n.endswith("_mask"))) == 3


def test_verbose_reports_the_sparsity(make_trainer, capsys, caplog, regression_data):
    import logging

    caplog.set_level(logging.INFO)
    trainer = make_trainer(max_epochs=1, callbacks=[ModelPruning("l1_unstructured", amount=0.5, verbose=1)])
    trainer.fit(Net(), regression_data())
    text = caplog.text + capsys.readouterr().out
    assert "Applied `L1Unstructured`. Pruned: 0/41 (0.00%) -> 20/41 (48.78%)" in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pruning_fn": "nope"}, "not valid"),
        (
            {"pruning_fn": "ln_structured", "pruning_dim": 0, "pruning_norm": 2},
            "only the 'unstructured' PRUNING_TYPE is supported",
        ),
        ({"pruning_fn": "random_structured", "use_global_unstructured": False}, "pruning_dim"),
        ({"pruning_fn": "l1_unstructured", "parameter_names": ["gamma"]}, "gamma"),
        ({"pruning_fn": lambda module, name, amount: None}, "needs a pruning method"),
        ({"pruning_fn": "l1_unstructured", "verbose": 3}, "verbose"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        ModelPruning(**kwargs)


def test_parameters_not_in_the_model_are_refused(make_trainer, regression_data):
    stranger = nn.Linear(2, 2)
    trainer = make_trainer(
        callbacks=[ModelPruning("l1_unstructured", parameters_to_prune=[(stranger, "weight")])]
    )
    with pytest.raises(MisconfigurationException, match="does not have"):
        trainer.fit(Net(), regression_data())

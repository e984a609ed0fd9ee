"""BaseFinetuning / BackboneFinetuning: freezing, unfreezing into new param groups, lr schedule, resume."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.callbacks import BackboneFinetuning, BaseFinetuning, Callback, ModelCheckpoint
from fulmen.utilities import MisconfigurationException


class BackboneModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)


class GroupRecorder(Callback):
    """Records, at each epoch start (after the finetuning callback ran), the lrs and sizes of the groups."""

    def __init__(self):
        self.lrs, self.sizes, self.backbone_trainable = [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        groups = trainer.optimizers[0].param_groups
        self.lrs.append([round(g["lr"], 6) for g in groups])
        self.sizes.append([len(g["params"]) for g in groups])
        self.backbone_trainable.append(pl_module.backbone[0].weight.requires_grad)


def _loader():
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)


@pytest.mark.filterwarnings("ignore:The provided params to be frozen already exist")  # BatchNorm, trainable
def test_backbone_unfreezes_at_its_epoch_and_its_lr_doubles_up_to_the_main_lr(make_trainer):
    recorder = GroupRecorder()
    trainer = make_trainer(
        max_epochs=7, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2), recorder]
    )
    model = BackboneModel()
    linear_before = model.backbone[0].weight.detach().clone()
    trainer.fit(model, _loader())
    assert recorder.backbone_trainable == [False, False, True, True, True, True, True]
    # the first group holds the head and the (trainable) BatchNorm; the backbone joins at epoch 2 with
    # lr 0.1 * 0.1, then doubles each epoch and is capped at the main lr (should_align)
    assert recorder.sizes[0] == [4] and recorder.sizes[2] == [4, 2]
    assert [lrs[-1] for lrs in recorder.lrs] == [0.1, 0.1, 0.01, 0.02, 0.04, 0.08, 0.1]
    assert not torch.equal(linear_before, model.backbone[0].weight)


def test_train_bn_false_keeps_batchnorm_out_of_the_new_group(make_trainer):
    recorder = GroupRecorder()
    cb = BackboneFinetuning(unfreeze_backbone_at_epoch=1, train_bn=False, backbone_initial_lr=0.5)
    trainer = make_trainer(max_epochs=2, callbacks=[cb, recorder])
    trainer.fit(BackboneModel(), _loader())
    # the BatchNorm stays in the first group (frozen backbone keeps BN trainable, as in Lightning)
    assert recorder.sizes == [[4], [4, 2]]
    assert recorder.lrs[1] == [0.1, 0.5]  # backbone_initial_lr wins over the ratio


def test_module_without_a_backbone_is_refused(make_trainer):
    class NoBackbone(BackboneModel):
        def __init__(self):
            super().__init__()
            del self.backbone

        def forward(self, x):
            return self.head(torch.zeros(x.shape[0], 8))

    trainer = make_trainer(callbacks=[BackboneFinetuning()])
    with pytest.raises(MisconfigurationException, match="backbone"):
        trainer.fit(NoBackbone(), _loader())


def test_freeze_helpers_on_batchnorm_and_parents_with_own_parameters():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.child = nn.Linear(2, 2)
            self.bn = nn.BatchNorm1d(2)

    parent = Parent()
    flat = BaseFinetuning.flatten_modules([parent, nn.ModuleDict({"x": nn.Linear(1, 1)})])
    assert [type(m).__name__ for m in flat] == ["Parent", "Linear", "BatchNorm1d", "Linear"]
    BaseFinetuning.freeze(parent, train_bn=False)
    assert not any(p.requires_grad for p in parent.parameters())
    assert parent.bn.track_running_stats is False
    assert list(BaseFinetuning.filter_params(parent, requires_grad=True)) == []
    BaseFinetuning.make_trainable(parent)
    assert all(p.requires_grad for p in parent.parameters()) and parent.bn.track_running_stats
    BaseFinetuning.freeze(parent, train_bn=True)
    assert [p.requires_grad for p in parent.parameters()] == [False, False, False, True, True]


def test_unfreeze_skips_parameters_already_in_the_optimizer_with_a_warning():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    optimizer = torch.optim.SGD(model[0].parameters(), lr=1.0)
    with pytest.warns(UserWarning, match="already exist within another group"):
        BaseFinetuning.unfreeze_and_add_param_group(model, optimizer)
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["params"] == list(model[1].parameters())
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1)  # lr=None: first group's / initial_denom_lr


def test_custom_finetuning_subclass(make_trainer):
    class UnfreezeHeadLater(BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze(pl_module.head)

        def finetune_function(self, pl_module, epoch, optimizer):
            if epoch == 1:
                self.unfreeze_and_add_param_group(pl_module.head, optimizer, lr=0.05)

    class HeadModel(BackboneModel):
        pass

    recorder = GroupRecorder()
    trainer = make_trainer(max_epochs=2, callbacks=[UnfreezeHeadLater(), recorder])
    trainer.fit(HeadModel(), _loader())
    assert recorder.sizes == [[4], [4, 2]] and recorder.lrs[1] == [0.1, 0.05]


@pytest.mark.filterwarnings("ignore:The provided params to be frozen already exist")  # BatchNorm, trainable
def test_resume_recreates_the_added_param_group_before_the_optimizer_state_loads(tmp_path, make_trainer):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = make_trainer(
        max_epochs=4,
        enable_checkpointing=True,
        callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2), ckpt],
    )
    first.fit(BackboneModel(), _loader())
    recorder = GroupRecorder()
    second = make_trainer(
        max_epochs=6, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=2), recorder]
    )
    model = BackboneModel()
    second.fit(model, _loader(), ckpt_path=str(tmp_path / "last.ckpt"))
    # epochs 4 and 5 continue the schedule (0.02 was epoch 3's): the group exists and the backbone trains
    assert recorder.sizes == [[4, 2], [4, 2]]
    assert [lrs[-1] for lrs in recorder.lrs] == [0.04, 0.08]
    assert recorder.backbone_trainable == [True, True]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["optimizer_states"][0]
    assert len(saved["param_groups"]) == 2

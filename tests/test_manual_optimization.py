"""Manual optimization: automatic_optimization = False."""

import pytest
import torch
from torch.utils.data import DataLoader

from fulmen.demos import BoringModel, RandomDataset


class ManualModel(BoringModel):
    """A BoringModel under manual optimization with one SGD optimizer; tests override what they check."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TwoOptimizers(ManualModel):
    """`layer` is trained by the first optimizer, `other` by the second."""

    def __init__(self):
        super().__init__()
        self.other = torch.nn.Linear(32, 2)

    def configure_optimizers(self):
        self.opt_a = torch.optim.SGD(self.layer.parameters(), lr=0.1)
        self.opt_b = torch.optim.SGD(self.other.parameters(), lr=0.1)
        return [self.opt_a, self.opt_b]


def test_optimizers_returns_a_list_and_only_stepped_params_change(make_trainer):
    class Model(TwoOptimizers):
        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            before_other = self.other.weight.detach().clone()
            before_layer = self.layer.weight.detach().clone()
            opt_a.zero_grad()
            self.manual_backward(self.layer(batch).sum())
            opt_a.step()
            assert torch.equal(before_other, self.other.weight)
            assert not torch.equal(before_layer, self.layer.weight)
            if batch_idx == 1:  # the second optimizer only steps on odd batches
                opt_b.zero_grad()
                self.manual_backward(self.other(batch).sum())
                opt_b.step()
                assert not torch.equal(before_other, self.other.weight)
            self.checked = batch_idx

    model = Model()
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert model.checked == 1
    assert trainer.global_step == 3  # every optimizer step counts


def test_single_optimizer_and_scheduler_are_returned_bare(make_trainer):
    seen = {}

    class Model(ManualModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            sched = self.lr_schedulers()
            seen["opt_is_list"] = isinstance(opt, list)
            seen["sched_is_list"] = isinstance(sched, list)
            opt.zero_grad()
            self.manual_backward(self.step(batch))
            opt.step()
            sched.step()
            seen["lr"] = opt.param_groups[0]["lr"]

    trainer = make_trainer(limit_train_batches=3, limit_val_batches=0)
    trainer.fit(Model())
    assert seen["opt_is_list"] is False
    assert seen["sched_is_list"] is False
    assert seen["lr"] == pytest.approx(0.1 * 0.5**3)
    assert trainer.global_step == 3


def test_tuple_of_dicts_under_manual_optimization(make_trainer):
    class Model(TwoOptimizers):
        def configure_optimizers(self):
            self.opt_a = torch.optim.SGD(self.layer.parameters(), lr=0.1)
            self.opt_b = torch.optim.SGD(self.other.parameters(), lr=0.2)
            sched_a = torch.optim.lr_scheduler.StepLR(self.opt_a, step_size=1, gamma=0.5)
            sched_b = torch.optim.lr_scheduler.StepLR(self.opt_b, step_size=1, gamma=0.1)
            return (
                {"optimizer": self.opt_a, "lr_scheduler": sched_a},
                {"optimizer": self.opt_b, "lr_scheduler": {"scheduler": sched_b}},
            )

        def training_step(self, batch, batch_idx):
            opts = self.optimizers()
            scheds = self.lr_schedulers()
            assert len(opts) == 2 and len(scheds) == 2
            for opt, module in zip(opts, (self.layer, self.other)):
                opt.zero_grad()
                self.manual_backward(module(batch).sum())
                opt.step()
            if batch_idx == 1:  # the last batch of the epoch
                for sched in scheds:
                    sched.step()

    model = Model()
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 8  # 2 optimizers x 2 batches x 2 epochs
    assert model.opt_a.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    assert model.opt_b.param_groups[0]["lr"] == pytest.approx(0.2 * 0.1**2)


def test_lr_schedulers_is_none_without_schedulers(make_trainer):
    seen = []

    class Model(TwoOptimizers):
        def training_step(self, batch, batch_idx):
            seen.append(self.lr_schedulers())

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    assert seen == [None]


def test_manual_backward_gives_the_same_gradients_as_backward(make_trainer):
    grads = {}

    class Model(ManualModel):
        def training_step(self, batch, batch_idx):
            self.zero_grad()
            with torch.enable_grad():
                self.step(batch).backward()
            grads["expected"] = self.layer.weight.grad.clone()
            self.zero_grad()
            self.manual_backward(self.step(batch))
            grads["actual"] = self.layer.weight.grad.clone()

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    torch.testing.assert_close(grads["actual"], grads["expected"])
    assert trainer.global_step == 0  # no optimizer step was taken


def test_manual_loop_matches_a_hand_written_loop(make_trainer):
    torch.manual_seed(0)
    loader = DataLoader(RandomDataset(32, 6), batch_size=2)

    def make_model():
        torch.manual_seed(1)

        class Model(ManualModel):
            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=0.01)

            def training_step(self, batch, batch_idx):
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(self.step(batch))
                opt.step()

        return Model()

    model, reference = make_model(), make_model()
    trainer = make_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)

    opt = torch.optim.Adam(reference.parameters(), lr=0.01)
    for _ in range(2):
        for batch in loader:
            opt.zero_grad()
            reference.step(batch).backward()
            opt.step()
    assert trainer.global_step == 6
    torch.testing.assert_close(model.layer.weight, reference.layer.weight)


def test_toggle_optimizer_freezes_params_of_other_optimizers(make_trainer):
    states = []

    class Model(TwoOptimizers):
        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            self.toggle_optimizer(opt_a)
            states.append(("a", self.layer.weight.requires_grad, self.other.weight.requires_grad))
            opt_a.zero_grad()
            self.manual_backward(self.layer(batch).sum() + self.other(batch).sum())
            assert self.other.weight.grad is None
            opt_a.step()
            self.untoggle_optimizer(opt_a)
            states.append(("-", self.layer.weight.requires_grad, self.other.weight.requires_grad))
            self.toggle_optimizer(opt_b)
            states.append(("b", self.layer.weight.requires_grad, self.other.weight.requires_grad))
            self.untoggle_optimizer(opt_b)
            states.append(("-", self.layer.weight.requires_grad, self.other.weight.requires_grad))

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    assert states == [("a", True, False), ("-", True, True), ("b", False, True), ("-", True, True)]


def test_untoggle_keeps_params_that_were_frozen_before(make_trainer):
    states = []

    class Model(TwoOptimizers):
        def __init__(self):
            super().__init__()
            self.other.bias.requires_grad_(False)  # frozen by the user

        def training_step(self, batch, batch_idx):
            opt_a, _ = self.optimizers()
            self.toggle_optimizer(opt_a)
            self.untoggle_optimizer(opt_a)
            states.append((self.other.weight.requires_grad, self.other.bias.requires_grad))

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    assert states == [(True, False)]


def test_clip_gradients_by_norm_and_value(make_trainer):
    norms = {}

    class Model(ManualModel):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def _grads(self):
            return torch.cat([p.grad.flatten() for p in self.parameters()])

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(100.0 * self.step(batch))
            norms["raw"] = self._grads().norm().item()
            self.clip_gradients(opt, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
            norms["norm"] = self._grads().norm().item()
            self.clip_gradients(opt, gradient_clip_val=0.01, gradient_clip_algorithm="value")
            norms["max"] = self._grads().abs().max().item()
            opt.step()

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Model())
    assert norms["raw"] > 0.5
    assert norms["norm"] == pytest.approx(0.5, rel=1e-4)
    assert norms["max"] == pytest.approx(0.01)


def test_global_step_counts_each_optimizer_step(make_trainer):
    class Model(TwoOptimizers):
        def training_step(self, batch, batch_idx):
            for opt in self.optimizers():
                opt.zero_grad()
                self.manual_backward(self.layer(batch).sum() + self.other(batch).sum())
                opt.step()

    trainer = make_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(Model())
    assert trainer.global_step == 12

"""optim.py: configure_optimizers return forms, learning-rate schedulers and automatic optimization."""

import pytest
import torch
from torch.utils.data import DataLoader

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset
from fulmen.optim import LightningOptimizer
from fulmen.utilities import MisconfigurationException


def _lr(optimizer):
    return optimizer.param_groups[0]["lr"]


class LrRecorder(BoringModel):
    """Records the learning rate seen by every training_step; subclasses pick the return form."""

    def __init__(self):
        super().__init__()
        self.seen_lrs = []

    def training_step(self, batch, batch_idx):
        self.seen_lrs.append(_lr(self.opt))
        return super().training_step(batch, batch_idx)


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


class SGDModel(BoringModel):
    """A BoringModel trained by plain SGD (lr 0.1), without BoringModel's scheduler."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _ListOfOneOptimizer(SGDModel):
    def configure_optimizers(self):
        return [super().configure_optimizers()]


class _StepReturnsATensor(SGDModel):
    def training_step(self, batch, batch_idx):
        return self.step(batch)


@pytest.mark.parametrize(
    "model_class",
    [SGDModel, _ListOfOneOptimizer, _StepReturnsATensor],
    ids=["bare-optimizer", "list-of-one-optimizer", "training-step-returns-a-tensor"],
)
def test_model_trains(make_trainer, model_class):
    model = model_class()
    before = _weights(model)
    trainer = make_trainer(limit_train_batches=3, limit_val_batches=0)
    trainer.fit(model)
    assert trainer.global_step == 3
    assert not torch.equal(before[0], model.layer.weight)


def _halving(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def _with_config(**config):
    """A configure_optimizers result whose scheduler config has `config` besides the halving scheduler."""
    return lambda opt: {"optimizer": opt, "lr_scheduler": {"scheduler": _halving(opt), **config}}


@pytest.mark.parametrize(
    ("configure", "epochs", "batches", "seen_lrs", "final_lr"),
    [
        pytest.param(
            lambda opt: ([opt], [_halving(opt)]),
            3,
            2,
            [0.1, 0.1, 0.05, 0.05, 0.025, 0.025],
            0.0125,
            id="two-lists-steps-once-per-epoch",
        ),
        pytest.param(
            lambda opt: {"optimizer": opt, "lr_scheduler": _halving(opt)},
            2,
            3,
            [0.1] * 3 + [0.05] * 3,
            0.025,
            id="dict-with-bare-scheduler-defaults-to-epoch",
        ),
        pytest.param(
            _with_config(interval="step"),
            1,
            4,
            [0.1, 0.05, 0.025, 0.0125],
            0.1 * 0.5**4,
            id="step-interval-steps-every-batch",
        ),
        pytest.param(
            _with_config(interval="epoch", frequency=2),
            4,
            1,
            [0.1, 0.1, 0.05, 0.05],
            0.025,
            id="epoch-interval-frequency-2",
        ),
        pytest.param(
            _with_config(interval="step", frequency=2),
            1,
            4,
            [0.1, 0.1, 0.05, 0.05],
            0.025,
            id="step-interval-frequency-2",
        ),
    ],
)
def test_scheduler_steps_at_its_interval(make_trainer, configure, epochs, batches, seen_lrs, final_lr):
    class Model(LrRecorder):
        def configure_optimizers(self):
            self.opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return configure(self.opt)

    model = Model()
    trainer = make_trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0)
    trainer.fit(model)
    assert model.seen_lrs == pytest.approx(seen_lrs)
    assert _lr(model.opt) == pytest.approx(final_lr)


def test_reduce_lr_on_plateau_reads_the_monitored_metric(make_trainer):
    class Model(LrRecorder):
        def training_step(self, batch, batch_idx):
            # a metric that never improves: the plateau scheduler halves the lr after each epoch
            # after the first
            self.log("flat", 1.0, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def configure_optimizers(self):
            self.opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=0)
            return {"optimizer": self.opt, "lr_scheduler": {"scheduler": sched, "monitor": "flat"}}

    model = Model()
    trainer = make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model)
    assert model.seen_lrs == pytest.approx([0.1, 0.1, 0.05])
    assert _lr(model.opt) == pytest.approx(0.025)


class _EpochEvents(BoringModel):
    """Records when the epoch-interval halving scheduler steps relative to the hooks, and the lr validation sees."""

    def __init__(self, plateau=False):
        super().__init__()
        self.events = []
        self.plateau = plateau

    def configure_optimizers(self):
        self.opt = torch.optim.SGD(self.parameters(), lr=0.1)
        if self.plateau:
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=0)
            return {"optimizer": self.opt, "lr_scheduler": {"scheduler": sched, "monitor": "flat"}}
        return {"optimizer": self.opt, "lr_scheduler": _halving(self.opt)}

    def training_step(self, batch, batch_idx):
        self.log("flat", 1.0, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def lr_scheduler_step(self, scheduler, metric):
        self.events.append("lr_scheduler_step")
        super().lr_scheduler_step(scheduler, metric)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.events.append(f"on_train_batch_end {batch_idx}")

    def on_validation_start(self):
        self.events.append(f"validation at lr {_lr(self.opt)}")

    def on_train_epoch_end(self):
        self.events.append("on_train_epoch_end")


def test_epoch_scheduler_steps_after_the_last_batch_before_its_end_hooks(make_trainer):
    """As Lightning: before on_train_batch_end of the epoch's last batch, so validation sees the new lr."""
    model = _EpochEvents()
    make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0).fit(model)
    assert model.events == [
        "on_train_batch_end 0",
        "lr_scheduler_step",
        "on_train_batch_end 1",
        "validation at lr 0.05",
        "on_train_epoch_end",
    ]


def test_plateau_scheduler_steps_after_the_epoch_end_hooks(make_trainer):
    model = _EpochEvents(plateau=True)
    make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0).fit(model)
    assert model.events == [
        "on_train_batch_end 0",
        "on_train_batch_end 1",
        "on_train_epoch_end",
        "lr_scheduler_step",
    ]


def test_epoch_cut_short_does_not_step_epoch_schedulers(make_trainer):
    """As Lightning: max_steps ending the fit mid-epoch leaves the epoch-interval schedulers where they were."""
    model = _EpochEvents()
    make_trainer(max_steps=1, limit_train_batches=3, limit_val_batches=0).fit(model)
    assert "lr_scheduler_step" not in model.events
    assert _lr(model.opt) == pytest.approx(0.1)


def _plateau(opt):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt)


@pytest.mark.parametrize(
    ("lr_scheduler", "match"),
    [
        pytest.param(_plateau, "monitor", id="plateau-without-monitor"),
        pytest.param(
            lambda opt: {"scheduler": _plateau(opt), "monitor": "nope"}, "nope", id="plateau-missing-metric"
        ),
        pytest.param(
            lambda opt: {"scheduler": _halving(opt), "interval": "fortnight"}, "interval", id="bad-interval"
        ),
    ],
)
def test_bad_scheduler_config_is_an_error(make_trainer, lr_scheduler, match):
    class Model(BoringModel):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": lr_scheduler(opt)}

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(Exception, match=match):
        trainer.fit(Model())


def test_configure_optimizers_returning_none_trains_without_stepping(make_trainer):
    steps = []

    class Model(BoringModel):
        def configure_optimizers(self):
            return None

        def training_step(self, batch, batch_idx):
            steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    model = Model()
    before = _weights(model)
    trainer = make_trainer(limit_train_batches=3, limit_val_batches=0)
    with pytest.warns(UserWarning, match="(?i)optimizer"):
        trainer.fit(model)
    assert steps == [0, 1, 2]
    for old, new in zip(before, model.parameters()):
        assert torch.equal(old, new)


def test_training_step_returning_none_skips_the_batch(make_trainer):
    snapshots = []

    class Model(SGDModel):
        def training_step(self, batch, batch_idx):
            snapshots.append(self.layer.weight.detach().clone())
            if batch_idx == 1:
                return None
            return super().training_step(batch, batch_idx)

    model = Model()
    trainer = make_trainer(limit_train_batches=3, limit_val_batches=0)
    trainer.fit(model)
    # batch 0 stepped, batch 1 was skipped: weights seen at batch 1 and batch 2 are equal
    assert not torch.equal(snapshots[0], snapshots[1])
    assert torch.equal(snapshots[1], snapshots[2])
    assert not torch.equal(snapshots[2], model.layer.weight)


def _seeded_data(n=8, batch_size=2):
    torch.manual_seed(0)
    return DataLoader(RandomDataset(32, n), batch_size=batch_size, shuffle=False)


def _sgd_model():
    torch.manual_seed(1)

    class Model(BoringModel):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

        def training_step(self, batch, batch_idx):
            return self.step(batch)

    return Model()


@pytest.mark.parametrize(
    ("epochs", "accumulate", "steps"), [(2, 1, 8), (1, 2, 2)], ids=["plain-fit", "accumulate-grad-batches-2"]
)
def test_fit_matches_a_hand_written_loop(make_trainer, epochs, accumulate, steps):
    loader = _seeded_data()
    model = _sgd_model()
    reference = _sgd_model()

    trainer = make_trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)

    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for i, batch in enumerate(loader):
            loss = reference.step(batch) / accumulate  # the loss is scaled by 1 / accumulate_grad_batches
            loss.backward()
            if (i + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()

    assert trainer.global_step == steps
    torch.testing.assert_close(model.layer.weight, reference.layer.weight)
    torch.testing.assert_close(model.layer.bias, reference.layer.bias)


class _GradRecorder(BoringModel):
    def __init__(self):
        super().__init__()
        self.grads = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def training_step(self, batch, batch_idx):
        return 100.0 * self.step(batch)  # large gradients, so clipping matters

    def on_before_optimizer_step(self, optimizer):
        self.raw_norm = torch.cat([p.grad.flatten() for p in self.parameters()]).norm()

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.grads.append(torch.cat([p.grad.flatten() for p in self.parameters()]).clone())


def test_gradient_clip_val_clips_by_norm(make_trainer):
    model = _GradRecorder()
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0, gradient_clip_val=0.5)
    trainer.fit(model)
    assert model.raw_norm > 0.5
    assert model.grads[0].norm().item() == pytest.approx(0.5, rel=1e-4)


def test_gradient_clip_val_clips_by_value(make_trainer):
    model = _GradRecorder()
    trainer = make_trainer(
        limit_train_batches=1,
        limit_val_batches=0,
        gradient_clip_val=0.01,
        gradient_clip_algorithm="value",
    )
    trainer.fit(model)
    grads = model.grads[0]
    assert grads.abs().max().item() == pytest.approx(0.01)
    assert (grads.abs() <= 0.01 + 1e-7).all()


def test_no_gradient_clipping_by_default(make_trainer):
    model = _GradRecorder()
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model)
    assert model.grads[0].norm().item() == pytest.approx(model.raw_norm.item())


def test_clip_gradients_without_arguments_takes_the_trainer_flags(make_trainer):
    """As Lightning: a user's configure_gradient_clipping calling clip_gradients(optimizer) clips by the flags."""

    class Model(_GradRecorder):
        def configure_gradient_clipping(
            self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
        ):
            self.hook_args = (gradient_clip_val, gradient_clip_algorithm)
            self.clip_gradients(optimizer)

    model = Model()
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0, gradient_clip_val=0.01)
    trainer.fit(model)
    assert trainer.gradient_clip_algorithm is None  # not given: None, as Lightning (clipping is by norm)
    assert model.hook_args == (0.01, None)
    assert model.raw_norm > 0.01
    assert model.grads[0].norm().item() == pytest.approx(0.01, rel=1e-4)


def test_global_step_counts_optimizer_steps_not_batches(make_trainer):
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=6, limit_val_batches=0, accumulate_grad_batches=3
    )
    trainer.fit(SGDModel())
    assert trainer.global_step == 4


class _Listens(L.Callback):
    """A step hook with a listener: the loop must take the general closure path."""

    def on_after_backward(self, trainer, pl_module):
        pass


class _SometimesSkips(BoringModel):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def training_step(self, batch, batch_idx):
        return None if batch_idx == 2 else super().training_step(batch, batch_idx)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_direct_and_closure_steps_train_identically(make_trainer, accumulate):
    """The default-only step skips the closure plumbing; with a step hook listening it cannot. Same result."""
    runs = []
    for callbacks in ([], [_Listens()]):
        torch.manual_seed(0)
        model = _SometimesSkips()
        trainer = make_trainer(
            limit_train_batches=7,
            limit_val_batches=0,
            accumulate_grad_batches=accumulate,
            callbacks=callbacks,
        )
        trainer.fit(model)
        runs.append((trainer.fit_loop._direct is not None, trainer.global_step, _weights(model)))
    (direct, steps, weights), (general, steps_general, weights_general) = runs
    assert direct and not general
    assert steps == steps_general == (7 if accumulate == 1 else 4)
    for a, b in zip(weights, weights_general):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "override",
    ["optimizer_step", "optimizer_zero_grad", "backward", "clip", "profiler", "bf16-mixed"],
)
def test_any_override_or_extra_keeps_the_general_step(make_trainer, override):
    class Model(_SometimesSkips):
        if override == "optimizer_step":

            def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
                optimizer.step(closure=optimizer_closure)

        if override == "optimizer_zero_grad":

            def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
                optimizer.zero_grad()

        if override == "backward":

            def backward(self, loss, *args, **kwargs):
                loss.backward(*args, **kwargs)

    options = {
        "clip": {"gradient_clip_val": 1.0},
        "profiler": {"profiler": "simple"},
        "bf16-mixed": {"precision": "bf16-mixed"},
    }.get(override, {})
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=0, **options)
    trainer.fit(Model())
    assert trainer.fit_loop._direct is None
    assert trainer.global_step == 2


def test_self_optimizers_is_an_instance_of_the_optimizer_class(make_trainer):
    # Lightning 2.6: isinstance(self.optimizers(), torch.optim.SGD) is True
    seen = []

    class Model(SGDModel):
        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            seen.append((isinstance(opt, torch.optim.SGD), isinstance(opt, LightningOptimizer)))
            seen.append(opt.param_groups is opt.optimizer.param_groups and opt.defaults["lr"] == 0.1)
            return super().training_step(batch, batch_idx)

    make_trainer(limit_train_batches=1, limit_val_batches=0).fit(Model())
    assert seen == [(True, True), True]


def test_wrapped_optimizer_pickles_as_a_wrapper_of_the_same_optimizer(make_trainer):
    import pickle

    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    model = BoringModel()
    trainer.fit(model)
    wrapper = trainer.strategy.lightning_optimizers[0]
    wrapper._trainer = None  # the trainer itself is not what this checks
    copy = pickle.loads(pickle.dumps(wrapper))
    assert type(copy).__name__ == "LightningSGD" and isinstance(copy, torch.optim.SGD)
    assert copy.optimizer.param_groups[0]["lr"] == wrapper.param_groups[0]["lr"]


def test_scheduler_built_on_another_optimizer_is_rejected(make_trainer):
    class OtherOptimizer(BoringModel):
        def configure_optimizers(self):
            used = torch.optim.SGD(self.parameters(), lr=0.1)
            other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            return [used], [torch.optim.lr_scheduler.StepLR(other, step_size=1)]

    with pytest.raises(MisconfigurationException, match="StepLR, which was built on an optimizer it did not"):
        make_trainer(limit_train_batches=1).fit(OtherOptimizer())


def test_lightning_optimizer_copies_without_recursion() -> None:
    """Parity with Lightning 2.6: copy.copy of a LightningOptimizer wraps the same optimizer."""
    import copy

    from fulmen.optim import LightningOptimizer

    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    clone = copy.copy(LightningOptimizer(opt, trainer=None))  # type: ignore[arg-type]
    assert clone.optimizer is opt


def test_several_optimizers_with_automatic_optimization_is_an_error(make_trainer):
    """Parity with Lightning 2.6: several optimizers need manual optimization."""

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
    """Parity with Lightning 2.6: gradient_clip_val and accumulate_grad_batches refuse manual optimization."""
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0, **flags)
    with pytest.raises(Exception, match=match):
        trainer.fit(_Manual())


@pytest.mark.parametrize("garbage", ["adam", 42, {"lr": 0.1}])
def test_configure_optimizers_returning_garbage_names_it(make_trainer, garbage):
    class Model(BoringModel):
        def configure_optimizers(self):
            return garbage

    with pytest.raises(Exception, match="configure_optimizers"):
        make_trainer(limit_train_batches=1, limit_val_batches=0).fit(Model())

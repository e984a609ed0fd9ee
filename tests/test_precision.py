import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.demos import BoringModel
from fulmen.precision import (
    DoublePrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
    resolve_precision,
)
from fulmen.utilities import MisconfigurationException

# "16-mixed" needs CUDA through the Trainer flag; the same class runs on CPU when built by hand, which
# lets these tests exercise the grad-scaler path (scaling, unscaling, skipped steps) without a GPU.


def _cpu_fp16_mixed(init_scale=1024.0, **kwargs):
    return MixedPrecision(
        "16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale, **kwargs)
    )


def _loader(n=8, features=32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=2)


class Classifier(L.LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.layer = nn.Linear(32, 2)
        self.lr = lr
        self.seen = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        self.seen.append((x.dtype, y.dtype, logits.dtype, torch.zeros(1).dtype))
        return nn.functional.cross_entropy(logits.float(), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


# ------------------------------------------------------------------ flag resolution


@pytest.mark.parametrize(
    ("legacy", "name"),
    [(32, "32-true"), ("32", "32-true"), (64, "64-true"), ("64", "64-true"), ("bf16", "bf16-mixed")],
)
def test_legacy_spellings_map_with_a_warning(legacy, name):
    with pytest.warns(UserWarning, match=f"legacy spelling.*precision='{name}'"):
        trainer = L.Trainer(precision=legacy, logger=False, accelerator="cpu")
    assert trainer.precision == name


@pytest.mark.parametrize("flag", ["16-mixed", 16, "16"])
def test_16_mixed_on_cpu_falls_back_to_bf16_mixed_with_lightnings_warning(flag):
    # Lightning 2.6: "...AMP with fp16 is not supported on CPU. Using `precision='bf16-mixed'` instead."
    with pytest.warns(
        UserWarning, match=r"fp16 is not supported on CPU. Using `precision='bf16-mixed'` instead"
    ):
        trainer = L.Trainer(precision=flag, accelerator="cpu", logger=False)
    assert trainer.precision == "bf16-mixed"


def test_modern_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("32-true", "bf16-mixed", "16-true", "bf16-true", "64-true"):
            assert resolve_precision(name, "cpu").name == name


def test_16_mixed_on_mps_names_the_alternatives():
    with pytest.raises(MisconfigurationException) as err:
        resolve_precision("16-mixed", "mps")
    message = str(err.value)
    assert "CUDA" in message and "'bf16-mixed'" in message and "'16-true'" in message
    assert "'bf16-true'" in message


def test_unknown_precision_lists_the_valid_modes():
    with pytest.raises(MisconfigurationException, match=r"precision='8-true' is not valid.*'bf16-mixed'"):
        L.Trainer(precision="8-true", logger=False)


def test_each_mode_builds_its_class():
    assert type(resolve_precision("32-true", "cpu")) is Precision
    assert type(resolve_precision(None, "cpu")) is Precision
    assert type(resolve_precision("bf16-mixed", "cpu")) is MixedPrecision
    assert type(resolve_precision("16-true", "cpu")) is HalfPrecision
    assert type(resolve_precision("bf16-true", "cpu")) is HalfPrecision
    assert type(resolve_precision("64-true", "cpu")) is DoublePrecision
    mine = _cpu_fp16_mixed()
    assert resolve_precision(mine, "cpu") is mine


def test_bf16_mixed_with_a_scaler_is_refused():
    with pytest.raises(MisconfigurationException, match="bf16-mixed.*scaler"):
        MixedPrecision("bf16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


# ------------------------------------------------------------------ what each mode does to a run


def test_bf16_mixed_runs_the_step_under_autocast_with_fp32_weights(make_trainer):
    model = Classifier()
    make_trainer(precision="bf16-mixed").fit(model, _loader())
    x_dtype, y_dtype, logits_dtype, _ = model.seen[0]
    assert (x_dtype, y_dtype, logits_dtype) == (torch.float32, torch.int64, torch.bfloat16)
    assert model.layer.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("name", "dtype"), [("16-true", torch.float16), ("bf16-true", torch.bfloat16), ("64-true", torch.float64)]
)
def test_true_modes_cast_the_module_and_float_inputs(make_trainer, name, dtype):
    model = Classifier()
    make_trainer(precision=name).fit(model, _loader())
    x_dtype, y_dtype, logits_dtype, created = model.seen[0]
    assert x_dtype == logits_dtype == created == dtype
    assert y_dtype == torch.int64  # integer labels are left alone
    assert model.layer.weight.dtype == dtype
    assert torch.get_default_dtype() == torch.float32  # restored after the step


def test_64_true_matches_a_hand_written_fp64_loop(make_trainer):
    torch.manual_seed(0)
    model = Classifier()
    reference = nn.Linear(32, 2).double()
    reference.load_state_dict(model.layer.state_dict())
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for x, y in _loader():
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(x.double()).float(), y).backward()  # as Classifier does
        optimizer.step()
    make_trainer(precision="64-true").fit(model, _loader())
    assert torch.equal(model.layer.weight, reference.weight)


def test_bf16_mixed_validation_and_predict_also_autocast(make_trainer):
    dtypes = []

    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            dtypes.append(self(batch).dtype)

        def predict_step(self, batch, batch_idx):
            return self(batch)

    trainer = make_trainer(precision="bf16-mixed", limit_val_batches=1, limit_predict_batches=1)
    model = Model()
    trainer.validate(model, verbose=False)
    out = trainer.predict(model)
    assert dtypes == [torch.bfloat16] and out[0].dtype == torch.bfloat16


# ------------------------------------------------------------------ the grad scaler ("16-mixed")


class ScaledGradients(Classifier):
    """Records the gradient seen after backward (scaled) and before the step (unscaled)."""

    def __init__(self, lr=0.1):
        super().__init__(lr)
        self.after_backward = []
        self.before_step = []

    def on_after_backward(self):
        self.after_backward.append(self.layer.weight.grad.clone())

    def on_before_optimizer_step(self, optimizer):
        self.before_step.append(self.layer.weight.grad.clone())


def test_16_mixed_hooks_see_unscaled_gradients(make_trainer):
    model = ScaledGradients()
    precision = _cpu_fp16_mixed(init_scale=1024.0, growth_interval=1000)
    make_trainer(precision=precision, max_steps=1).fit(model, _loader())
    scaled, unscaled = model.after_backward[0], model.before_step[0]
    assert torch.allclose(scaled, unscaled * 1024.0)
    assert precision.scaler.get_scale() == 1024.0


def test_16_mixed_clipping_sees_unscaled_gradients(make_trainer):
    model = Classifier(lr=1.0)
    before = model.layer.weight.detach().clone()
    bias_before = model.layer.bias.detach().clone()
    precision = _cpu_fp16_mixed(init_scale=2.0**14)
    make_trainer(precision=precision, max_steps=1, gradient_clip_val=0.01).fit(model, _loader())
    delta = torch.cat([(model.layer.weight - before).flatten(), (model.layer.bias - bias_before).flatten()])
    # SGD with lr=1 moves by the clipped gradient; clipping scaled gradients would move 2**14 times less
    assert math.isclose(delta.norm().item(), 0.01, rel_tol=1e-3)


def test_16_mixed_skips_the_step_on_inf_and_lowers_the_scale(make_trainer):
    class Overflow(ScaledGradients):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("inf") if batch_idx == 0 else loss

    model = Overflow()
    before = model.layer.weight.detach().clone()
    steps = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append((pl_module.layer.weight.detach().clone(), precision.scaler.get_scale()))

    precision = _cpu_fp16_mixed(init_scale=1024.0)
    make_trainer(precision=precision, max_steps=2, callbacks=[Watch()]).fit(model, _loader())
    weight_after_inf, scale_after_inf = steps[0]
    assert torch.equal(weight_after_inf, before)  # the overflowing step was skipped
    assert scale_after_inf == 512.0
    assert not torch.equal(steps[1][0], before)  # the next, finite step updates the weights


def test_16_mixed_scaler_state_is_checkpointed_and_restored(make_trainer, tmp_path):
    class Overflow(Classifier):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * float("inf")

    precision = _cpu_fp16_mixed(init_scale=1024.0)
    trainer = make_trainer(precision=precision, max_steps=2)
    trainer.fit(Overflow(), _loader())
    path = tmp_path / "scaled.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["MixedPrecision"]["scale"] == 256.0

    resumed = _cpu_fp16_mixed(init_scale=1024.0)
    seen = []

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(resumed.scaler.get_scale())

    make_trainer(precision=resumed, max_steps=3, callbacks=[Watch()]).fit(
        Classifier(), _loader(), ckpt_path=path
    )
    assert seen == [256.0]


def test_16_mixed_training_step_returning_none_skips_without_error(make_trainer):
    class Skipper(Classifier):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if batch_idx % 2 == 0 else loss

    model = Skipper()
    before = model.layer.weight.detach().clone()
    make_trainer(precision=_cpu_fp16_mixed()).fit(model, _loader())
    assert not torch.equal(model.layer.weight, before)


def test_16_mixed_refuses_lbfgs(make_trainer):
    class WithLBFGS(Classifier):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters())

    with pytest.raises(MisconfigurationException, match="LBFGS"):
        make_trainer(precision=_cpu_fp16_mixed(), max_steps=1).fit(WithLBFGS(), _loader())


# ------------------------------------------------------------------ manual optimization under every mode


class Manual(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(32, 2)
        self.grads_before_step = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = nn.functional.cross_entropy(self.layer(x).float(), y)
        opt.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=100.0)
        opt.step()
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.grads_before_step.append(self.layer.weight.grad.detach().float().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    "precision", ["32-true", "bf16-mixed", "16-true", "bf16-true", "64-true", "16-mixed-cpu"]
)
def test_manual_optimization_runs_under_every_mode(make_trainer, precision):
    model = Manual()
    before = model.layer.weight.detach().clone()
    flag = _cpu_fp16_mixed(init_scale=256.0) if precision == "16-mixed-cpu" else precision
    trainer = make_trainer(precision=flag)
    trainer.fit(model, _loader())
    assert trainer.global_step == 4
    assert not torch.equal(model.layer.weight.detach().to(before.dtype), before)
    assert len(model.grads_before_step) == 4
    if precision == "16-mixed-cpu":
        # the gradients that reach on_before_optimizer_step are unscaled: nowhere near 256x a normal one
        assert all(g.abs().max() < 10 for g in model.grads_before_step)
        assert flag.scaler.get_scale() == 256.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_gpu_check_script_exits_cleanly_without_cuda(monkeypatch, capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr("sys.argv", ["gpu_check.py"])
    assert script.main() == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_a_precision_object_can_come_through_plugins(make_trainer):
    precision = _cpu_fp16_mixed()
    trainer = make_trainer(plugins=[precision])
    assert trainer.precision_plugin is precision and trainer.precision == "16-mixed"


def test_precision_in_plugins_and_flag_is_refused():
    with pytest.raises(MisconfigurationException, match="precision was given twice"):
        L.Trainer(plugins=[_cpu_fp16_mixed()], precision="bf16-mixed", logger=False)


def test_optimizer_that_requires_its_closure_still_gets_it(make_trainer):
    calls = []

    class NeedsClosure(torch.optim.SGD):
        def step(self, closure):  # like SAM: the optimizer decides when to evaluate
            calls.append("step")
            loss = closure()
            super().step()
            return loss

    class Model(Classifier):
        def configure_optimizers(self):
            return NeedsClosure(self.parameters(), lr=0.1)

    model = Model()
    before = model.layer.weight.detach().clone()
    make_trainer(max_steps=2).fit(model, _loader())
    assert calls == ["step", "step"] and not torch.equal(model.layer.weight, before)


def test_manual_step_with_a_closure_returns_its_loss(make_trainer):
    returned = []

    class Model(Manual):
        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch

            def closure():
                loss = nn.functional.cross_entropy(self.layer(x), y)
                opt.zero_grad()
                self.manual_backward(loss)
                return loss

            returned.append(opt.step(closure=closure))

    make_trainer(max_steps=1).fit(Model(), _loader())
    assert isinstance(returned[0], torch.Tensor) and returned[0].ndim == 0


# ------------------------------------------------------------------ parity with hand-written loops


def _hand_loop(model, precision, accumulate=1):
    """What a careful PyTorch user writes for each mode, to compare final weights with fulmen's."""
    reference = nn.Linear(32, 2)
    reference.load_state_dict(model.layer.state_dict())
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if precision == "16-mixed" else None
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[precision]
    batches = list(_loader())
    for i, (x, y) in enumerate(batches):
        if i % accumulate == 0:
            optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = nn.functional.cross_entropy(reference(x).float(), y) / accumulate
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if (i + 1) % accumulate == 0 or i + 1 == len(batches):
            if scaler is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
                scaler.step(optimizer)
                scaler.update()
            else:
                torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
                optimizer.step()
    return reference


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_mixed_precision_matches_a_hand_written_loop_exactly(make_trainer, precision, accumulate):
    torch.manual_seed(0)
    model = Classifier()
    reference = _hand_loop(model, precision, accumulate)
    flag = _cpu_fp16_mixed(init_scale=1024.0) if precision == "16-mixed" else precision
    make_trainer(precision=flag, accumulate_grad_batches=accumulate, gradient_clip_val=0.5).fit(
        model, _loader()
    )
    assert torch.equal(model.layer.weight, reference.weight)
    assert torch.equal(model.layer.bias, reference.bias)

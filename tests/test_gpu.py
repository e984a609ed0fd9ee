"""Checks that need a CUDA device: the precision modes, resume and NCCL on real hardware.

Every test here is marked `gpu` and skips on a machine without CUDA, so CI (CPU only) skips the file.
The CPU suite covers the same code paths with a CPU grad scaler and gloo; these tests make sure the
CUDA kernels, the CUDA grad scaler, the CUDA RNG and NCCL behave as the CPU stand-ins promised.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.precision import HalfPrecision, MixedPrecision

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

HELPERS = Path(__file__).parent / "helpers"


def _loader(n=8, features=32, batch_size=2):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Classifier(L.LightningModule):
    """A linear classifier that records the dtypes and gradients the hooks see."""

    def __init__(self, lr=0.1, dropout=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(32, 2)
        self.dropout = nn.Dropout(dropout)
        self.lr = lr
        self.logit_dtypes = []
        self.after_backward = []
        self.before_step = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(self.dropout(x))
        self.logit_dtypes.append(logits.dtype)
        return nn.functional.cross_entropy(logits.float(), y)

    def on_after_backward(self):
        self.after_backward.append(self.layer.weight.grad.detach().clone())

    def on_before_optimizer_step(self, optimizer):
        self.before_step.append(self.layer.weight.grad.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _gpu_trainer(make_trainer, **kwargs):
    return make_trainer(accelerator="gpu", devices=1, limit_val_batches=0, **kwargs)


def test_auto_accelerator_picks_the_gpu():
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert trainer.accelerator.name == "cuda"
    assert trainer.strategy.root_device == torch.device("cuda", 0)


def test_16_mixed_runs_fp16_steps_with_fp32_weights_and_a_cuda_scaler(make_trainer):
    model = Classifier()
    trainer = _gpu_trainer(make_trainer, precision="16-mixed")
    trainer.fit(model, _loader())
    assert isinstance(trainer.precision_plugin, MixedPrecision)
    assert model.logit_dtypes == [torch.float16] * 4
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())
    scaler = trainer.precision_plugin.scaler
    assert scaler is not None and 0 < scaler.get_scale() < float("inf")


def test_16_mixed_hooks_see_unscaled_gradients(make_trainer):
    model = Classifier()
    precision = MixedPrecision(
        "16-mixed", "cuda", scaler=torch.amp.GradScaler("cuda", init_scale=1024.0, growth_interval=1000)
    )
    _gpu_trainer(make_trainer, precision=precision, max_steps=1).fit(model, _loader())
    torch.testing.assert_close(model.after_backward[0], model.before_step[0] * 1024.0)


def test_16_mixed_matches_a_hand_written_amp_loop(make_trainer):
    model = Classifier()
    reference = nn.Linear(32, 2).cuda()
    reference.load_state_dict(model.layer.state_dict())
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    for x, y in _loader():
        x, y = x.cuda(), y.cuda()
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(reference(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
    _gpu_trainer(make_trainer, precision="16-mixed", gradient_clip_val=0.5).fit(model, _loader())
    torch.testing.assert_close(model.layer.weight, reference.weight)
    torch.testing.assert_close(model.layer.bias, reference.bias)


def test_16_mixed_skips_an_inf_step_and_halves_the_scale(make_trainer):
    class Overflow(Classifier):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("inf") if batch_idx == 0 else loss

    model = Overflow()
    before = model.layer.weight.detach().clone().cuda()
    seen = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(
                (pl_module.layer.weight.detach().clone(), trainer.precision_plugin.scaler.get_scale())
            )

    _gpu_trainer(make_trainer, precision="16-mixed", max_steps=2, callbacks=[Watch()]).fit(model, _loader())
    assert torch.equal(seen[0][0], before)
    assert seen[0][1] == 65536.0 / 2
    assert not torch.equal(seen[1][0], before)


def test_bf16_mixed_runs_bf16_steps_with_fp32_weights(make_trainer):
    model = Classifier()
    trainer = _gpu_trainer(make_trainer, precision="bf16-mixed")
    trainer.fit(model, _loader())
    assert model.logit_dtypes == [torch.bfloat16] * 4
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert getattr(trainer.precision_plugin, "scaler", None) is None


@pytest.mark.parametrize(("name", "dtype"), [("16-true", torch.float16), ("bf16-true", torch.bfloat16)])
def test_true_half_modes_cast_the_module(make_trainer, name, dtype):
    model = Classifier()
    trainer = _gpu_trainer(make_trainer, precision=name)
    trainer.fit(model, _loader())
    assert isinstance(trainer.precision_plugin, HalfPrecision)
    assert model.logit_dtypes == [dtype] * 4
    assert all(p.dtype == dtype and p.is_cuda for p in model.parameters())


def test_manual_optimization_under_16_mixed(make_trainer):
    class Manual(Classifier):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            loss = super().training_step(batch, batch_idx)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()

    model = Manual()
    before = model.layer.weight.detach().clone().cuda()
    # a modest initial scale: the default 65536 may overflow fp16 in the first steps, which are then skipped
    precision = MixedPrecision("16-mixed", "cuda", scaler=torch.amp.GradScaler("cuda", init_scale=256.0))
    trainer = _gpu_trainer(make_trainer, precision=precision)
    trainer.fit(model, _loader())
    assert trainer.global_step == 4
    assert not torch.equal(model.layer.weight, before)
    # on_before_optimizer_step sees unscaled gradients: a scaled one would be 256x larger
    assert all(g.abs().max() < 10 for g in model.before_step)


def test_scaler_state_and_cuda_rng_resume_exactly(make_trainer, tmp_path):
    """Stop after 1 of 2 epochs, disturb the CUDA RNG, resume: the same weights as 2 epochs in one go."""
    loader = _loader(n=16, batch_size=4)
    whole = Classifier(dropout=0.5)
    _gpu_trainer(make_trainer, precision="16-mixed", max_epochs=2).fit(whole, loader)

    first = Classifier(dropout=0.5)
    trainer = _gpu_trainer(make_trainer, precision="16-mixed", max_epochs=1)
    trainer.fit(first, loader)
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert saved["MixedPrecision"]["scale"] == trainer.precision_plugin.scaler.get_scale()

    second = Classifier(dropout=0.5)  # re-seeds: only the checkpoint's RNG state gives the same masks
    resumed = _gpu_trainer(make_trainer, precision="16-mixed", max_epochs=2)
    resumed.fit(second, loader, ckpt_path=path)
    assert resumed.global_step == 8
    assert torch.equal(second.layer.weight, whole.layer.weight)
    assert torch.equal(second.layer.bias, whole.layer.bias)


def _nccl_run(tmp_path, strategy):
    """One process on one GPU through the DDP/FSDP strategy: the process group must be NCCL."""
    from test_ddp import HELPERS, _load, _run

    args = [
        str(HELPERS / "ddp_fit.py"),
        str(tmp_path),
        "accelerator=gpu",
        "devices=1",
        f"strategy={strategy}",
    ]
    proc, _ = _run([*args, "max_epochs=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _load(tmp_path / "rank0.pt")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_one_gpu_process_group_is_nccl_and_trains_like_a_plain_loop(tmp_path, strategy):
    result = _nccl_run(tmp_path, strategy)
    assert result["backend"] == "nccl"
    assert result["global_step"] == 16  # 64 samples / batch 8, two epochs
    assert result["metrics"]["val_count"] == 10.0
    assert result["gathered"] == [[0]]
    sys.path.insert(0, str(HELPERS))
    try:
        from ddp_fit import IndexedData, Model
    finally:
        sys.path.remove(str(HELPERS))
    model, data = Model(), IndexedData()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for k in range(8):
            optimizer.zero_grad()
            batch = slice(8 * k, 8 * (k + 1))
            nn.functional.mse_loss(model(data.x[batch]), data.y[batch]).backward()
            optimizer.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(result["weights"][key].cpu(), value, rtol=1e-4, atol=1e-5)

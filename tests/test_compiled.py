"""A `torch.compile`d LightningModule behaves like the eager one (on CPU).

The tests compile with backend="eager" (dynamo captures the graph, no code generation): it exercises
the same capture-and-guard path as the default inductor backend at a fraction of the compile time
on a 2-core machine.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.compiled import from_compiled, is_compiled, to_uncompiled

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile not available")


class Net(L.LightningModule):
    def __init__(self, hidden=8):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _trainer(make_trainer, **kwargs):
    return make_trainer(max_epochs=2, **kwargs)


def _twin_models():
    torch.manual_seed(0)
    eager = Net()
    twin = Net()
    twin.load_state_dict(eager.state_dict())
    return eager, twin


def test_compiled_module_trains_to_the_same_weights_as_eager(make_trainer):
    eager, twin = _twin_models()
    graphs = []

    def counting_backend(graph_module, example_inputs):  # an "eager" backend that counts captures
        graphs.append(graph_module)
        return graph_module.forward

    compiled = torch.compile(twin, backend=counting_backend)
    assert is_compiled(compiled)
    _trainer(make_trainer).fit(eager, _data(), _data())
    trainer = _trainer(make_trainer)
    trainer.fit(compiled, _data(), _data())
    assert trainer.lightning_module is twin  # the trainer works on the module inside the wrapper
    for a, b in zip(eager.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert "val_loss" in trainer.callback_metrics and trainer.global_step == 8
    assert graphs  # forward really went through dynamo


def test_compiled_module_validates_like_eager(make_trainer):
    eager, twin = _twin_models()
    expected = make_trainer().validate(eager, _data(), verbose=False)
    got = make_trainer().validate(torch.compile(twin, backend="eager"), _data(), verbose=False)
    assert got[0]["val_loss"] == pytest.approx(expected[0]["val_loss"], rel=1e-6)


def test_compiled_checkpoint_loads_into_an_eager_module(make_trainer, tmp_path):
    model = Net(hidden=6)
    trainer = _trainer(make_trainer)
    trainer.fit(torch.compile(model, backend="eager"), _data())
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert not any(key.startswith("_orig_mod") for key in state)  # plain parameter names
    loaded = Net.load_from_checkpoint(path)
    assert loaded.hparams.hidden == 6
    x = torch.randn(3, 4)
    assert torch.allclose(loaded(x), model(x))


def test_compiled_run_resumes_from_its_checkpoint(make_trainer, tmp_path):
    model = Net()
    first = make_trainer(max_epochs=1)
    first.fit(torch.compile(model, backend="eager"), _data())
    path = tmp_path / "epoch1.ckpt"
    first.save_checkpoint(path)

    resumed_model = Net()
    resumed = make_trainer(max_epochs=2)
    resumed.fit(torch.compile(resumed_model, backend="eager"), _data(), ckpt_path=path)
    assert resumed.current_epoch == 2 and resumed.global_step == 8

    straight_model = Net()  # reference: the same resume, eager
    straight_model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    straight = make_trainer(max_epochs=2)
    straight.fit(straight_model, _data(), ckpt_path=path)
    for a, b in zip(resumed_model.parameters(), straight_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_forward_is_compiled_and_can_be_undone():
    model = Net()
    compiled = torch.compile(model, backend="eager")
    inner = from_compiled(compiled)
    assert inner is model and "forward" in vars(model)
    assert from_compiled(compiled) is model  # a second unwrap does not compile twice
    x = torch.randn(2, 4)
    assert torch.allclose(compiled(x), model(x))
    to_uncompiled(model)
    assert "forward" not in vars(model)


def test_compiled_plain_module_is_rejected_with_a_clear_error(make_trainer):
    with pytest.raises(Exception, match="expects a fulmen.LightningModule"):
        make_trainer().fit(torch.compile(nn.Linear(4, 1), backend="eager"), _data())


@pytest.mark.slow
def test_checking_for_a_compiled_module_does_not_import_dynamo():
    import subprocess
    import sys

    code = (
        "import sys; import fulmen; from fulmen.compiled import is_compiled; import torch; "
        "assert not is_compiled(torch.nn.Linear(1, 1)); print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

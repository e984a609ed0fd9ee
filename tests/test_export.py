"""export.py: LightningModule.to_torchscript and to_onnx, before and after fit."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L


class Net(L.LightningModule):
    def __init__(self, hidden: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Sequential(
            nn.Linear(3, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.example_input_array = torch.randn(2, 3)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fitted(make_trainer):
    model = Net()
    loader = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4)
    make_trainer(max_epochs=1, limit_val_batches=0).fit(model, loader)
    return model


def _expected(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return out


def test_script_a_plain_module_before_fit(tmp_path):
    model = Net()
    x = torch.randn(5, 3)
    scripted = model.to_torchscript(file_path=tmp_path / "model.pt")
    assert isinstance(scripted, torch.jit.ScriptModule)
    torch.testing.assert_close(scripted(x), _expected(model, x))
    torch.testing.assert_close(torch.jit.load(tmp_path / "model.pt")(x), _expected(model, x))
    assert model.training  # the module's own mode is restored


def test_script_after_fit_with_a_trainer_attached(make_trainer):
    model = _fitted(make_trainer)
    x = torch.randn(5, 3)
    torch.testing.assert_close(model.to_torchscript()(x), _expected(model, x))


def test_torch_jit_script_works_on_the_module_directly():
    model = Net().eval()
    x = torch.randn(2, 3)
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_trace_uses_example_input_array_or_example_inputs(tmp_path, make_trainer):
    model = _fitted(make_trainer)
    x = torch.randn(5, 3)
    traced = model.to_torchscript(method="trace", file_path=tmp_path / "traced.pt")
    torch.testing.assert_close(traced(x), _expected(model, x))
    traced = model.to_torchscript(method="trace", example_inputs=torch.randn(3, 3))
    torch.testing.assert_close(traced(x), _expected(model, x))


def test_trace_without_inputs_and_unknown_method_are_errors():
    model = Net()
    model.example_input_array = None
    with pytest.raises(ValueError, match="example_input_array"):
        model.to_torchscript(method="trace")
    with pytest.raises(ValueError, match="'script' or 'trace'"):
        model.to_torchscript(method="compile")


def test_to_onnx_writes_a_model_onnx_can_read(tmp_path, make_trainer):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = _fitted(make_trainer)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["x"]
    assert {n.op_type for n in graph.node} >= {"Gemm", "Relu"} or {n.op_type for n in graph.node} >= {
        "MatMul",
        "Relu",
    }
    assert model.training


def test_to_onnx_legacy_exporter_and_explicit_sample(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = Net()
    path = tmp_path / "legacy.onnx"
    with warnings.catch_warnings():  # torch may deprecate its legacy exporter; that is torch's business here
        warnings.simplefilter("ignore", DeprecationWarning)
        model.to_onnx(path, torch.randn(1, 3), dynamo=False, input_names=["features"])
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["features"]


def test_to_onnx_without_an_input_is_an_error(tmp_path):
    pytest.importorskip("onnx")
    model = Net()
    model.example_input_array = None
    with pytest.raises(ValueError, match="input_sample"):
        model.to_onnx(tmp_path / "x.onnx", dynamo=False)


def test_to_onnx_without_onnx_names_the_package(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install onnx"):
        Net().to_onnx(tmp_path / "x.onnx")


def test_to_torchscript_puts_the_mode_back_when_torch_cannot_compile(monkeypatch):
    def refuse(module, **kwargs):
        assert not module.training  # compiled in eval mode
        raise RuntimeError("cannot compile this")

    monkeypatch.setattr(torch.jit, "script", refuse)
    model = Net()
    model.train()
    with pytest.raises(RuntimeError, match="cannot compile this"):
        model.to_torchscript(method="script")
    assert model.training

"""Hyper-parameters: what save_hyperparameters keeps, how checkpoints store it safely, how loading rebuilds it.

Each test states the Lightning 2.6 behaviour it matches (observed with its Trainer) or where fulmen is safer.
"""

import argparse
import dataclasses
import enum
import functools
import os
import pathlib
import warnings

import numpy as np
import pytest
import torch

from fulmen import hparams as hp_store
from fulmen.checkpoint import CheckpointError, UnsafeCheckpointError
from fulmen.demos import BoringModel


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Config:
    width: int = 3
    path: pathlib.Path = pathlib.Path("/data")


@pytest.fixture
def save(make_trainer, tmp_path):
    """Fit `model` for one batch and write its checkpoint; returns the path."""

    def fit_and_save(model):
        trainer = make_trainer(limit_train_batches=1, limit_val_batches=1)
        trainer.fit(model)
        trainer.save_checkpoint(tmp_path / "m.ckpt")
        return tmp_path / "m.ckpt"

    return fit_and_save


# ------------------------------------------------------------------------------------ save_hyperparameters
class Base(BoringModel):
    def __init__(self, a=1, b=2):
        super().__init__()
        self.save_hyperparameters()


class Child(Base):
    def __init__(self, b=2, c=3):
        super().__init__(a=5, b=b)


class KwChild(Base):
    def __init__(self, c=3, **kwargs):
        super().__init__(**kwargs)


def test_save_hyperparameters_in_a_base_class_keeps_the_subclass_arguments():
    # Lightning 2.6: {'a': 5, 'b': 7, 'c': 3} and {'a': 1, 'b': 7, 'c': 9}
    assert dict(Child(b=7).hparams) == {"a": 5, "b": 7, "c": 3}
    assert dict(KwChild(c=9, b=7).hparams) == {"a": 1, "b": 7, "c": 9}


def test_subclass_arguments_survive_a_checkpoint(tmp_path, save):
    path = save(Child(b=7))
    assert Child.load_from_checkpoint(path).hparams.b == 7


def test_save_hyperparameters_takes_a_namespace():
    class Model(BoringModel):
        def __init__(self, args):
            super().__init__()
            self.save_hyperparameters(args)

    model = Model(argparse.Namespace(lr=0.1, name="x"))
    assert dict(model.hparams) == {"lr": 0.1, "name": "x"}
    assert model.hparams.lr == 0.1


def test_nn_module_argument_warns_as_lightning_does():
    class Model(BoringModel):
        def __init__(self, net):
            super().__init__()
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match=r"Attribute 'net' is an instance of `nn.Module`.*ignore=\['net'\]"):
        Model(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------ values that are not plain
class Everything(BoringModel):
    def __init__(
        self,
        path=pathlib.Path("/tmp/a"),
        scalar=np.float32(0.5),
        array=np.arange(3),
        color=Color.RED,
        config=Config(),
        optimizer=functools.partial(torch.optim.Adam, lr=0.1),
        activation=torch.nn.ReLU,
        names=("x", "y"),
    ):
        super().__init__()
        self.save_hyperparameters()


def test_fit_saves_paths_numpy_enums_dataclasses_partials_and_classes(tmp_path, save):
    # Lightning 2.6 pickles them (the file then loads only with weights_only=False); fulmen stores plain data
    model = Everything(
        path=pathlib.Path("/tmp/b"),
        scalar=np.float64(2.5),
        array=np.ones(2, dtype=np.int16),
        color=Color.BLUE,
        config=Config(width=7, path=pathlib.Path("/x")),
        optimizer=functools.partial(torch.optim.SGD, lr=0.3, momentum=0.9),
        activation=torch.nn.GELU,
    )
    path = save(model)
    torch.load(path, weights_only=True)  # the file itself is plain data
    loaded = Everything.load_from_checkpoint(path).hparams
    assert loaded.path == pathlib.Path("/tmp/b") and isinstance(loaded.path, pathlib.Path)
    assert loaded.scalar == 2.5 and loaded.scalar.dtype == np.float64
    assert loaded.array.tolist() == [1, 1] and loaded.array.dtype == np.int16
    assert loaded.color is Color.BLUE
    assert loaded.config == Config(width=7, path=pathlib.Path("/x"))
    assert loaded.optimizer.func is torch.optim.SGD
    assert loaded.optimizer.keywords == {"lr": 0.3, "momentum": 0.9}
    assert loaded.activation is torch.nn.GELU
    assert loaded.names == ("x", "y")


def test_nn_module_argument_is_left_out_and_loading_asks_for_it(tmp_path, save):
    class WithNet(BoringModel):
        def __init__(self, net, lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            self.net = net

    with pytest.warns(UserWarning, match="nn.Module"):
        model = WithNet(torch.nn.Linear(2, 2), lr=0.2)
    path = save(model)
    with pytest.raises(
        CheckpointError, match=r"needs \['net'\] passed again.*load_from_checkpoint\(path, net=\.\.\.\)"
    ):
        WithNet.load_from_checkpoint(path)
    loaded = WithNet.load_from_checkpoint(path, net=torch.nn.Linear(2, 2))
    assert loaded.hparams.lr == 0.2
    assert torch.equal(loaded.net.weight, model.net.weight)


def test_an_unstorable_argument_with_a_default_warns_at_save_and_load(tmp_path, save):
    class Opaque:
        pass

    class Model(BoringModel):
        def __init__(self, thing=None, lr=0.1):
            super().__init__()
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match=r"hyper-parameter 'thing' is a .*Opaque.*left out"):
        path = save(Model(thing=Opaque(), lr=0.3))
    with pytest.warns(UserWarning, match=r"could not store or rebuild \['thing'\].*defaults are used"):
        loaded = Model.load_from_checkpoint(path)
    assert loaded.hparams.thing is None and loaded.hparams.lr == 0.3


def test_a_checkpoint_cannot_make_loading_call_an_arbitrary_function(tmp_path, save):
    class Model(BoringModel):
        def __init__(self, factory):
            super().__init__()
            self.save_hyperparameters()

    path = save(Model(functools.partial(torch.optim.SGD, lr=0.1)))
    ckpt = torch.load(path, weights_only=True)
    marker = tmp_path / "ran"
    ckpt["hyper_parameters"]["factory"] = hp_store.encode(functools.partial(os.system, f"touch {marker}"))
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"system, which a checkpoint may not make the program call"):
        Model.load_from_checkpoint(path)
    assert not marker.exists()


def test_a_target_in_a_module_that_is_not_imported_is_not_imported(tmp_path):
    stored = {"x": {hp_store.TAG: "reference", "target": "fulmen_no_such_module:thing"}}
    values, failed = hp_store.from_checkpoint(stored)
    assert values == {} and "is not imported" in failed["x"]


# ------------------------------------------------------------------------------------ OmegaConf (Hydra projects)
def test_omegaconf_config_hyperparameters_save_and_load(tmp_path, save):
    omegaconf = pytest.importorskip("omegaconf")

    class Model(BoringModel):
        def __init__(self, cfg):
            super().__init__()
            self.save_hyperparameters(cfg)

    cfg = omegaconf.OmegaConf.create({"lr": 0.1, "layers": [1, 2], "opt": {"name": "adam"}})
    model = Model(cfg)
    assert isinstance(model.hparams, omegaconf.DictConfig)
    path = save(model)
    loaded = Model.load_from_checkpoint(path)
    assert isinstance(loaded.hparams, omegaconf.DictConfig)
    assert loaded.hparams == cfg and loaded.hparams.opt.name == "adam"


def test_omegaconf_config_as_one_of_several_arguments(tmp_path, save):
    omegaconf = pytest.importorskip("omegaconf")

    class Model(BoringModel):
        def __init__(self, net_cfg, lr=0.1):
            super().__init__()
            self.save_hyperparameters()

    path = save(Model(omegaconf.OmegaConf.create({"width": 4, "acts": ["relu"]}), lr=0.2))
    loaded = Model.load_from_checkpoint(path).hparams
    assert isinstance(loaded.net_cfg, omegaconf.DictConfig) and loaded.net_cfg.acts == ["relu"]
    assert loaded.lr == 0.2


# ------------------------------------------------------------------------------------ load_from_checkpoint
def test_weights_only_false_loads_a_checkpoint_with_pickled_hyperparameters(tmp_path, save):
    # what Lightning writes for a Path hyper-parameter: a pickled PosixPath, refused by a weights-only load
    class Model(BoringModel):
        def __init__(self, where=None):
            super().__init__()
            self.save_hyperparameters()

    path = save(Model())
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"] = {"where": Config(width=9)}  # a pickled object, as Lightning stores it
    torch.save(ckpt, path)
    for weights_only in (None, True):
        with pytest.raises(UnsafeCheckpointError):
            Model.load_from_checkpoint(path, weights_only=weights_only)
    assert Model.load_from_checkpoint(path, weights_only=False).hparams.where == Config(width=9)


def test_weights_only_is_not_passed_to_init(tmp_path, save):
    class Model(BoringModel):
        def __init__(self, **kwargs):
            super().__init__()
            self.save_hyperparameters()

    path = save(Model(lr=0.1))
    assert dict(Model.load_from_checkpoint(path, weights_only=True).hparams) == {"lr": 0.1}


def test_unknown_keyword_overrides_are_dropped_with_a_warning(tmp_path, save):
    path = save(Base(a=3))
    with pytest.warns(UserWarning, match=r"takes no argument\(s\) \['extra'\]"):
        loaded = Base.load_from_checkpoint(path, extra=1)
    assert loaded.hparams.a == 3


def test_saved_hyperparameters_the_class_no_longer_takes_are_dropped_by_name(tmp_path, save):
    path = save(Base(a=3, b=4))

    class Narrower(BoringModel):
        def __init__(self, a=1):
            super().__init__()
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match=r"Narrower.__init__ takes no argument\(s\) \['b'\]"):
        loaded = Narrower.load_from_checkpoint(path, strict=False)
    assert dict(loaded.hparams) == {"a": 3}


def test_load_from_checkpoint_on_an_instance_raises_lightnings_type_error(tmp_path, save):
    path = save(Base())
    with pytest.raises(TypeError, match=r"`Base.load_from_checkpoint` cannot be called on an instance"):
        Base().load_from_checkpoint(path)


class Bigger(Base):
    def __init__(self, a=1, b=2):
        super().__init__(a, b)
        self.extra = torch.nn.Linear(2, 2)


def test_strict_loading_false_is_honoured_by_load_from_checkpoint(tmp_path, save):
    path = save(Base())

    class Lenient(Bigger):
        def __init__(self, a=1, b=2):
            super().__init__(a, b)
            self.strict_loading = False

    with pytest.raises(RuntimeError, match="Missing key"):
        Bigger.load_from_checkpoint(path)
    with pytest.warns(
        UserWarning, match=r"in the model state dict but not in the checkpoint: \['extra.weight'"
    ):
        Lenient.load_from_checkpoint(path)
    with warnings.catch_warnings(record=True):
        Bigger.load_from_checkpoint(path, strict=False)


def test_strict_loading_false_is_honoured_when_a_run_loads_ckpt_path(make_trainer, save):
    path = save(Base())
    trainer = make_trainer(limit_val_batches=1)
    with pytest.raises(RuntimeError, match="Missing key"):
        trainer.validate(Bigger(), ckpt_path=path, verbose=False)
    model = Bigger()
    model.strict_loading = False
    trainer.validate(model, ckpt_path=path, verbose=False)
    assert torch.equal(model.layer.weight, torch.load(path, weights_only=True)["state_dict"]["layer.weight"])
    assert Bigger().strict_loading is True


@pytest.mark.parametrize("method", ["fit", "validate", "test", "predict"])
def test_trainer_methods_take_weights_only_and_default_to_the_safe_load(make_trainer, method, save):
    path = save(Base())
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"] = Config(width=2)  # a pickled object, as a Lightning callback might add
    torch.save(ckpt, path)

    def run(**kwargs):
        trainer = make_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1)
        args = {"verbose": False} if method in ("validate", "test") else {}
        getattr(trainer, method)(Base(), ckpt_path=path, **args, **kwargs)
        return trainer

    with pytest.raises(UnsafeCheckpointError):
        run()
    with pytest.raises(UnsafeCheckpointError):
        run(weights_only=True)
    assert run(weights_only=False).state.finished

"""Tuner: the learning-rate sweep and the batch-size search on small real models, state restored exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen as L
from fulmen.demos import BoringModel, RandomDataset
from fulmen.tuner import Tuner
from fulmen.utilities import MisconfigurationException


def blobs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + (y[:, None].float() * 2 - 1) * 1.5
    return TensorDataset(x, y)


class Classifier(L.LightningModule):
    """A small MLP on two Gaussian blobs, trained with SGD at `self.lr`."""

    def __init__(self, lr=0.01, batch_size=32):
        super().__init__()
        self.lr = lr
        self.batch_size = batch_size
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(blobs(), batch_size=self.batch_size, shuffle=True)


def test_lr_find_suggests_a_sane_rate(make_trainer):
    torch.manual_seed(0)
    model = Classifier()
    finder = Tuner(make_trainer()).lr_find(model, min_lr=1e-5, max_lr=100.0, num_training=60)
    lrs, losses = finder.results["lr"], finder.results["loss"]
    assert len(lrs) == len(losses) == 60
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(100.0)
    suggestion = finder.suggestion()
    assert 1e-3 <= suggestion <= 1.0
    assert model.lr == pytest.approx(suggestion)  # update_attr=True wrote it back


class Regression(Classifier):
    """Least squares with SGD: the loss grows without bound once the learning rate is too high."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x)[:, 0], y.float() * 4)


def test_lr_find_stops_early_when_the_loss_diverges(make_trainer):
    torch.manual_seed(0)
    finder = Tuner(make_trainer()).lr_find(
        Regression(), min_lr=1e-4, max_lr=1e3, num_training=80, update_attr=False
    )
    losses = finder.results["loss"]
    assert 10 < len(losses) < 80
    assert losses[-1] > 4 * min(losses[:-1])


def test_lr_find_restores_weights_and_rng_bit_for_bit(make_trainer):
    torch.manual_seed(1)
    model = Classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    Tuner(make_trainer()).lr_find(model, num_training=20, update_attr=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model._trainer is None and model.training
    assert model.lr == 0.01  # update_attr=False


def test_lr_find_linear_mode_and_learning_rate_in_hparams(make_trainer, capsys):
    class HParamsModel(Classifier):
        def __init__(self, learning_rate=0.01):
            super().__init__()
            self.save_hyperparameters()
            del self.lr

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)

    model = HParamsModel()
    finder = Tuner(make_trainer()).lr_find(
        model, min_lr=0.01, max_lr=0.5, num_training=15, mode="linear", early_stop_threshold=None
    )
    assert finder.results["lr"] == pytest.approx([0.01 + 0.035 * i for i in range(15)])
    assert model.hparams.learning_rate == pytest.approx(finder.suggestion())
    # the message names where the rate went (it was model.lr whatever the place)
    assert "(model.hparams.learning_rate)" in capsys.readouterr().out


def test_lr_find_plot_marks_the_suggestion(tmp_path, make_trainer):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    torch.manual_seed(0)
    finder = Tuner(make_trainer()).lr_find(Classifier(), num_training=40, update_attr=False)
    fig = finder.plot(suggest=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    curve, marker = ax.get_lines()
    assert marker.get_color() == "red"
    assert marker.get_xdata()[0] == pytest.approx(finder.suggestion())
    path = tmp_path / "lr.png"
    fig.savefig(path)
    assert path.stat().st_size > 5_000
    pixels = matplotlib.image.imread(path)
    assert pixels[..., :3].std() > 0.05  # not a blank image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    label = ax.xaxis.label.get_window_extent(renderer)
    assert label.y0 >= 0 and fig.bbox.contains(label.x0, label.y0)  # the x-label is not cut off


def test_lr_find_errors_name_the_fix(make_trainer):
    tuner = Tuner(make_trainer())
    with pytest.raises(MisconfigurationException, match="self.lr"):
        tuner.lr_find(BoringModel())
    with pytest.raises(MisconfigurationException, match="min_lr"):
        tuner.lr_find(Classifier(), min_lr=1.0, max_lr=0.1)
    with pytest.raises(MisconfigurationException, match="'fit'"):
        tuner.lr_find(Classifier(), method="test")


class OOMAbove(BoringModel):
    """`batch_size` sets the dataloader; batches above `limit` raise an out-of-memory error."""

    def __init__(self, batch_size=2, limit=40, n=200):
        super().__init__()
        self.batch_size = batch_size
        self.limit = limit
        self.n = n
        self.trials = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.trials.append(batch.shape[0])
        if batch.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if batch.shape[0] > self.limit:
            raise RuntimeError("CUDA error: out of memory")
        return super().validation_step(batch, batch_idx)

    def train_dataloader(self):
        return DataLoader(RandomDataset(32, self.n), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(RandomDataset(32, self.n), batch_size=self.batch_size)


def test_scale_batch_size_power_stops_before_the_first_oom(make_trainer):
    torch.manual_seed(0)
    model = OOMAbove()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    size = Tuner(make_trainer()).scale_batch_size(model, mode="power", steps_per_trial=2)
    assert size == 32 and model.batch_size == 32
    assert model.trials == [2, 4, 8, 16, 32, 64]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_scale_batch_size_binsearch_finds_the_exact_limit(make_trainer):
    model = OOMAbove()
    size = Tuner(make_trainer()).scale_batch_size(model, mode="binsearch", steps_per_trial=1)
    assert size == 40 and model.batch_size == 40
    assert model.trials == [2, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41]


def test_scale_batch_size_stops_at_the_dataset_length(make_trainer):
    model = OOMAbove(n=20, limit=1000)
    size = Tuner(make_trainer()).scale_batch_size(model, steps_per_trial=1)
    assert size == 20
    assert model.trials == [2, 4, 8, 16, 20]


def test_scale_batch_size_shrinks_when_the_first_size_fails(make_trainer):
    model = OOMAbove(limit=5)
    assert Tuner(make_trainer()).scale_batch_size(model, init_val=16, steps_per_trial=1) == 4
    assert model.trials == [16, 8, 4]


def test_scale_batch_size_for_validation_on_datamodule_hparams(make_trainer):
    class DM(L.LightningDataModule):
        def __init__(self, batch_size=2):
            super().__init__()
            self.save_hyperparameters()

        def val_dataloader(self):
            return DataLoader(RandomDataset(32, 100), batch_size=self.hparams.batch_size)

    dm = DM()
    size = Tuner(make_trainer()).scale_batch_size(
        OOMAbove(limit=30), datamodule=dm, method="validate", mode="binsearch", max_trials=30
    )
    assert size == 30 and dm.hparams.batch_size == 30


def test_scale_batch_size_errors(make_trainer):
    tuner = Tuner(make_trainer())
    with pytest.raises(MisconfigurationException, match="batch_size"):
        tuner.scale_batch_size(BoringModel())
    with pytest.raises(MisconfigurationException, match="passed in directly"):
        tuner.scale_batch_size(OOMAbove(), train_dataloaders=DataLoader(RandomDataset(32, 4)))
    with pytest.raises(MisconfigurationException, match="mode"):
        tuner.scale_batch_size(OOMAbove(), mode="linear")

    class Broken(OOMAbove):
        def training_step(self, batch, batch_idx):
            raise ValueError("a real bug")

    model = Broken()
    with pytest.raises(ValueError, match="a real bug"):  # only out-of-memory errors are caught
        tuner.scale_batch_size(model)
    assert model.batch_size == 2


def test_scale_batch_size_stops_at_max_val_and_says_so(make_trainer, capsys):
    model = OOMAbove(limit=10**6, n=10**4)
    size = Tuner(make_trainer()).scale_batch_size(model, steps_per_trial=1, max_val=16)
    assert size == 16 and model.trials == [2, 4, 8, 16]
    out = capsys.readouterr().out
    assert "model.batch_size set to 16" in out and "it reached max_val=16" in out


def test_scale_batch_size_on_a_cpu_keeps_several_batches_per_epoch(make_trainer, capsys):
    # with no memory limit to hit, growth used to end at the whole data set: one batch per epoch
    model = OOMAbove(limit=10**6, n=300)
    size = Tuner(make_trainer()).scale_batch_size(model, steps_per_trial=3)
    assert size == 100 and model.trials == [2, 4, 8, 16, 32, 64, 100]
    out = capsys.readouterr().out
    assert "set to 100" in out and "on a CPU there is no memory limit" in out


def test_scale_batch_size_says_which_size_ran_out_of_memory(make_trainer, capsys):
    Tuner(make_trainer()).scale_batch_size(OOMAbove(), steps_per_trial=1)
    assert "set to 32, the largest size that ran: 64 ran out of memory" in capsys.readouterr().out

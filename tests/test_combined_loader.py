"""CombinedLoader on its own (the four modes, lengths, limits) and several train/eval loaders in the Trainer.

The expected batches are the ones Lightning 2.6 produces for the same inputs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import fulmen as L
from fulmen.callbacks import Callback
from fulmen.combined_loader import CombinedLoader
from fulmen.demos import BoringModel

A, B = list(range(5)), list(range(10, 13))


def test_max_size_cycle_restarts_shorter_loaders_until_the_longest_ends():
    combined = CombinedLoader({"a": A, "b": B}, "max_size_cycle")
    assert len(combined) == 5
    assert list(combined) == [
        ({"a": 0, "b": 10}, 0, 0),
        ({"a": 1, "b": 11}, 1, 0),
        ({"a": 2, "b": 12}, 2, 0),
        ({"a": 3, "b": 10}, 3, 0),
        ({"a": 4, "b": 11}, 4, 0),
    ]


def test_max_size_gives_none_for_loaders_that_ran_out():
    combined = CombinedLoader([A, B], "max_size")
    assert len(combined) == 5
    assert [batch for batch, _, _ in combined] == [[0, 10], [1, 11], [2, 12], [3, None], [4, None]]


def test_min_size_stops_with_the_shortest_loader():
    combined = CombinedLoader((A, B), "min_size")
    assert len(combined) == 3
    assert list(combined) == [((0, 10), 0, 0), ((1, 11), 1, 0), ((2, 12), 2, 0)]


def test_sequential_reads_one_loader_after_another_with_dataloader_idx():
    combined = CombinedLoader({"a": A, "b": B}, "sequential")
    assert len(combined) == 8
    assert list(combined) == [(v, i, 0) for i, v in enumerate(A)] + [(v, i, 1) for i, v in enumerate(B)]


def test_nested_structures_keep_their_shape():
    combined = CombinedLoader({"x": [A, B], "y": B}, "min_size")
    assert combined.flattened == [A, B, B]
    assert next(iter(combined)) == ({"x": [0, 10], "y": 10}, 0, 0)


def test_a_list_of_plain_values_is_one_iterable():
    assert CombinedLoader(A).flattened == [A]
    assert list(CombinedLoader(A)) == [(v, i, 0) for i, v in enumerate(A)]


def test_an_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="Unsupported mode 'bad'"):
        CombinedLoader([A, B], "bad")


def test_limits_cap_each_loader():
    combined = CombinedLoader([A, B], "sequential")
    combined.limits = [2, 1]
    assert len(combined) == 3
    assert list(combined) == [(0, 0, 0), (1, 1, 0), (10, 0, 1)]
    combined = CombinedLoader([A, B], "max_size")
    combined.limits = 2
    assert [batch for batch, _, _ in combined] == [[0, 10], [1, 11]]
    with pytest.raises(ValueError, match="Mismatch in number of limits"):
        combined.limits = [1]


class _CountingFetches:
    """Five batches; counts how many were asked for."""

    def __init__(self):
        self.fetched = 0

    def __len__(self):
        return 5

    def __iter__(self):
        for value in range(5):
            self.fetched += 1
            yield value


@pytest.mark.parametrize("mode", ["sequential", "max_size", "min_size"])
def test_a_limit_fetches_no_batch_past_it(mode):
    source = _CountingFetches()
    combined = CombinedLoader([source], mode)
    combined.limits = 2
    assert len(list(combined)) == 2 and source.fetched == 2


def test_flattened_setter_replaces_loaders_in_the_structure():
    combined = CombinedLoader({"a": A, "b": B})
    combined.flattened = [[1], [2, 3]]
    assert combined.iterables == {"a": [1], "b": [2, 3]}
    nested = CombinedLoader([[0], [[1], [[2]]]])
    assert nested.flattened == [[0], [1], [2]]
    with pytest.raises(ValueError, match=r"Mismatch in flattened length \(1\) and existing length \(3\)"):
        nested.flattened = [[2]]
    nested.flattened = [[3], [2], [1]]
    assert nested.iterables == [[3], [[2], [[1]]]]


class _Four(IterableDataset):
    def __iter__(self):
        return iter(range(4))


def test_unsized_loaders_end_when_each_has_run_out_once():
    combined = CombinedLoader([A, DataLoader(_Four(), batch_size=None)], "max_size_cycle")
    with pytest.raises(TypeError, match="has no length"):
        len(combined)
    assert [[int(x) for x in batch] for batch, _, _ in combined] == [[0, 0], [1, 1], [2, 2], [3, 3], [4, 0]]


def _loader(n, value, batch_size=2):
    return DataLoader(torch.full((n, 32), float(value)), batch_size=batch_size)


class Recording(BoringModel):
    """Records what each step receives: the batch's structure (first value of each part) and the indices."""

    def __init__(self):
        super().__init__()
        self.train_seen, self.val_seen = [], []

    def training_step(self, batch, batch_idx):
        self.train_seen.append((_describe(batch), batch_idx))
        parts = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, list) else [batch]
        return self.layer(torch.cat([p for p in parts if p is not None])).sum()

    def validation_step(self, batch, batch_idx, *dataloader_idx):
        self.val_seen.append((_describe(batch), batch_idx, dataloader_idx))


def _describe(batch):
    if batch is None:
        return None
    if isinstance(batch, dict):
        return {k: _describe(v) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_describe(v) for v in batch]
    return batch[0, 0].item()


def test_fit_with_a_list_of_train_loaders_cycles_the_shorter_one(make_trainer):
    model = Recording()
    trainer = make_trainer(limit_val_batches=0)
    trainer.fit(model, [_loader(6, 1), _loader(4, 2)])
    assert model.train_seen == [([1.0, 2.0], 0), ([1.0, 2.0], 1), ([1.0, 2.0], 2)]
    assert trainer.num_training_batches == 3 and trainer.global_step == 3
    assert isinstance(trainer.train_dataloader, list) and len(trainer.train_dataloader) == 2


def test_fit_with_a_dict_of_train_loaders_gives_dict_batches(make_trainer):
    model = Recording()
    make_trainer(limit_val_batches=0).fit(model, {"a": _loader(6, 1), "b": _loader(4, 2)})
    assert [batch for batch, _ in model.train_seen] == [{"a": 1.0, "b": 2.0}] * 3


# the batches of CombinedLoader({"a": _loader(6, 1), "b": _loader(4, 2)}, mode) for each non-sequential mode
MODES = [
    ("max_size_cycle", [{"a": 1.0, "b": 2.0}] * 3),
    ("max_size", [{"a": 1.0, "b": 2.0}] * 2 + [{"a": 1.0, "b": None}]),
    ("min_size", [{"a": 1.0, "b": 2.0}] * 2),
]


@pytest.mark.parametrize(("mode", "expected"), MODES)
def test_fit_with_a_combined_loader_follows_its_mode(make_trainer, mode, expected):
    model = Recording()
    trainer = make_trainer(limit_val_batches=0)
    trainer.fit(model, CombinedLoader({"a": _loader(6, 1), "b": _loader(4, 2)}, mode))
    assert [batch for batch, _ in model.train_seen] == expected
    assert trainer.num_training_batches == len(expected)


def test_fit_refuses_a_sequential_combined_loader(make_trainer):
    with pytest.raises(ValueError, match='cannot train on CombinedLoader\\(mode="sequential"\\)'):
        make_trainer().fit(Recording(), CombinedLoader([_loader(4, 1), _loader(4, 2)], "sequential"))


def test_limit_train_batches_applies_to_each_loader_as_in_lightning(make_trainer):
    model = Recording()
    trainer = make_trainer(limit_train_batches=0.5, limit_val_batches=0)
    ten, four = _loader(10, 0, batch_size=1), DataLoader(torch.arange(4.0).repeat(32, 1).T, batch_size=1)
    trainer.fit(model, [ten, four])
    assert trainer.num_training_batches == 5  # max(10 * 0.5, 4 * 0.5)
    assert [batch[1] for batch, _ in model.train_seen] == [0.0, 1.0, 2.0, 3.0, 0.0]


def test_several_val_loaders_run_sequentially_with_dataloader_idx(make_trainer):
    model = Recording()
    make_trainer(limit_train_batches=1, num_sanity_val_steps=0).fit(
        model, _loader(2, 0), [_loader(6, 1), _loader(4, 2)]
    )
    assert model.val_seen == [(1.0, 0, (0,)), (1.0, 1, (0,)), (1.0, 2, (0,)), (2.0, 0, (1,)), (2.0, 1, (1,))]


@pytest.mark.parametrize(("mode", "expected"), MODES)
def test_validation_on_a_combined_loader_gets_structured_batches(make_trainer, mode, expected):
    model = Recording()
    trainer = make_trainer(limit_train_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, _loader(2, 0), CombinedLoader({"a": _loader(6, 1), "b": _loader(4, 2)}, mode))
    assert model.val_seen == [(batch, i, ()) for i, batch in enumerate(expected)]
    assert sorted(trainer.val_dataloaders) == ["a", "b"]
    assert trainer.num_val_batches == [3, 2]  # per loader, as Lightning reports it


def test_validation_on_a_sequential_combined_loader_passes_dataloader_idx(make_trainer):
    model = Recording()
    combined = CombinedLoader({"a": _loader(4, 1), "b": _loader(2, 2)}, "sequential")
    make_trainer(limit_train_batches=1, num_sanity_val_steps=0).fit(model, _loader(2, 0), combined)
    assert model.val_seen == [(1.0, 0, (0,)), (1.0, 1, (0,)), (2.0, 0, (1,))]


def test_test_and_predict_accept_a_sequential_combined_loader(make_trainer):
    class SeveralLoaders(BoringModel):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("value", batch[0, 0])

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return batch[0, 0].item()

    combined = CombinedLoader([_loader(4, 1), _loader(2, 2)], "sequential")
    trainer = make_trainer()
    results = trainer.test(SeveralLoaders(), combined, verbose=False)
    assert [r["value/dataloader_idx_" + str(i)] for i, r in enumerate(results)] == [1.0, 2.0]
    assert trainer.predict(SeveralLoaders(), combined) == [[1.0, 1.0], [2.0]]


def test_predict_refuses_a_combined_loader_read_together(make_trainer):
    with pytest.raises(ValueError, match='only supports CombinedLoader\\(mode="sequential"\\)'):
        make_trainer().predict(BoringModel(), CombinedLoader([_loader(4, 1), _loader(2, 2)], "min_size"))


def test_a_dict_of_eval_loaders_comes_back_as_a_dict(make_trainer):
    model = Recording()
    trainer = make_trainer(limit_train_batches=1, num_sanity_val_steps=0)
    val = {"a": _loader(4, 1), "b": _loader(2, 2)}
    trainer.fit(model, _loader(2, 0), val)
    assert trainer.val_dataloaders == val and trainer.num_val_batches == [2, 1]
    trainer.predict(BoringModel(), val)
    assert trainer.predict_dataloaders == val and trainer.num_predict_batches == [2, 1]


class _Stop(Exception):
    pass


def test_resuming_mid_epoch_with_several_train_loaders_is_exact(make_trainer, tmp_path):
    def loaders():
        first = DataLoader(
            torch.randn(12, 32, generator=torch.Generator().manual_seed(1)), batch_size=2, shuffle=True
        )
        second = DataLoader(
            torch.randn(8, 32, generator=torch.Generator().manual_seed(2)), batch_size=2, shuffle=True
        )
        return {"a": first, "b": second}

    class TwoInputs(BoringModel):
        def training_step(self, batch, batch_idx):
            return self.layer(batch["a"]).sum() + self.layer(batch["b"]).pow(2).sum()

    class SaveAndStop(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 8:  # epoch 1 (6 batches each), batch 2
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                raise _Stop

    def run(callbacks=(), ckpt_path=None):
        L.seed_everything(3, verbose=False)
        model = TwoInputs()
        trainer = make_trainer(max_epochs=2, limit_val_batches=0, callbacks=list(callbacks))
        try:
            trainer.fit(model, loaders(), ckpt_path=ckpt_path)
        except _Stop:
            pass
        return model

    full = run()
    run([SaveAndStop()])
    with pytest.warns(UserWarning, match="reads and discards the 2 batches"):
        resumed = run(ckpt_path=tmp_path / "mid.ckpt")
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


DDP_SCRIPT = """
import json, sys
import torch
from torch.utils.data import DataLoader
import fulmen as L
from fulmen.demos import BoringModel

class TwoInputs(BoringModel):
    def __init__(self):
        super().__init__()
        self.seen = []
    def training_step(self, batch, batch_idx):
        self.seen.append([batch["a"][0, 0].item(), batch["b"][0, 0].item()])
        return self.layer(batch["a"]).sum() + self.layer(batch["b"]).sum()

def data(n, offset):
    return DataLoader(torch.arange(offset, offset + n, dtype=torch.float32).repeat(32, 1).T, batch_size=1)

model = TwoInputs()
trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, {"a": data(8, 0), "b": data(4, 100)})
with open(sys.argv[1] + f"/rank{trainer.global_rank}.json", "w") as f:
    json.dump({"batches": trainer.num_training_batches, "seen": model.seen}, f)
"""


@pytest.mark.slow
def test_several_train_loaders_are_sharded_under_ddp(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(DDP_SCRIPT)
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
    }
    env["PYTHONPATH"] = str(Path(__file__).parent.parent / "src")
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["batches"] for r in ranks] == [4, 4]  # 8 and 4 samples over 2 ranks: max(4, 2) steps
    a_values = sorted(a for r in ranks for a, _ in r["seen"])
    assert a_values == [float(v) for v in range(8)]  # every "a" sample once, split between the ranks
    for r in ranks:  # each rank's 2 "b" samples, cycled
        b_values = [b for _, b in r["seen"]]
        assert b_values[:2] == b_values[2:] and len(set(b_values)) == 2

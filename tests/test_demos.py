"""fulmen.demos: the small models and datasets, and the WikiText-2 language models (local file only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fulmen
from fulmen.demos import (
    DemoModel,
    LightningLSTM,
    LightningTransformer,
    ManualOptimBoringModel,
    RandomDictDataset,
    RandomIterableDatasetWithLen,
    SequenceSampler,
    SimpleLSTM,
    Transformer,
    WikiText2,
)


def _trainer(**kwargs: object) -> fulmen.Trainer:
    return fulmen.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_random_dict_and_sized_iterable_datasets() -> None:
    item = RandomDictDataset(4, 3)[1]
    assert torch.equal(item["b"], item["a"] + 2) and len(RandomDictDataset(4, 3)) == 3
    data = RandomIterableDatasetWithLen(4, 5)
    assert len(data) == 5 and len(list(data)) == 5


def test_demo_model_and_manual_optimization_train() -> None:
    for model in (DemoModel(), ManualOptimBoringModel()):
        before = [p.detach().clone() for p in model.parameters()]
        trainer = _trainer(max_steps=2)
        loader = torch.utils.data.DataLoader(
            RandomDictDataset(32, 8), batch_size=4, collate_fn=lambda b: torch.stack([x["a"] for x in b])
        )
        trainer.fit(model, loader)
        assert trainer.global_step == 2
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_wikitext2_reads_a_local_file(tmp_path: Path) -> None:
    (tmp_path / "wikitext-2.txt").write_text("the cat sat\nthe dog sat on the mat\n")
    data = WikiText2(tmp_path, block_size=3)
    # 11 tokens (each line ends with <eos>): 11 // 3 - 1 = 2 examples
    assert len(data) == 2 and data.vocab_size == 7
    inputs, target = data[1]
    assert torch.equal(target[:-1], inputs[1:])
    assert [data.dictionary.idx2word[i] for i in inputs] == ["<eos>", "the", "dog"]


def test_wikitext2_says_where_to_get_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not download.*curl"):
        WikiText2(tmp_path)


def test_sequence_sampler_keeps_rows_contiguous() -> None:
    sampler = SequenceSampler(list(range(10)), batch_size=3)
    assert list(sampler) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]] and len(sampler) == 3


def test_transformer_gives_log_probabilities_per_position() -> None:
    model = Transformer(vocab_size=11, ninp=8, nhead=2, nhid=8, nlayers=1, dropout=0.0)
    x = torch.randint(0, 11, (2, 5))
    out = model(x, x)
    assert out.shape == (10, 11)
    assert torch.allclose(out.exp().sum(-1), torch.ones(10), atol=1e-5)


def test_simple_lstm_carries_its_hidden_state() -> None:
    model = SimpleLSTM(vocab_size=11, ninp=4, nhid=6, nlayers=2)
    hidden = model.init_hidden(3)
    assert hidden[0].shape == (2, 3, 6)
    out, new_hidden = model(torch.randint(0, 11, (3, 4)), hidden)
    assert out.shape == (12, 11) and not torch.equal(new_hidden[0], hidden[0])


@pytest.mark.slow
@pytest.mark.parametrize("cls", [LightningTransformer, LightningLSTM])
def test_language_models_train_on_the_local_file(
    cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)  # the models read data/wikitext-2.txt, as in Lightning
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wikitext-2.txt").write_text("a b c d\n" * 200)
    model = cls(vocab_size=WikiText2().vocab_size)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(max_steps=2, gradient_clip_val=0.25)
    trainer.fit(model)  # the model's own prepare_data and train_dataloader
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_small_transformer_fits_a_batch_with_teacher_forcing(tmp_path: Path) -> None:
    """The demo model's layers are wired so that gradients reach them and its output is log-probabilities.

    As in Lightning's demo, the decoder sees the target (causal mask, diagonal included), so this shows the
    model can fit, not that it predicts the next token; the slow test above trains it through fulmen.
    """
    torch.manual_seed(0)
    (tmp_path / "wikitext-2.txt").write_text("a b c d\n" * 40)
    data = WikiText2(tmp_path, block_size=5)
    model = Transformer(vocab_size=data.vocab_size, ninp=16, nhead=2, nhid=16, nlayers=1, dropout=0.0)
    inputs, target = next(iter(torch.utils.data.DataLoader(data, batch_size=8)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.nll_loss(model(inputs, target), target.view(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

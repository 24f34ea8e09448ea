"""Reproductions and their synthetic data: helpers against known values, runs as smoke tests.

The reproductions' outcomes are seed-noisy design claims: they are reported, not asserted.
"""

from __future__ import annotations

import math

import pytest
import torch

from paperbricks.aria import reproduce
from paperbricks.aria.reproduce import expert_usage, js_divergence
from paperbricks.aria.synthetic import (
    MultiTaskLanguage,
    image_caption_batch,
    multitask_entropy_rate,
    multitask_sequences,
)
from paperbricks.core_kernels.repro import ReproResult


def test_js_divergence_known_values():
    assert js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(1.0)
    assert js_divergence(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0])) == pytest.approx(0.0)
    # closed form for p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4)
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    kl_pm = math.log2(4 / 3)
    kl_qm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    assert js_divergence(p, q) == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm, abs=1e-12)
    with pytest.raises(ValueError, match="histograms"):
        js_divergence(torch.ones(3), torch.ones(4))


def test_expert_usage_counts_topk():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 0.0]])
    mask = torch.tensor([True, False, True])
    assert expert_usage(logits, 2, mask).tolist() == [1.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="router_logits"):
        expert_usage(logits, 2, torch.ones(2, dtype=torch.bool))


def test_multitask_language_follows_its_tables():
    lang = MultiTaskLanguage.make(content_vocab=6, n_tasks=2, branching=2, seed=3)
    assert torch.allclose(lang.transitions.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    assert ((lang.transitions > 0).sum(-1) == 2).all()
    x = multitask_sequences(lang, 4000, 12, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 12) and x.dtype == torch.long
    task = x[:, 0] - lang.content_vocab
    assert set(task.tolist()) == {0, 1} and int(x[:, 1:].max()) < lang.content_vocab
    # empirical transition frequencies of task 1 match its table
    prev, nxt = x[task == 1, 1:-1].reshape(-1), x[task == 1, 2:].reshape(-1)
    counts = torch.zeros(6, 6, dtype=torch.float64)
    counts.index_put_((prev, nxt), torch.ones_like(prev, dtype=torch.float64), accumulate=True)
    emp = counts / counts.sum(-1, keepdim=True)
    assert torch.allclose(emp, lang.transitions[1], atol=0.03)
    with pytest.raises(ValueError, match="seq_len"):
        multitask_sequences(lang, 2, 1, generator=torch.Generator())
    with pytest.raises(ValueError, match="branching"):
        MultiTaskLanguage.make(content_vocab=2, branching=3)


def test_entropy_rate_of_a_two_state_chain():
    """H = Σ π_i H(row_i) with the stationary π of [[1-a, a], [b, 1-b]]: π = (b, a)/(a+b)."""
    a, b = 0.2, 0.6
    p = torch.tensor([[[1 - a, a], [b, 1 - b]]], dtype=torch.float64)
    lang = MultiTaskLanguage(2, 1, p, torch.full((1, 2), 0.5, dtype=torch.float64))

    def h(x):
        return -(x * math.log(x) + (1 - x) * math.log(1 - x))

    expected = (b * h(a) + a * h(b)) / (a + b)
    assert multitask_entropy_rate(lang) == pytest.approx(expected, abs=1e-10)


def test_image_caption_batch_layout():
    b = image_caption_batch(
        5, image_size=28, num_queries=4, caption_len=6, vocab_size=32, image_token_index=9
    )
    assert b.input_ids.shape == b.labels.shape == b.modality.shape == (5, 10)
    assert (b.input_ids[:, :4] == 9).all() and (b.input_ids[:, 4:] != 9).all()
    assert (b.labels[:, :4] == -100).all() and torch.equal(b.labels[:, 4:], b.input_ids[:, 4:])
    assert b.modality[:, :4].all() and not b.modality[:, 4:].any()
    assert b.pixel_values.shape == (5, 3, 28, 28) and b.pixel_mask.all()
    again = image_caption_batch(
        5, image_size=28, num_queries=4, caption_len=6, vocab_size=32, image_token_index=9
    )
    assert torch.equal(again.pixel_values, b.pixel_values)  # seeded
    with pytest.raises(ValueError, match="vocab_size"):
        image_caption_batch(
            2, image_size=28, num_queries=4, caption_len=3, vocab_size=4, image_token_index=9
        )


def _check(result: ReproResult, tmp_path) -> None:
    assert isinstance(result, ReproResult) and result.seed_noisy
    assert result.verdict in ("reproduced", "not reproduced", "inconclusive")
    assert all(p.is_file() and p.parent == tmp_path for p in result.figures)


def test_fine_grained_moe_smoke(tmp_path, monkeypatch):
    monkeypatch.setitem(reproduce._FINE_GRAINED_RUNS, True, (2, 3))
    state = torch.get_rng_state()
    r = reproduce.fine_grained_moe(seed=0, out_dir=tmp_path, quick=True)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    _check(r, tmp_path)
    m = r.metrics
    assert len(m["val_loss_fine"]) == len(m["val_loss_coarse"]) == 2
    assert all(math.isfinite(v) for v in m["val_loss_fine"] + m["val_loss_coarse"])
    # equal activated FFN width: only the router sizes differ (16 vs 4 experts x d 64 x 2 layers)
    assert m["activated_decoder_params_fine"] - m["activated_decoder_params_coarse"] == 2 * 12 * 64


def test_modality_specialisation_smoke(tmp_path, monkeypatch):
    monkeypatch.setitem(reproduce._MODALITY_STEPS, True, 3)
    r = reproduce.modality_specialisation(seed=0, out_dir=tmp_path, quick=True)
    _check(r, tmp_path)
    m = r.metrics
    assert len(m["jsd_trained"]) == len(m["jsd_shuffled_max"]) == 2
    assert all(0.0 <= v <= 1.0 for v in m["jsd_trained"] + m["jsd_shuffled_mean"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fine_grained_moe", "modality_specialisation"])
def test_quick_runs(tmp_path, name):
    _check(getattr(reproduce, name)(seed=0, out_dir=tmp_path, quick=True), tmp_path)

"""Attention allocation, retrieval accuracy and activation maxima on hand-built inputs."""

import pytest
import torch

from paperbricks.diffattn.metrics import (
    attention_allocation,
    max_activations,
    retrieval_accuracy,
)
from paperbricks.diffattn.tasks import NeedleVocab, multi_needle_task


def _loop_allocation(maps, spans, noise, qpos, normalize):
    """Straightforward per-element loops: the oracle for the vectorised version."""
    out_a, out_n = [], []
    for m in maps:
        b, h = m.shape[:2]
        a_l, n_l = [], []
        for hh in range(h):
            a_sum = n_sum = 0.0
            cnt = 0
            for bb in range(b):
                for r in range(spans.shape[1]):
                    row = m[bb, hh, int(qpos[bb, r])].double()
                    tot = float(row.sum()) if normalize else 1.0
                    s, e = spans[bb, r].tolist()
                    a_sum += float(row[s:e].sum()) / tot
                    n_sum += float(row[noise[bb]].sum()) / tot
                    cnt += 1
            a_l.append(a_sum / cnt)
            n_l.append(n_sum / cnt)
        out_a.append(a_l)
        out_n.append(n_l)
    return torch.tensor(out_a, dtype=torch.float64), torch.tensor(out_n, dtype=torch.float64)


def test_known_values_two_heads_two_layers():
    # B=1, T=S=5, query row 4, answer span [1, 3), noise {3, 4}... row 4 sees every key.
    m0 = torch.zeros(1, 2, 5, 5)
    m0[0, 0, 4] = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])  # answer 0.5, noise 0.4
    m0[0, 1, 4] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])  # answer 0, noise 1
    m0[0, :, 0] = 1.0  # other rows must be ignored
    m1 = torch.zeros(1, 2, 5, 5)
    m1[0, :, 4] = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0])  # answer 1, noise 0
    spans = torch.tensor([[1, 3]])
    noise = torch.tensor([[False, False, False, True, True]])
    alloc = attention_allocation([m0, m1], spans, noise)
    assert torch.allclose(alloc.answer, torch.tensor([[0.5, 0.0], [1.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(alloc.noise, torch.tensor([[0.4, 1.0], [0.0, 0.0]], dtype=torch.float64))
    assert alloc.answer_mean == pytest.approx(0.625)
    assert alloc.noise_mean == pytest.approx(0.35)
    d = alloc.as_dict()
    assert d["answer_per_layer"] == pytest.approx([0.25, 1.0])
    # A stacked (layers, B, H, T, S) tensor gives the same numbers.
    stacked = attention_allocation(torch.stack([m0, m1]), spans, noise)
    assert torch.equal(stacked.answer, alloc.answer)


def test_differential_map_rows_and_normalize():
    # DIFF map A1 − λ·A2: row sums 1 − λ; normalize divides by it.
    g = torch.Generator().manual_seed(0)
    t = 6
    keep = torch.ones(t, t, dtype=torch.bool).tril()
    s1 = torch.randn(2, 3, t, t, generator=g).masked_fill(~keep, float("-inf")).softmax(-1)
    s2 = torch.randn(2, 3, t, t, generator=g).masked_fill(~keep, float("-inf")).softmax(-1)
    lam = 0.3
    diff = s1 - lam * s2
    spans = torch.tensor([[1, 3], [2, 4]])
    noise = torch.zeros(2, t, dtype=torch.bool)
    noise[:, 4:] = True
    noise[0, 0] = True
    raw = attention_allocation([diff], spans, noise)
    norm = attention_allocation([diff], spans, noise, normalize=True)
    assert torch.allclose(raw.total, torch.full((1, 3), 1 - lam, dtype=torch.float64))
    assert torch.allclose(norm.total, torch.ones(1, 3, dtype=torch.float64))
    assert torch.allclose(norm.answer, raw.answer / (1 - lam))
    assert torch.allclose(norm.noise, raw.noise / (1 - lam))
    # Linear in the map: allocation(A1 − λA2) = allocation(A1) − λ·allocation(A2).
    a1 = attention_allocation([s1], spans, noise)
    a2 = attention_allocation([s2], spans, noise)
    assert torch.allclose(raw.answer, a1.answer - lam * a2.answer)


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_loop_oracle_on_random_maps(normalize):
    g = torch.Generator().manual_seed(1)
    b, t = 3, 9
    maps = [torch.rand(b, 4, t, t, generator=g) for _ in range(3)]
    spans = torch.tensor([[[0, 2], [5, 8]], [[3, 4], [1, 9]], [[2, 6], [6, 7]]])
    noise = torch.rand(b, t, generator=g) > 0.5
    qpos = torch.tensor([[8, 7], [3, 8], [6, 6]])
    alloc = attention_allocation(maps, spans, noise, query_pos=qpos, normalize=normalize)
    want_a, want_n = _loop_allocation(maps, spans, noise, qpos, normalize)
    assert torch.allclose(alloc.answer, want_a)
    assert torch.allclose(alloc.noise, want_n)


def test_with_task_batch_fields():
    vocab = NeedleVocab(num_cities=8, num_numbers=8, num_filler=4)
    b = multi_needle_task(3, 2, 30, seed=0, vocab=vocab, batch_size=2)
    t = b.input_ids.shape[1]
    # A map whose query rows put all mass uniformly on the queried needle span: answer = 1.
    maps = torch.zeros(2, 1, t, t)
    for i in range(2):
        for q in range(2):
            s, e = b.answer_span[i, q].tolist()
            maps[i, 0, b.query_pos[i, q], s:e] = 1.0 / (e - s)
    alloc = attention_allocation([maps], b.answer_span, b.noise_mask, query_pos=b.query_pos)
    assert alloc.answer_mean == pytest.approx(1.0)
    assert alloc.noise_mean == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("maps", "span", "noise", "qpos", "exc", "match"),
    [
        ("x", [[0, 1]], None, None, TypeError, "maps"),
        (torch.zeros(1, 1, 4), [[0, 1]], None, None, ValueError, "maps"),
        (
            [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3)],
            [[0, 1]],
            None,
            None,
            ValueError,
            r"maps\[1\]",
        ),
        ([torch.zeros(1, 1, 4, 4)], [[2, 2]], None, None, ValueError, "answer_span"),
        ([torch.zeros(1, 1, 4, 4)], [[0, 5]], None, None, ValueError, "answer_span"),
        (
            [torch.zeros(1, 1, 4, 4)],
            [[0, 1]],
            torch.zeros(1, 3, dtype=torch.bool),
            None,
            ValueError,
            "noise_mask",
        ),
        ([torch.zeros(1, 1, 4, 4)], [[0, 1]], torch.zeros(1, 4), None, TypeError, "noise_mask"),
        ([torch.zeros(1, 1, 4, 4)], [[0, 1]], None, torch.tensor([4]), ValueError, "query_pos"),
    ],
)
def test_allocation_rejects_bad_input(maps, span, noise, qpos, exc, match):
    noise = torch.zeros(1, 4, dtype=torch.bool) if noise is None else noise
    with pytest.raises(exc, match=match):
        attention_allocation(maps, torch.tensor(span), noise, query_pos=qpos)


def test_retrieval_accuracy():
    vocab = NeedleVocab(num_cities=8, num_numbers=8, num_filler=4)
    b = multi_needle_task(2, 2, 24, seed=0, vocab=vocab, batch_size=3)
    logits = torch.randn(3, 24, vocab.size, generator=torch.Generator().manual_seed(0))
    # Make query (0, 1) and (2, 0) right, everything else wrong.
    for i in range(3):
        for q in range(2):
            right = (i, q) in {(0, 1), (2, 0)}
            tok = b.targets[i, q] if right else vocab.pad
            logits[i, b.query_pos[i, q], tok] = 100.0
            # A big logit at the answer position itself must not count (off-by-one guard).
            logits[i, b.answer_pos[i, q], b.targets[i, q]] = 1000.0
    got = retrieval_accuracy(logits, b)
    assert got.tolist() == [[False, True], [False, False], [True, False]]
    with pytest.raises(ValueError, match="logits"):
        retrieval_accuracy(logits[:, :-1], b)


def test_max_activations_matches_layer_hooks():
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=3)).eval()
    captured = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, out: captured.append(
                float((out[0] if isinstance(out, tuple) else out).abs().max())
            )
        )
        for layer in model.model.layers
    ]
    ids = torch.randint(0, 66, (2, 10))
    res = max_activations(model, ids)
    for h in hooks:
        h.remove()
    assert len(res["hidden_max_per_layer"]) == 3
    # The first layers' outputs are the hooked ones; the last entry is after the final norm.
    assert res["hidden_max_per_layer"][:2] == pytest.approx(captured[:2])
    final = model.model.norm
    assert res["hidden_max"] == pytest.approx(max(res["hidden_max_per_layer"]))
    assert final is not None
    with pytest.raises(ValueError, match="input_ids"):
        max_activations(model, ids[0])

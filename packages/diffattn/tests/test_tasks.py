"""The multi-needle task: layout, spans, masks, determinism and input validation."""

import itertools

import pytest
import torch

from paperbricks.diffattn.tasks import (
    IGNORE_INDEX,
    NeedleVocab,
    multi_needle_batches,
    multi_needle_task,
)

VOCAB = NeedleVocab(num_cities=8, num_numbers=10, num_filler=5)


def test_vocab_layout_is_disjoint_and_decodes():
    v = VOCAB
    assert (v.pad, v.bos, v.is_, v.ask) == (0, 1, 2, 3)
    assert (v.city0, v.number0, v.filler0, v.size) == (4, 12, 22, 27)
    assert v.decode([1, 4, 2, 12, 22, 3]) == "<bos> C0 is N0 f0 ?"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        v.decode([27])
    with pytest.raises(ValueError, match="num_cities"):
        NeedleVocab(num_cities=0)


def _check_structure(b, vocab):
    ids = b.input_ids
    bsz, length = ids.shape
    n, r = b.num_needles, b.num_queries
    assert ids.dtype == torch.int64
    assert (ids[:, 0] == vocab.bos).all()
    for i in range(bsz):
        row = ids[i].tolist()
        spans = b.needle_span[i].tolist()
        cities = []
        for s, e in spans:
            assert e - s == 3
            c, is_, num = row[s:e]
            assert vocab.city0 <= c < vocab.number0
            assert is_ == vocab.is_
            assert vocab.number0 <= num < vocab.filler0
            cities.append(c)
        assert len(set(cities)) == n, "needle cities must be distinct"
        # Needles never overlap and stay inside the context.
        ordered = sorted(spans)
        for (_, e0), (s1, _) in itertools.pairwise(ordered):
            assert e0 <= s1
        context_end = length - 3 * r
        assert ordered[0][0] >= 1 and ordered[-1][1] <= context_end
        # Queries ask for needles 0..R-1 in order and the answer is that needle's number.
        for q in range(r):
            qp, ap = b.query_pos[i, q].item(), b.answer_pos[i, q].item()
            assert ap == qp + 1
            assert row[qp] == vocab.ask
            s, e = b.answer_span[i, q].tolist()
            assert [s, e] == spans[q]
            assert row[qp - 1] == row[s]  # the queried city
            assert row[ap] == row[s + 2] == b.targets[i, q].item()
        # Noise mask: exactly the filler tokens of the context.
        fill = [vocab.filler0 <= t for t in row]
        noise = b.noise_mask[i].tolist()
        assert noise == [f and p < context_end for p, f in enumerate(fill)]
        assert sum(noise) == length - 1 - 3 * n - 3 * r
    # Labels/loss mask line up with the answers.
    assert (b.labels != IGNORE_INDEX).sum() == bsz * r
    assert torch.equal(b.labels.gather(1, b.answer_pos), b.targets)
    assert torch.equal(b.loss_mask.nonzero()[:, 1].view(bsz, r), b.query_pos)
    assert torch.equal(ids[b.loss_mask.roll(1, dims=1)].view(bsz, r), b.targets)


@pytest.mark.parametrize(("n", "r", "length"), [(1, 1, 11), (2, 1, 20), (4, 2, 40), (6, 3, 63)])
def test_structure(n, r, length):
    b = multi_needle_task(n, r, length, seed=3, vocab=VOCAB, batch_size=5)
    assert b.input_ids.shape == (5, length)
    _check_structure(b, VOCAB)


def test_depths_place_needles():
    # length 20, N=2, R=1: context 16 tokens, 10 fillers. depth 0 -> right after <bos>;
    # depth 1 -> right before the query; depth 0.5 -> after 5 fillers (and after earlier needles).
    b = multi_needle_task(2, 1, 20, depths=[1.0, 0.0], seed=0, vocab=VOCAB)
    assert b.needle_span[0].tolist() == [[14, 17], [1, 4]]
    b = multi_needle_task(2, 1, 20, depths=[0.5, 0.5], seed=0, vocab=VOCAB)
    assert b.needle_span[0].tolist() == [[6, 9], [9, 12]]  # ties keep needle order
    b = multi_needle_task(2, 1, 20, depths=[0.5, 0.1], seed=0, vocab=VOCAB)
    assert b.needle_span[0].tolist() == [[9, 12], [2, 5]]  # floor(0.1*10)=1 filler first
    per_row = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    b = multi_needle_task(2, 1, 20, depths=per_row, seed=0, vocab=VOCAB, batch_size=2)
    assert b.needle_span[:, 0, 0].tolist() == [1, 14]
    assert torch.equal(b.depths, per_row)


def test_deterministic_and_seed_sensitive():
    a = multi_needle_task(3, 2, 32, seed=7, vocab=VOCAB, batch_size=4)
    b = multi_needle_task(3, 2, 32, seed=7, vocab=VOCAB, batch_size=4)
    c = multi_needle_task(3, 2, 32, seed=8, vocab=VOCAB, batch_size=4)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.depths, b.depths)
    assert not torch.equal(a.input_ids, c.input_ids)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(
        multi_needle_task(3, 2, 32, seed=g, vocab=VOCAB, batch_size=4).input_ids, a.input_ids
    )
    # The library never touches torch's global RNG.
    state = torch.random.get_rng_state()
    multi_needle_task(3, 2, 32, seed=1, vocab=VOCAB)
    assert torch.equal(state, torch.random.get_rng_state())


def test_answers_are_spread_over_numbers():
    b = multi_needle_task(1, 1, 12, seed=0, vocab=VOCAB, batch_size=2000)
    counts = torch.bincount(b.targets.flatten() - VOCAB.number0, minlength=VOCAB.num_numbers)
    assert counts.numel() == VOCAB.num_numbers
    assert counts.min() > 140 and counts.max() < 260  # ~200 each; a bug would pin one value
    depths = b.needle_span[:, 0, 0]
    assert depths.min() == 1 and depths.max() == 12 - 3 - 3  # both ends are reachable


def test_batches_stream():
    batches = list(multi_needle_batches((1, 4), 2, 32, 3, seed=0, vocab=VOCAB, num_batches=12))
    assert len(batches) == 12
    assert {b.num_needles for b in batches} == {1, 4}
    for b in batches:
        assert b.num_queries == min(2, b.num_needles)
        _check_structure(b, VOCAB)
    again = list(multi_needle_batches((1, 4), 2, 32, 3, seed=0, vocab=VOCAB, num_batches=12))
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(batches, again, strict=True))


def test_to_moves_tensors():
    b = multi_needle_task(2, 1, 16, seed=0, vocab=VOCAB).to("cpu")
    assert b.vocab is VOCAB and b.input_ids.device.type == "cpu"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(num_needles=0), ValueError, "num_needles"),
        (dict(num_needles=2, num_queries=3), ValueError, "num_queries"),
        (dict(num_needles=9), ValueError, "num_cities"),
        (dict(num_needles=2, length=10), ValueError, "length"),
        (dict(num_needles=2, depths=[0.5]), ValueError, "depths"),
        (dict(num_needles=2, depths=[0.5, 1.5]), ValueError, r"\[0, 1\]"),
        (dict(num_needles=1, seed=1.5), TypeError, "seed"),
        (dict(num_needles=1, batch_size=0), ValueError, "batch_size"),
    ],
)
def test_rejects_bad_input(kwargs, exc, match):
    kwargs = {"length": 20, "vocab": VOCAB, **kwargs}
    with pytest.raises(exc, match=match):
        multi_needle_task(**kwargs)


def test_stream_rejects_bad_input():
    with pytest.raises(ValueError, match="num_needles"):
        multi_needle_batches([], vocab=VOCAB)
    with pytest.raises(ValueError, match="length"):
        multi_needle_batches((1, 4), length=16, vocab=VOCAB)

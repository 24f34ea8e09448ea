"""The reproductions: the deterministic "≪" gap of spec §6(a) and an end-to-end smoke run of §6(b)."""

from __future__ import annotations

import pytest
import torch

from paperbricks.core_kernels.testing import assert_close
from paperbricks.prefixquant.prefix import PrefixedCausalLM, find_outlier_tokens
from paperbricks.prefixquant.reproduce import (
    PLANTED_VARIANTS,
    planted_llama,
    planted_setup,
    synthetic_activations,
    synthetic_mse,
    synthetic_mse_once,
)


def test_synthetic_activations_plant_outlier_tokens():
    x, mask = synthetic_activations(0)
    assert x.shape == (512, 256) and mask.sum() == 4 and bool(mask[0])
    big = x.abs().amax(dim=-1)
    assert big[mask].min() >= 100 and big[mask].max() <= 1000
    assert big[~mask].max() < 50
    x2, mask2 = synthetic_activations(0)
    assert torch.equal(x, x2) and torch.equal(mask, mask2)


def test_static_without_prefix_is_much_worse_deterministically():
    """Spec §6(a): static-without-prefix ≫ static-with-prefix, deterministic for a fixed seed."""
    r = synthetic_mse_once(0)
    assert r == synthetic_mse_once(0)
    assert r["static"] > 20 * r["static+prefix"]
    # without the prefix, 4-bit per-tensor static rounds ordinary tokens to ~0: MSE ≈ E[x²]
    x, m = synthetic_activations(1_000_003)
    assert r["static"] > 0.5 * float(x[~m].pow(2).mean())
    plain = synthetic_mse_once(0, rotate=False, clip_search=False)
    assert plain["static"] > 3 * plain["static+prefix"]


def test_synthetic_mse_reproduction(tmp_path):
    res = synthetic_mse(seed=0, out_dir=tmp_path, quick=True)
    assert res.figures and res.figures[0].exists()
    assert res.metrics["min_ratio_static_over_prefix"] >= 10
    assert res.verdict in ("reproduced", "inconclusive", "not reproduced")
    assert len(res.metrics["seeds"]) == 5


@pytest.fixture(scope="module", params=sorted(PLANTED_VARIANTS))
def setup(request):
    return request.param, planted_setup(0, request.param, quick=True)


def _down_inputs(model, ids):
    """The down_proj inputs of every layer for ``ids``: list of (B, T, I)."""
    acts = []
    hooks = [
        layer.mlp.down_proj.register_forward_pre_hook(lambda _m, a: acts.append(a[0].detach()))
        for layer in model.model.layers
    ]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return acts


def test_planted_detection_finds_exactly_the_planted_positions(setup):
    """Every layer's eta-outliers are exactly the positions of the planted ids (both variants)."""
    variant, st = setup
    planted = torch.tensor(st["info"]["planted_ids"])
    ids = st["eval_bos"]
    expected = torch.isin(ids, planted)  # (B, T + 1)
    assert bool(expected[:, 0].all())  # every sequence starts with the planted BOS
    if variant == "bos":
        assert int(expected.sum()) == ids.shape[0]  # BOS only, never inside the text
    else:
        assert int(expected[:, 1:].sum()) > 0  # "." occurs inside the text
    for model in (st["model"], st["rotated"]):
        for acts in _down_inputs(model, ids):
            mask, _ = find_outlier_tokens(acts)  # (B, T + 1)
            assert torch.equal(mask, expected)


def test_planted_prefix_selection(setup):
    """count_mode official: o counts the position-0 BOS, ids skip position 0 (spec §2)."""
    variant, st = setup
    spec, tok = st["spec"], st["tokenizer"]
    bos = tok.bos_token_id
    if variant == "bos":
        assert spec.ids == [bos] and spec.stats["o"] == 1
        assert spec.stats["id_counts"] == []  # BOS is only ever at position 0
    else:
        dot = tok.convert_tokens_to_ids(".")
        assert spec.ids == [dot, bos] and spec.stats["o"] >= 2
        assert spec.stats["id_counts"][0][0] == dot


def test_bos_prefix_cache_reproduces_the_fp_context():
    """With prefix [BOS] the prefixed fp model on the text equals the fp model on BOS + text."""
    st = planted_setup(0, "bos", quick=True)
    with torch.no_grad():
        full = st["model"](st["eval_bos"]).logits[:, 1:]
        pref = PrefixedCausalLM(st["model"], st["spec"], cache_dtype=torch.float32)(
            st["evalw"]
        ).logits
    assert_close("prefixed logits", full, pref, ratio=1e-4)


def test_planted_setup_errors():
    with pytest.raises(ValueError, match="variant"):
        planted_setup(0, "comma")


@pytest.mark.slow
def test_planted_llama_reproduction_smoke(tmp_path):
    res = planted_llama(seed=0, out_dir=tmp_path, quick=True)
    for v in PLANTED_VARIANTS:
        assert res.metrics[f"{v}/detection_exact"] is True
    kls = [v for k, v in res.metrics.items() if "/kl[" in k]
    assert len(kls) == 24 and all(v >= 0 and v == v for v in kls)
    assert res.figures[0].exists() and res.seed_noisy
    assert res.verdict in ("reproduced", "inconclusive", "not reproduced")
    assert len(res.metrics["seeds"]) == 2

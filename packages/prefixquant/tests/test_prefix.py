"""Outlier-token detection, prefix selection and the prefix KV cache (spec §5 oracles 3, 4, 8)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from paperbricks.core_kernels.testing import assert_close, requires_cuda
from paperbricks.core_kernels.testing.factories import tiny_llama_config
from paperbricks.prefixquant.planted import planted_llama
from paperbricks.prefixquant.prefix import (
    PrefixedCausalLM,
    PrefixSpec,
    _bos_id,
    build_prefix_cache,
    calibration_windows,
    find_outlier_tokens,
    prefix_position_mask,
    prefixed_position_ids,
    real_token_mask,
    select_prefix,
)
from paperbricks.prefixquant.rotation import rotate_model_

# ----------------------------------------------------------------------------- detection


def test_planted_positions_recovered_exactly():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(4, 50, 16, generator=g)  # (N, T, C)
    planted = {(0, 0), (0, 17), (1, 3), (2, 49), (3, 10), (3, 11)}
    for n, t in planted:
        acts[n, t, (n + t) % 16] = 1000.0 * (1 + n)
    mask, ratios = find_outlier_tokens(acts, eta=64.0)
    assert mask.shape == ratios.shape == (4, 50)
    assert {tuple(ix) for ix in mask.nonzero().tolist()} == planted
    m = acts.abs().amax(-1)
    assert_close("ratios", m / m.median(dim=-1, keepdim=True).values, ratios)


@pytest.mark.parametrize("eta", [64.0, 10.0])
def test_ratio_criterion_flips_at_eta(eta):
    eps = 1e-3
    acts = torch.ones(3, 9, 4)  # every M_t = 1, median 1
    acts[0, 4, 2] = eta * (1 + eps)
    acts[1, 4, 2] = eta * (1 - eps)
    acts[2, 4, 2] = eta  # strict ">": exactly eta is not an outlier
    mask, ratios = find_outlier_tokens(acts, eta=eta)
    assert mask[0].nonzero().flatten().tolist() == [4]
    assert not mask[1].any() and not mask[2].any()
    assert ratios[2, 4] == eta
    single, _ = find_outlier_tokens(acts[0], eta=eta)  # (T, C) form
    assert single.nonzero().flatten().tolist() == [4]


def test_find_outlier_tokens_errors():
    with pytest.raises(ValueError, match="eta"):
        find_outlier_tokens(torch.ones(2, 3, 4), eta=0)
    with pytest.raises(TypeError, match="acts"):
        find_outlier_tokens(torch.ones(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        find_outlier_tokens(torch.ones(4))


# ----------------------------------------------------------------------------- selection


@pytest.fixture(scope="module")
def planted():
    return planted_llama(seed=0, delimiter_ids=(".", "!", "?", "key"))


def _ids(tok, *words):
    return [tok.convert_tokens_to_ids(w) for w in words]


def _windows(tok, n, t, seed, plants):
    """n windows of t ordinary tokens with ``plants = {position: word or [words per window]}``."""
    g = torch.Generator().manual_seed(seed)
    plain = torch.tensor(_ids(tok, "cat", "dog", "red", "sees", "the", "a", "box", "up"))
    w = plain[torch.randint(0, len(plain), (n, t), generator=g)]
    for pos, word in plants.items():
        words = word if isinstance(word, list) else [word] * n
        for i, wd in enumerate(words):
            if wd is not None:
                w[i, pos] = tok.convert_tokens_to_ids(wd)
    return w


def test_detection_on_planted_llama_finds_bos_and_delimiter(planted):
    model, tok, info = planted_llama(seed=1)  # planted: BOS and "."
    spec = select_prefix(
        model, tok, info["calibration_texts"], num_samples=8, seqlen=48, progress=False
    )
    assert spec.ids == [tok.convert_tokens_to_ids("."), tok.bos_token_id]
    assert spec.text == ". <s>"
    assert [i for i, _ in spec.stats["id_counts"]] == [tok.convert_tokens_to_ids(".")]
    # BOS itself is a massive-activation token of the model: detected at position 0
    ids = torch.tensor([[tok.bos_token_id, *tok("the cat sees a dog")["input_ids"]]])
    acts = []
    h = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda m, a: acts.append(a[0])
    )
    model(ids)
    h.remove()
    mask, _ = find_outlier_tokens(acts[0])
    assert mask[0].nonzero().flatten().tolist() == [0]


def test_position_zero_is_counted_in_o_but_not_in_ids(planted):
    model, tok, _ = planted
    n = 8
    w = _windows(tok, n, 16, 0, {0: "key", 5: ".", 9: ["!"] * (n // 2) + ["?"] * (n // 2)})
    spec = select_prefix(model, tok, calibration_ids=w, progress=False)
    dot, bang, q, key = _ids(tok, ".", "!", "?", "key")
    assert spec.stats["o_official"] == 3 and spec.stats["o"] == 3
    assert spec.stats["mean_count_per_layer"] == [3.0] * 4
    assert key not in [i for i, _ in spec.stats["id_counts"]]
    assert dict(spec.stats["id_counts"]) == {dot: 4 * n, bang: 4 * n // 2, q: 4 * n // 2}
    assert spec.ids == [dot, min(bang, q), max(bang, q), tok.bos_token_id]
    minus = select_prefix(model, tok, calibration_ids=w, count_mode="minus_one", progress=False)
    assert minus.stats["o"] == 2 and minus.ids == [dot, min(bang, q), tok.bos_token_id]
    assert PrefixSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_single_rare_id_is_dropped(planted):
    model, tok, _ = planted
    n = 64
    rare = [None] * n
    rare[3] = "."  # one window of 64: count 4 (4 layers) < 0.1 * 64
    spec = select_prefix(
        model,
        tok,
        calibration_ids=_windows(tok, n, 12, 1, {0: "key", 6: rare}),
        batch_size=64,
        progress=False,
    )
    assert spec.ids == [tok.bos_token_id]
    rare[10] = "."  # two windows: count 8 >= 6.4, kept
    spec = select_prefix(
        model,
        tok,
        calibration_ids=_windows(tok, n, 12, 1, {0: "key", 6: rare}),
        batch_size=64,
        progress=False,
    )
    assert spec.ids == [tok.convert_tokens_to_ids("."), tok.bos_token_id]


def test_no_outliers_and_missing_data_raise(planted):
    model, tok, _ = planted
    with pytest.raises(ValueError, match="no outlier tokens found at eta=64"):
        select_prefix(model, tok, calibration_ids=_windows(tok, 4, 12, 2, {}), progress=False)
    with pytest.raises(ValueError, match="calibration_texts"):
        select_prefix(model, tok, None)
    with pytest.raises(ValueError, match="calibration_texts"):
        select_prefix(model, tok, [])
    with pytest.raises(ValueError, match="count_mode"):
        select_prefix(model, tok, ["the cat ."], count_mode="o-1")
    with pytest.raises(ValueError, match="fewer than seqlen"):
        select_prefix(model, tok, ["the cat ."], seqlen=64)


def test_bos_for_qwen_style_tokenizers_is_eos():
    assert _bos_id(SimpleNamespace(bos_token_id=1, eos_token_id=2), None) == 1
    assert _bos_id(SimpleNamespace(bos_token_id=None, eos_token_id=7), None) == 7  # Qwen2
    assert _bos_id(SimpleNamespace(bos_token_id=7, eos_token_id=7), None) == 7
    assert _bos_id(None, SimpleNamespace(bos_token_id=None, eos_token_id=[5, 6])) == 5


def test_calibration_windows_are_seeded_slices():
    stream = torch.arange(100)
    w = calibration_windows(stream, 5, 10, seed=3)
    assert w.shape == (5, 10)
    assert torch.equal(w[:, 1:] - w[:, :-1], torch.ones(5, 9, dtype=torch.long))
    assert torch.equal(w, calibration_windows(stream, 5, 10, seed=3))
    assert not torch.equal(w, calibration_windows(stream, 5, 10, seed=4))


# ----------------------------------------------------------------------------- prefix cache


def _rotated_llama(**kw):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(**kw)).eval()
    rotate_model_(model, seed=1)
    return model


PREFIX = [56, 1]


def _reference(model, x, mask, prefix=PREFIX):
    """Logits of concat(prefix, x) run in full, sliced to x."""
    b, p = x.shape[0], len(prefix)
    full = torch.cat([torch.tensor([prefix] * b), x], dim=1)
    fm = torch.cat([torch.ones(b, p, dtype=torch.long), mask], dim=1)
    pos = (fm.cumsum(-1) - 1).masked_fill(fm == 0, 1)
    return model(full, attention_mask=fm, position_ids=pos).logits[:, p:], full, fm


def test_prefix_cache_equals_full_prefix_run():
    model = _rotated_llama()
    lm = PrefixedCausalLM(model, PREFIX, cache_dtype=torch.float32)
    x = torch.randint(3, 66, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = lm(x).logits
        ref, _, _ = _reference(model, x, torch.ones_like(x))
    assert out.shape == (1, 9, 66)
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_prefix_cache_batch_left_padding(family):
    if family == "llama":
        model = _rotated_llama()
    else:
        torch.manual_seed(0)
        cfg = Qwen2Config(
            vocab_size=66,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=None,
            eos_token_id=2,
        )
        model = Qwen2ForCausalLM(cfg).eval()
        rotate_model_(model)
    lm = PrefixedCausalLM(model, PREFIX, cache_dtype=torch.float32)
    x = torch.randint(3, 66, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(x)
    mask[0, :3] = 0  # left padding
    x[0, :3] = 0
    with torch.no_grad():
        out = lm(x, attention_mask=mask).logits
        ref, _, _ = _reference(model, x, mask)
    real = mask.bool()
    assert (out[real] - ref[real]).abs().max() < 1e-5
    # the unpadded row equals its own batch-1 run
    with torch.no_grad():
        solo = lm(x[1:]).logits
    assert (solo[0] - out[1]).abs().max() < 1e-5


def test_prefix_cache_generation_matches_full_greedy():
    model = _rotated_llama()
    lm = PrefixedCausalLM(model, PREFIX, cache_dtype=torch.float32)
    x = torch.randint(3, 66, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(x)
    mask[1, :2] = 0
    x[1, :2] = 0
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    seen = []
    h = model.model.embed_tokens.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    out = lm.generate(x, attention_mask=mask, **kw)
    h.remove()
    assert seen[0] == 6  # the prefix came from the cache, not recomputed
    _, full, fm = _reference(model, x, mask)
    ref = model.generate(full, attention_mask=fm, **kw)[:, len(PREFIX) :]
    assert out.shape == (2, 12) and torch.equal(out, ref)
    assert torch.equal(out[:, :6], x)


def test_stored_cache_is_never_mutated_and_fp16_default():
    model = _rotated_llama()
    lm = PrefixedCausalLM(model, PrefixSpec(ids=PREFIX))
    k0 = lm.prefix_cache.layers[0].keys.clone()
    assert k0.dtype == torch.float16 and k0.shape[0] == 1 and lm.prefix_cache.get_seq_length() == 2
    x = torch.randint(3, 66, (3, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = lm(x).logits
        b = lm(x).logits
        ref, _, _ = _reference(model, x, torch.ones_like(x))
    assert torch.equal(a, b)
    assert torch.equal(lm.prefix_cache.layers[0].keys, k0) and lm.prefix_cache.get_seq_length() == 2
    assert_close("fp16 prefix cache", ref, a, ratio=2e-3)
    assert all(layer.self_attn.pq_num_prefix == 2 for layer in model.model.layers)


def test_loss_counts_only_real_tokens():
    model = _rotated_llama()
    lm = PrefixedCausalLM(model, PREFIX, cache_dtype=torch.float32)
    x = torch.randint(3, 66, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        loss = lm(x, labels=x).loss
        full = torch.cat([torch.tensor([PREFIX] * 2), x], dim=1)
        labels = full.clone()
        labels[:, : len(PREFIX) + 1] = -100  # prefix, and x0 (not predicted from inside x)
        ref = model(full, labels=labels).loss
    assert abs(loss.item() - ref.item()) < 1e-5


class _ShapeRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, k):
        self.shapes.append(tuple(k.shape))
        return k


def test_statistics_never_see_prefix_positions():
    model = _rotated_llama()
    lm = PrefixedCausalLM(model, PREFIX, cache_dtype=torch.float32)
    seen = []
    h = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].shape)
    )
    rec = _ShapeRecorder()
    model.model.layers[1].self_attn.k_quantizer = rec
    x = torch.randint(3, 66, (2, 5))
    with torch.no_grad():
        lm(x)
    h.remove()
    assert seen == [torch.Size([2, 5, 64])]
    assert rec.shapes == [(2, 2, 5, 8)]  # (B, Hkv, S - P, D): prefix keys are not quantized


def test_position_helpers():
    assert prefix_position_mask(5, 2).tolist() == [True, True, False, False, False]
    ids = torch.zeros(2, 5, dtype=torch.long)
    m = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    assert real_token_mask(ids, m, num_prefix=2).tolist() == [
        [False, False, True, True, True],
        [False, False, True, True, True],
    ]
    assert prefixed_position_ids(m, 3).tolist() == [[3, 4, 5, 6, 7], [1, 1, 3, 4, 5]]
    with pytest.raises(ValueError, match="num_prefix"):
        prefix_position_mask(3, 4)


def test_build_prefix_cache_and_wrapper_errors():
    model = _rotated_llama()
    cache = build_prefix_cache(model, torch.tensor(PREFIX), dtype=torch.bfloat16)
    assert cache.layers[0].keys.dtype == torch.bfloat16 and cache.get_seq_length() == 2
    assert not hasattr(model.model.layers[0].self_attn, "pq_num_prefix")  # restored
    with pytest.raises(ValueError, match="prefix"):
        build_prefix_cache(model, [])
    with pytest.raises(ValueError, match="holds 2 positions"):
        PrefixedCausalLM(model, [1, 2, 3], prefix_cache=cache)
    lm = PrefixedCausalLM(model, PREFIX)
    with pytest.raises(ValueError, match="position_ids"):
        lm(torch.ones(1, 3, dtype=torch.long), position_ids=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        lm(torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4, dtype=torch.long))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prefix_cache_cuda(dtype):
    model = _rotated_llama(hidden_size=128, intermediate_size=344, num_attention_heads=4).to(
        "cuda", dtype
    )
    lm = PrefixedCausalLM(model, PREFIX)
    x = torch.randint(3, 66, (4, 64), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones_like(x)
    mask[0, :10] = 0
    with torch.no_grad():
        out = lm(x, attention_mask=mask).logits.float()
        b, p = 4, len(PREFIX)
        full = torch.cat([torch.tensor([PREFIX] * b, device="cuda"), x], dim=1)
        fm = torch.cat([torch.ones(b, p, dtype=torch.long, device="cuda"), mask], dim=1)
        pos = (fm.cumsum(-1) - 1).masked_fill(fm == 0, 1)
        ref = model(full, attention_mask=fm, position_ids=pos).logits[:, p:].float()
    real = mask.bool()
    assert_close(f"prefix cache {dtype}", ref[real], out[real], ratio=3e-2)

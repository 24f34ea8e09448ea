"""HF-style DIFF and baseline LMs: HF DiffLlama parity, parameter matching, cache, generate, I/O.

Oracles: transformers' own ``DiffLlamaForCausalLM`` (copied weights, and a checkpoint directory
it saved), the parameter-count formula (baseline + 6d per layer), full-forward logits for cached
decoding and for greedy generation, ``torch.nn.functional.cross_entropy`` for the loss, exact
tensors after a safetensors round trip, causality, and row sums of the maps.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DiffLlamaConfig,
    DiffLlamaForCausalLM,
    DynamicCache,
)

from paperbricks.core_kernels.hf_compat import output_cache
from paperbricks.core_kernels.testing import assert_close, requires_cuda
from paperbricks.diffattn.convert import load_hf_diffllama
from paperbricks.diffattn.models import (
    BaselineTransformerConfig,
    BaselineTransformerForCausalLM,
    DiffTransformerConfig,
    DiffTransformerForCausalLM,
)


def _cfg(**kw) -> DiffTransformerConfig:
    base = dict(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    base.update(kw)
    return DiffTransformerConfig(**base)


def _diff(seed: int = 0, **kw) -> DiffTransformerForCausalLM:
    torch.manual_seed(seed)  # HF-style init draws from the global RNG
    model = DiffTransformerForCausalLM(_cfg(**kw)).eval()
    with torch.no_grad():  # non-trivial γ and λ so that both matter
        for layer in model.model.layers:
            attn = layer.self_attn
            if attn.subln is not None:
                attn.subln.weight.uniform_(0.5, 1.5)
            for p in (attn.diff_lambda.lambda_q1, attn.diff_lambda.lambda_k2):
                p.normal_(0.0, 0.4)
    return model


def _nparams(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# parameter matching


@pytest.mark.parametrize(("heads", "kv", "affine"), [(2, 2, True), (4, 2, True), (2, 1, False)])
def test_parameter_count_equals_baseline_plus_lambda_and_gamma(heads, kv, affine):
    cfg = _cfg(
        hidden_size=64, num_attention_heads=heads, num_key_value_heads=kv, norm_affine=affine
    )
    diff = DiffTransformerForCausalLM(cfg)
    base = BaselineTransformerForCausalLM(BaselineTransformerConfig.from_diff_config(cfg))
    d = cfg.hidden_size // (2 * heads)
    assert base.config.num_attention_heads == 2 * heads
    assert base.config.attention_head_dim == d
    per_layer = 6 * d if affine else 4 * d  # λ_q1, λ_k1, λ_q2, λ_k2 (+ γ ∈ R^{2d})
    assert _nparams(diff) == _nparams(base) + cfg.num_hidden_layers * per_layer


# ----------------------------------------------------------------------------------------------
# HF DiffLlama parity


def _tiny_diffllama(heads: int, kv: int, seed: int = 0) -> DiffLlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = DiffLlamaConfig(
        vocab_size=64, hidden_size=8 * heads, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv, lambda_std_dev=0.4,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},  # not the default
    )  # fmt: skip
    return DiffLlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize(("heads", "kv"), [(4, 4), (4, 2), (8, 2)])
def test_logits_equal_hf_diffllama(heads, kv):
    src = _tiny_diffllama(heads, kv)
    ours = load_hf_diffllama(src)
    assert ours.config.layout == "hf" and ours.config.rope_layout == "half"
    assert ours.config.num_attention_heads == heads // 2  # diff-heads, not component heads
    assert not ours.config.norm_affine and ours.config.rope_theta == 500.0
    ids = torch.randint(0, 64, (2, 13))
    with torch.no_grad():
        assert_close("logits vs DiffLlama", src(ids).logits, ours(ids).logits, ratio=1e-5)


def test_load_diffllama_checkpoint_directory(tmp_path):
    src = _tiny_diffllama(4, 2, seed=1)
    src.save_pretrained(tmp_path)
    ours = load_hf_diffllama(str(tmp_path))
    ids = torch.randint(0, 64, (1, 10))
    with torch.no_grad():
        assert_close("logits vs saved DiffLlama", src(ids).logits, ours(ids).logits, ratio=1e-5)


def test_padded_batch_matches_diffllama_on_real_tokens():
    src = _tiny_diffllama(4, 2, seed=2)
    ours = load_hf_diffllama(src)
    ids = torch.randint(0, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = src(ids, attention_mask=mask, position_ids=pos).logits
        out = ours(ids, attention_mask=mask, position_ids=pos).logits
        alone = ours(ids[1:, 3:]).logits  # the padded row run without its padding
    assert_close("row 0", ref[0], out[0], ratio=1e-5)
    assert_close("row 1 real tokens", ref[1, 3:], out[1, 3:], ratio=1e-5)
    assert_close("row 1 vs unpadded run", alone[0], out[1, 3:], ratio=1e-5)


# ----------------------------------------------------------------------------------------------
# decoding, generate, causality, maps, loss


@pytest.mark.parametrize("layout", ["unilm", "hf"])
def test_cached_decoding_equals_full_forward(layout):
    model = _diff(layout=layout)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        out = model(ids[:, :6], cache=cache, use_cache=True)
        logits = [out.logits]
        for i in range(6, 10):
            out = model(ids[:, i : i + 1], cache=output_cache(out), use_cache=True)
            logits.append(out.logits)
    assert_close("cached decoding", full, torch.cat(logits, 1))


@pytest.mark.parametrize("arch", ["diff", "baseline"])
def test_generate_greedy_equals_stepwise_argmax(arch):
    if arch == "diff":
        model = _diff(seed=3)
    else:
        torch.manual_seed(3)
        model = BaselineTransformerForCausalLM(
            BaselineTransformerConfig.from_diff_config(_cfg())
        ).eval()
    prompt = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        again = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        seq = prompt
        for _ in range(6):  # no cache: the full forward each step
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(gen, again)
    assert torch.equal(gen, seq)


def test_generate_with_left_padding_matches_unpadded_prompt():
    model = _diff(seed=4)
    a = torch.randint(1, 64, (1, 6))
    b = torch.randint(1, 64, (1, 4))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 2, dtype=torch.long), b], 1)])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                             pad_token_id=0)  # fmt: skip
        alone = model.generate(b, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(gen[1, 2:], alone[0])


def test_causality_of_the_model():
    model = _diff(seed=5)
    ids = torch.randint(0, 64, (1, 12))
    ids2 = ids.clone()
    ids2[0, 8:] = (ids2[0, 8:] + 1) % 64
    with torch.no_grad():
        a, b = model(ids).logits, model(ids2).logits
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_output_attentions_are_the_differential_maps():
    model = _diff(seed=6)
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        out = model(ids, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    for layer, maps in zip(model.model.layers, out.attentions, strict=True):
        lam = float(layer.self_attn.diff_lambda().detach())
        assert maps.shape == (1, 2, 7, 7)
        assert_close("rows sum to 1 − λ", torch.full((1, 2, 7), 1.0 - lam), maps.sum(-1))
    base = BaselineTransformerForCausalLM(BaselineTransformerConfig.from_diff_config(_cfg()))
    with torch.no_grad():
        bmaps = base(ids, output_attentions=True).attentions[0]
    assert bmaps.shape == (1, 4, 7, 7)
    assert_close("baseline rows sum to 1", torch.ones(1, 4, 7), bmaps.sum(-1))


def test_loss_is_shifted_cross_entropy():
    model = _diff(seed=7)
    ids = torch.randint(0, 64, (2, 9))
    labels = ids.clone()
    labels[0, :3] = -100
    out = model(ids, labels=labels)
    ref = F.cross_entropy(out.logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1))
    assert_close("loss", ref, out.loss)
    out.loss.backward()
    lam_grad = model.model.layers[1].self_attn.diff_lambda.lambda_q1.grad
    assert lam_grad is not None and bool(lam_grad.abs().sum() > 0)


# ----------------------------------------------------------------------------------------------
# save / load, Auto classes, tied embeddings


@pytest.mark.parametrize("tie", [False, True])
def test_save_load_round_trip_is_exact(tmp_path, tie):
    model = _diff(seed=8, tie_word_embeddings=tie, lambda_init=0.5)
    model.save_pretrained(tmp_path)
    assert os.path.exists(tmp_path / "model.safetensors")
    assert not any(f.endswith((".bin", ".pt")) for f in os.listdir(tmp_path))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "paperbricks_diff_transformer"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, DiffTransformerForCausalLM)
    assert loaded.config.lambda_init == 0.5 and loaded.model.layers[1].self_attn.lambda_init == 0.5
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    if tie:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_baseline_save_load_via_auto(tmp_path):
    torch.manual_seed(9)
    model = BaselineTransformerForCausalLM(BaselineTransformerConfig.from_diff_config(_cfg()))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, BaselineTransformerForCausalLM)
    ids = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, loaded.eval()(ids).logits)


# ----------------------------------------------------------------------------------------------
# config errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(hidden_size=30), "hidden_size"),
        (dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
        (dict(layout="meta"), "layout"),
        (dict(rope_layout="gptj"), "rope_layout"),
        (dict(attn_impl="flash"), "attn_impl"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(lambda_init=float("nan")), "lambda_init"),
        (dict(head_norm=False), "norm_affine"),
        (dict(hidden_size=24, num_attention_heads=4), "head_dim"),  # d = 3, odd
    ],
)
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kwargs)


def test_bad_forward_arguments_raise():
    model = _diff()
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))


# ----------------------------------------------------------------------------------------------
# GPU


@requires_cuda
def test_cuda_bf16_model_tracks_fp32_and_generates():
    model = _diff(seed=10, hidden_size=256, num_attention_heads=2, num_key_value_heads=1)
    ids = torch.randint(0, 64, (2, 200))
    with torch.no_grad():
        ref = model.double()(ids).logits.float()
        model = model.cuda().to(torch.bfloat16)
        out = model(ids.cuda()).logits.float().cpu()
        assert_close("bf16 CUDA vs float64 CPU", ref, out, ratio=5e-2)
        gen = model.generate(ids[:, :20].cuda(), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert gen.shape == (2, 28)

"""Layout converters, the DiffLlama loader's errors, and the Llama -> DIFF conversion.

Oracles: bit-exact round trips (unilm -> hf -> unilm), equal logits across layouts, an
official-layout model exported to transformers' own ``DiffLlamaForCausalLM`` (weights renamed, γ
folded) giving the same logits, and transformers' ``LlamaForCausalLM`` for the Llama conversion
(equal logits where the docstring says they are; a Llama with W^O scaled by (1 − λ_init) when the
factor is kept).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DiffLlamaConfig, DiffLlamaForCausalLM, LlamaConfig, LlamaForCausalLM

from paperbricks.core_kernels.testing import assert_close, assert_lean_import
from paperbricks.diffattn.convert import (
    convert_llama_to_diff,
    hf_to_unilm,
    load_hf_diffllama,
    unilm_to_hf,
)
from paperbricks.diffattn.models import DiffTransformerConfig, DiffTransformerForCausalLM
from paperbricks.diffattn.modules import lambda_init


def _unilm_model(heads: int = 4, kv: int = 2, seed: int = 0) -> DiffTransformerForCausalLM:
    torch.manual_seed(seed)
    cfg = DiffTransformerConfig(
        vocab_size=64, hidden_size=16 * heads, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv,
    )  # fmt: skip
    model = DiffTransformerForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.subln.weight.uniform_(0.5, 1.5)
            layer.self_attn.diff_lambda.lambda_q1.normal_(0.0, 0.4)
    return model


def _load(sd: dict, cfg: DiffTransformerConfig) -> DiffTransformerForCausalLM:
    model = DiffTransformerForCausalLM(cfg).eval()
    model.load_state_dict(sd, strict=True)
    return model


@pytest.mark.parametrize(("heads", "kv"), [(2, 2), (4, 2), (4, 1)])
def test_unilm_hf_round_trip_is_bit_exact_and_preserves_logits(heads, kv):
    model = _unilm_model(heads, kv)
    sd = model.state_dict()
    hf_sd, hf_cfg = unilm_to_hf(sd, model.config)
    assert (hf_cfg.layout, hf_cfg.rope_layout, hf_cfg.norm_affine) == ("hf", "half", True)
    back, back_cfg = hf_to_unilm(hf_sd, hf_cfg)
    assert (back_cfg.layout, back_cfg.rope_layout) == ("unilm", "interleaved")
    assert back.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(hf_sd[q], sd[q])  # the layouts really differ
    ids = torch.randint(0, 64, (2, 11))
    with torch.no_grad():
        ref = model(ids).logits
        assert_close("hf-layout logits", ref, _load(hf_sd, hf_cfg)(ids).logits)
        assert_close("round-trip logits", ref, _load(back, back_cfg)(ids).logits)


def test_keeping_the_rope_layout_only_regroups_heads():
    model = _unilm_model(4, 2, seed=1)
    hf_sd, hf_cfg = unilm_to_hf(model.state_dict(), model.config, rope_layout=None)
    assert hf_cfg.rope_layout == "interleaved"
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        assert_close("hf layout, interleaved RoPE", model(ids).logits, _load(hf_sd, hf_cfg)(ids).logits)  # fmt: skip


def test_official_layout_model_exported_to_transformers_diffllama():
    """unilm -> hf with γ folded into W^O -> transformers' DiffLlama: the same logits."""
    model = _unilm_model(4, 2, seed=2)
    hf_sd, _hf_cfg = unilm_to_hf(model.state_dict(), model.config, norm_affine=False)
    assert not any(k.endswith("subln.weight") for k in hf_sd)
    cfg = model.config
    torch.manual_seed(0)
    dl = DiffLlamaForCausalLM(
        DiffLlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=2 * cfg.num_attention_heads,  # DiffLlama counts component heads
            num_key_value_heads=2 * cfg.num_key_value_heads, rms_norm_eps=cfg.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        )
    ).eval()  # fmt: skip
    assert cfg.rms_norm_eps == cfg.head_norm_eps  # DiffLlama has one eps for both norms
    dl.load_state_dict({k.replace("diff_lambda.", ""): v for k, v in hf_sd.items()}, strict=True)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert_close("official model vs HF DiffLlama", model(ids).logits, dl(ids).logits)
        # and back through our loader
        assert_close("reloaded", model(ids).logits, load_hf_diffllama(dl)(ids).logits)


def test_gamma_fill_when_converting_a_gamma_free_model():
    torch.manual_seed(3)
    dl = DiffLlamaForCausalLM(
        DiffLlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    ours = load_hf_diffllama(dl)
    kept, kept_cfg = hf_to_unilm(ours.state_dict(), ours.config)  # None keeps "no γ"
    assert not kept_cfg.norm_affine and not any(k.endswith("subln.weight") for k in kept)
    sd, cfg = hf_to_unilm(ours.state_dict(), ours.config, norm_affine=True)
    assert cfg.norm_affine and torch.equal(
        sd["model.layers.0.self_attn.subln.weight"], torch.ones(16)
    )
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        assert_close("γ = 1 filled", dl(ids).logits, _load(sd, cfg)(ids).logits)


def test_converter_errors():
    model = _unilm_model(2, 2)
    sd, cfg = model.state_dict(), model.config
    with pytest.raises(ValueError, match="layout"):
        hf_to_unilm(sd, cfg)  # the source is unilm, not hf
    with pytest.raises(TypeError, match="config"):
        unilm_to_hf(sd, {"layout": "unilm"})
    with pytest.raises(ValueError, match="rope_layout"):
        unilm_to_hf(sd, cfg, rope_layout="gptj")
    with pytest.raises(ValueError, match="differential-attention"):
        unilm_to_hf({"w": torch.zeros(2)}, cfg)
    with pytest.raises(TypeError, match="path_or_model"):
        load_hf_diffllama(model)
    with pytest.raises(ValueError, match="path_or_model"):
        load_hf_diffllama("/nonexistent/diffllama")
    dl_cfg = DiffLlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                             attention_bias=True)  # fmt: skip
    with pytest.raises(ValueError, match="attention_bias"):
        load_hf_diffllama(DiffLlamaForCausalLM(dl_cfg))


# ----------------------------------------------------------------------------------------------
# Llama -> DIFF


def _llama(heads: int = 4, kv: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=8 * heads, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize(("heads", "kv"), [(4, 4), (4, 2), (4, 1)])
def test_double_proj_reproduces_the_llama(heads, kv):
    llama = _llama(heads, kv)
    diff = convert_llama_to_diff(llama, mode="double_proj")
    assert diff.config.num_attention_heads == heads and diff.config.component_head_dim == 8
    assert not diff.config.lambda_scale and not diff.config.head_norm
    for layer in diff.model.layers:  # λ pinned to 0, through non-zero (trainable) vectors
        assert abs(float(layer.self_attn.diff_lambda().detach())) < 1e-6
        assert float(layer.self_attn.diff_lambda.lambda_q1.detach().abs().min()) > 0
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        assert_close("double_proj vs Llama", llama(ids).logits, diff(ids).logits)


def test_keep_lambda_scale_scales_each_attention_output():
    """With the (1 − λ_init) factor kept, the converted model is the Llama with W^O scaled."""
    llama = _llama(4, 2, seed=1)
    diff = convert_llama_to_diff(llama, mode="double_proj", keep_lambda_scale=True)
    scaled = _llama(4, 2, seed=1)
    with torch.no_grad():
        for depth, layer in enumerate(scaled.model.layers):
            layer.self_attn.o_proj.weight.mul_(1.0 - lambda_init(depth))
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        assert_close("kept (1 − λ_init)", scaled(ids).logits, diff(ids).logits)
        gap = (llama(ids).logits - diff(ids).logits).norm() / llama(ids).logits.norm()
    assert gap > 1e-3


def test_split_heads_is_exact_only_when_paired_heads_attend_alike():
    llama = _llama(4, 2, seed=2)
    ids = torch.randint(0, 64, (2, 10))
    diff = convert_llama_to_diff(llama, mode="split_heads")
    assert diff.config.num_attention_heads == 2 and diff.config.num_key_value_heads == 1
    with torch.no_grad():
        gap = (llama(ids).logits - diff(ids).logits).norm() / llama(ids).logits.norm()
    assert gap > 1e-5  # generic Llama: diff-head a reuses head a's map for head a + H/2's value
    with torch.no_grad():  # make head a + 2 attend like head a: copy Q rows and KV head 1 <- 0
        for layer in llama.model.layers:
            a = layer.self_attn
            a.q_proj.weight[16:] = a.q_proj.weight[:16]
            a.k_proj.weight[8:] = a.k_proj.weight[:8]
    diff = convert_llama_to_diff(llama, mode="split_heads")
    with torch.no_grad():
        assert_close("split_heads, paired heads alike", llama(ids).logits, diff(ids).logits)


def test_converted_model_trains_lambda_and_generates():
    llama = _llama(4, 2, seed=3)
    diff = convert_llama_to_diff(llama, mode="double_proj")
    ids = torch.randint(0, 64, (1, 8))
    diff.train()
    diff(ids, labels=ids).loss.backward()
    lam = diff.model.layers[0].self_attn.diff_lambda
    assert all(bool(p.grad.abs().sum() > 0) for p in (lam.lambda_q1, lam.lambda_k2))
    diff.eval()
    with torch.no_grad():
        a = diff.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
        b = llama.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b)


def test_llama_conversion_errors():
    with pytest.raises(ValueError, match="mode"):
        convert_llama_to_diff(_llama(), mode="both")
    with pytest.raises(ValueError, match="even"):
        convert_llama_to_diff(_llama(4, 1), mode="split_heads")
    with pytest.raises(TypeError, match="keep_lambda_scale"):
        convert_llama_to_diff(_llama(), keep_lambda_scale=1)


def test_modules_import_leanly():
    """The attention module imports no triton and no CUDA. (The models and converters import
    transformers' ``PreTrainedModel``, which imports ``torch._dynamo`` and with it triton, so the
    package root must keep importing them lazily.)"""
    assert_lean_import("paperbricks.diffattn.modules")

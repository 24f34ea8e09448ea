"""resolve_sites finds every PrefixQuant site on HF Llama/Mistral/Qwen2 and refuses other models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from paperbricks.core_kernels.testing.factories import tiny_llama_config
from paperbricks.prefixquant.sites import UnsupportedModelError, resolve_sites


def test_llama_sites_are_the_modules():
    model = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=3))
    s = resolve_sites(model)
    assert s.family == "llama" and s.num_layers == 3
    assert s.embed_tokens is model.model.embed_tokens
    assert s.final_norm is model.model.norm and s.lm_head is model.lm_head
    for i, ls in enumerate(s.layers):
        layer = model.model.layers[i]
        assert ls.index == i and ls.layer is layer and ls.attn is layer.self_attn
        assert ls.down_proj is layer.mlp.down_proj and ls.v_proj is layer.self_attn.v_proj
        assert ls.input_norm is layer.input_layernorm
        assert ls.post_attention_norm is layer.post_attention_layernorm


def test_qwen2_family():
    cfg = Qwen2Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    s = resolve_sites(Qwen2ForCausalLM(cfg))
    assert s.family == "qwen2" and s.layers[0].q_proj.bias is not None


def test_non_llama_family_is_refused_clearly():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30))
    with pytest.raises(UnsupportedModelError, match="no 'model'"):
        resolve_sites(gpt2)
    model = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=1))
    del model.model.layers[0].mlp.down_proj
    with pytest.raises(UnsupportedModelError, match=r"layers\[0\].mlp has no 'down_proj'"):
        resolve_sites(model)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        resolve_sites(torch.zeros(3))
    assert issubclass(UnsupportedModelError, ValueError)
    with pytest.raises(UnsupportedModelError, match="config"):
        resolve_sites(nn.Linear(2, 2))

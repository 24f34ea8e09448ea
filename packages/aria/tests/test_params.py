"""count_parameters: published numbers, and meta-device instantiations (HF's and ours) as oracles."""

from __future__ import annotations

import pytest
import torch

from paperbricks.aria.params import ParameterCount, aria_published_config, count_parameters


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_published_numbers():
    cfg = aria_published_config()
    full = count_parameters(cfg)
    assert full.per_layer == {
        "attention": 26_214_400,
        "norms": 5_120,
        "router": 163_840,
        "routed_experts": 817_889_280,
        "shared_experts": 25_559_040,
    }
    assert sum(full.per_layer.values()) == 869_831_680  # spec §2, per layer
    assert full.language_model == 24_869_091_840  # spec §2 / paper "24.9B"
    act = count_parameters(cfg, activated=True)
    assert act.decoder == 3_601_349_120  # spec: 3.60B activated per token excl. embedding/head
    # the rest of the model: vision + projector is about 0.4B (paper's 25.3B total)
    assert round(full.total / 1e9, 1) == 25.3
    assert act.vision == full.vision and act.embedding == full.embedding


def _hf_cfg(**text):
    from transformers import AriaConfig

    tc = dict(
        model_type="aria_text",
        vocab_size=97,
        hidden_size=48,
        intermediate_size=20,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        moe_num_experts=6,
        moe_topk=2,
        moe_num_shared_experts=2,
    )
    tc.update(text)
    vc = dict(
        model_type="idefics3_vision",
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    return AriaConfig(vision_config=vc, text_config=tc, projector_patch_to_query_dict={4: 3, 16: 5})


@pytest.mark.parametrize(
    "text",
    [
        {},
        {"attention_bias": True},
        {"mlp_bias": True},
        {"tie_word_embeddings": True},
        {"moe_num_shared_experts": 0},
    ],
)
@pytest.mark.parametrize("top_tie", [False, True])
def test_matches_hf_meta_instantiation(text, top_tie):
    """HF transformers' own AriaForConditionalGeneration, built on the meta device, is the oracle."""
    from transformers import AriaForConditionalGeneration, AriaTextForCausalLM

    cfg = _hf_cfg(**text)
    cfg.tie_word_embeddings = top_tie
    with torch.device("meta"):
        model = AriaForConditionalGeneration(cfg)
        lm = AriaTextForCausalLM(cfg.text_config)
    n = count_parameters(cfg)
    assert n.total == _numel(model)
    assert n.vision == _numel(model.model.vision_tower)
    assert n.projector == _numel(model.model.multi_modal_projector)
    text_only = count_parameters(cfg.text_config)
    assert text_only.total == text_only.language_model == _numel(lm)
    # activated: the meta model's count minus the (E - k) unused experts of every layer
    experts = sum(_numel(layer.mlp.experts) for layer in lm.model.layers)
    e, k = cfg.text_config.moe_num_experts, cfg.text_config.moe_topk
    act = count_parameters(cfg.text_config, activated=True)
    assert act.total == _numel(lm) - experts * (e - k) // e


def test_published_matches_hf_meta():
    from transformers import AriaConfig, AriaForConditionalGeneration

    ours = aria_published_config()
    hf = AriaConfig(
        vision_config={**ours.vision_config.to_diff_dict(), "model_type": "idefics3_vision"},
        text_config={**ours.text_config.to_diff_dict(), "model_type": "aria_text"},
        projector_patch_to_query_dict={1225: 128, 4900: 256},
    )
    with torch.device("meta"):
        model = AriaForConditionalGeneration(hf)
    assert _numel(model) == count_parameters(ours).total == 25_307_311_216


def test_matches_our_meta_instantiation():
    """Our own model classes (A1/A2) built on the meta device agree with the analytic count."""
    modeling = pytest.importorskip("paperbricks.aria.models.modeling_aria")
    text_modeling = pytest.importorskip("paperbricks.aria.models.modeling_aria_text")
    from paperbricks.aria.models.configuration_aria import AriaConfig

    hf = _hf_cfg().to_dict()
    cfg = AriaConfig.from_dict(hf)
    with torch.device("meta"):
        model = modeling.AriaForConditionalGeneration(cfg)
        lm = text_modeling.AriaTextForCausalLM(cfg.text_config)
    assert count_parameters(cfg).total == _numel(model)
    assert count_parameters(cfg.text_config).total == _numel(lm)
    pub = aria_published_config()
    with torch.device("meta"):
        big = modeling.AriaForConditionalGeneration(pub)
    assert _numel(big) == count_parameters(pub).total


def test_dict_input_and_errors():
    cfg = _hf_cfg().to_dict()
    assert isinstance(count_parameters(cfg), ParameterCount)
    assert count_parameters(cfg).total == count_parameters(_hf_cfg()).total
    bad = dict(cfg["text_config"])
    del bad["vocab_size"]
    with pytest.raises(ValueError, match="vocab_size"):
        count_parameters(bad)
    with pytest.raises(ValueError, match="moe_topk"):
        count_parameters({**cfg["text_config"], "moe_topk": 7})
    with pytest.raises(ValueError, match="hidden_size"):
        count_parameters({**cfg["text_config"], "hidden_size": -1})
    with pytest.raises(TypeError, match="activated"):
        count_parameters(cfg, activated="yes")

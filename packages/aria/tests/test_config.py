"""Aria configurations: HF config.json compatibility, published defaults, validation errors."""

from __future__ import annotations

import json

import pytest
import transformers
from transformers import AutoConfig

from paperbricks.aria.models.configuration_aria import (
    AriaConfig,
    AriaTextConfig,
    AriaVisionConfig,
)

TEXT = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    moe_num_experts=8,
    moe_topk=2,
    moe_num_shared_experts=2,
)
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
)


def _hf_config(**text_overrides):
    return transformers.AriaConfig(
        text_config={**TEXT, **text_overrides},
        vision_config={"model_type": "idefics3_vision", **VISION},
        projector_patch_to_query_dict={4: 2, 16: 4},
    )


def test_hf_aria_config_json_loads_into_ours(tmp_path):
    hf = _hf_config(rope_parameters={"rope_type": "default", "rope_theta": 12345.0})
    hf.save_pretrained(tmp_path)
    ours = AriaConfig.from_pretrained(tmp_path)
    assert ours.model_type == "paperbricks_aria"
    assert isinstance(ours.text_config, AriaTextConfig)
    assert isinstance(ours.vision_config, AriaVisionConfig)
    assert ours.text_config.model_type == "paperbricks_aria_text"
    # JSON string keys back to ints, derived maximum recomputed
    assert ours.projector_patch_to_query_dict == {4: 2, 16: 4}
    assert ours.max_value_projector_patch_to_query_dict == 4
    assert ours.image_token_id == ours.image_token_index == 9
    for name in (
        *TEXT,
        "head_dim",
        "rms_norm_eps",
        "max_position_embeddings",
        "tie_word_embeddings",
    ):
        assert getattr(ours.text_config, name) == getattr(hf.text_config, name), name
    for name in (*VISION, "layer_norm_eps", "hidden_act", "num_channels"):
        assert getattr(ours.vision_config, name) == getattr(hf.vision_config, name), name
    assert ours.text_config.rope_parameters["rope_theta"] == 12345.0
    # our extra fields take their defaults
    assert ours.text_config.router_aux_loss_coef == 1e-3
    assert ours.text_config.router_z_loss_coef == 1e-5
    assert ours.text_config.aux_loss_mode == "autoscaler"
    assert ours.text_config.experts_backend == "grouped"


def test_hf_dict_missing_fields_get_hf_defaults_not_ours():
    # An HF dict that leaves the MoE sizes out means HF's 8 experts / top-2 / rope 1e4, not Aria's.
    cfg = AriaConfig(
        text_config={"model_type": "aria_text", "hidden_size": 64, "num_attention_heads": 4},
        vision_config={"model_type": "idefics3_vision", **VISION},
    )
    hf = transformers.AriaTextConfig(hidden_size=64, num_attention_heads=4)
    assert cfg.text_config.moe_num_experts == hf.moe_num_experts == 8
    assert cfg.text_config.moe_topk == hf.moe_topk == 2
    assert cfg.text_config.vocab_size == hf.vocab_size
    assert cfg.text_config.rope_parameters["rope_theta"] == hf.rope_parameters["rope_theta"]
    # ... while our own defaults are Aria's published decoder
    ours = AriaTextConfig()
    assert (ours.moe_num_experts, ours.moe_topk, ours.moe_num_shared_experts) == (64, 6, 2)
    assert (ours.hidden_size, ours.intermediate_size, ours.num_hidden_layers) == (2560, 1664, 28)
    assert (ours.num_attention_heads, ours.num_key_value_heads, ours.head_dim) == (20, 20, 128)
    assert ours.vocab_size == 100352
    assert ours.rope_parameters["rope_theta"] == 5_000_000.0
    vis = AriaVisionConfig()
    assert (vis.hidden_size, vis.patch_size, vis.num_patches_per_side) == (1152, 14, 70)
    assert AriaConfig().projector_patch_to_query_dict == {1225: 128, 4900: 256}


def test_hf_text_config_dir_and_hf_objects(tmp_path):
    hf_text = transformers.AriaTextConfig(**TEXT)
    hf_text.save_pretrained(tmp_path)
    ours = AriaTextConfig.from_pretrained(tmp_path)
    assert ours.model_type == "paperbricks_aria_text"
    assert ours.num_key_value_heads == 2 and ours.head_dim == 16
    # HF config objects are accepted as sub-configs too
    cfg = AriaConfig(text_config=hf_text, vision_config=_hf_config().vision_config)
    assert cfg.text_config.moe_num_experts == 8 and cfg.vision_config.image_size == 56


def test_our_round_trip_and_auto_config(tmp_path):
    cfg = AriaConfig(
        text_config={**TEXT, "aux_loss_mode": "explicit", "experts_backend": "loop"},
        vision_config=VISION,
        projector_patch_to_query_dict={"4": 2, "16": 4},
    )
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "paperbricks_aria"
    assert data["text_config"]["model_type"] == "paperbricks_aria_text"
    assert data["vision_config"]["model_type"] == "paperbricks_aria_vision"
    back = AutoConfig.from_pretrained(tmp_path)
    assert type(back) is AriaConfig
    a, b = back.to_dict(), cfg.to_dict()
    a.pop("_name_or_path", None), b.pop("_name_or_path", None)
    assert a == b
    assert back.text_config.aux_loss_mode == "explicit"
    assert back.text_config.experts_backend == "loop"


def test_legacy_rope_theta_keyword():
    assert AriaTextConfig(rope_theta=1e4).rope_parameters == {
        "rope_type": "default",
        "rope_theta": 1e4,
    }


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (AriaTextConfig, dict(moe_topk=65), "moe_topk"),
        (AriaTextConfig, dict(moe_num_experts=0), "moe_num_experts"),
        (AriaTextConfig, dict(moe_num_shared_experts=-1), "moe_num_shared_experts"),
        (AriaTextConfig, dict(num_key_value_heads=3), "num_key_value_heads"),
        (AriaTextConfig, dict(aux_loss_mode="both"), "aux_loss_mode"),
        (AriaTextConfig, dict(experts_backend="megablocks"), "experts_backend"),
        (AriaTextConfig, dict(router_aux_loss_coef=-1.0), "router_aux_loss_coef"),
        (AriaTextConfig, dict(router_z_loss_coef=float("nan")), "router_z_loss_coef"),
        (AriaTextConfig, dict(hidden_act="gelu"), "hidden_act"),
        (AriaTextConfig, dict(rms_norm_eps=0.0), "rms_norm_eps"),
        (AriaTextConfig, dict(head_dim=15), "head_dim"),
        (AriaTextConfig, dict(mlp_bias=True), "mlp_bias"),
        (AriaTextConfig, dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}), "rope"),
        (AriaTextConfig, dict(model_type="llama"), "model_type"),
        (AriaVisionConfig, dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
        (AriaVisionConfig, dict(image_size=50, patch_size=14), "image_size"),
        (AriaVisionConfig, dict(attention_dropout=0.1), "attention_dropout"),
        (AriaVisionConfig, dict(attn_impl="flash"), "attn_impl"),
        (AriaConfig, dict(vision_feature_layer=-2), "vision_feature_layer"),
        (AriaConfig, dict(projector_patch_to_query_dict={}), "projector_patch_to_query_dict"),
        (AriaConfig, dict(projector_patch_to_query_dict={"a": 1}), "projector_patch_to_query_dict"),
        (AriaConfig, dict(projector_patch_to_query_dict={4: 0}), "projector_patch_to_query_dict"),
        (AriaConfig, dict(image_token_index=-1), "image_token_index"),
        (AriaConfig, dict(text_config={"model_type": "llama"}), "text_config"),
    ],
)
def test_bad_values_raise_naming_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_sub_config_type_error():
    with pytest.raises(TypeError, match="vision_config"):
        AriaConfig(vision_config=[1, 2])

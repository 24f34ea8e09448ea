"""Checkpoint layout conversion: bit-exact round trips, HF as the oracle of the "hf" file names."""

from __future__ import annotations

import json

import pytest
import torch

from paperbricks.aria.convert import (
    LAYOUTS,
    convert_checkpoint,
    convert_config,
    convert_state_dict,
    from_per_expert,
    load_safetensors_dir,
    to_per_expert,
)

transformers = pytest.importorskip("transformers")


def _tiny_hf_config():
    from transformers import AriaConfig

    vc = dict(
        model_type="idefics3_vision",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    tc = dict(
        model_type="aria_text",
        vocab_size=96,
        hidden_size=32,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        moe_num_experts=4,
        moe_topk=2,
        moe_num_shared_experts=2,
        max_position_embeddings=64,
    )
    return AriaConfig(vision_config=vc, text_config=tc, projector_patch_to_query_dict={4: 2, 16: 4})


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random HF AriaForConditionalGeneration saved by HF itself (layout "hf")."""
    from transformers import AriaForConditionalGeneration

    torch.manual_seed(0)
    model = AriaForConditionalGeneration(_tiny_hf_config()).eval()
    path = tmp_path_factory.mktemp("hf") / "hf"
    model.save_pretrained(path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> None:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:6]
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("mid", [x for x in LAYOUTS if x != "hf"])
def test_state_dict_round_trip_is_bit_exact(hf_dir, mid):
    sd = load_safetensors_dir(hf_dir[0])
    there = convert_state_dict(sd, src_layout="hf", dst_layout=mid)
    back = convert_state_dict(there, src_layout=mid, dst_layout="hf")
    _equal(sd, back)
    # and every pair through `mid`, e.g. official -> per_expert -> official
    off = convert_state_dict(sd, src_layout="hf", dst_layout="official")
    _equal(
        off,
        convert_state_dict(
            convert_state_dict(off, src_layout="official", dst_layout=mid),
            src_layout=mid,
            dst_layout="official",
        ),
    )


def test_hf5_layout_is_hf_module_names(hf_dir):
    """The "hf5" layout is exactly HF 5.24's in-memory state_dict (names and values)."""
    sd = load_safetensors_dir(hf_dir[0])
    _equal(convert_state_dict(sd, src_layout="hf", dst_layout="hf5"), hf_dir[1])


def test_per_expert_slices(hf_dir):
    """gate_e = fc1[e][:, :I]ᵀ, up_e = fc1[e][:, I:]ᵀ, down_e = fc2[e]ᵀ, and the SwiGLU agrees."""
    sd = hf_dir[1]
    pe = to_per_expert(sd, _tiny_hf_config())
    key = "model.language_model.layers.1.mlp.experts"
    w1, w2 = sd[f"{key}.gate_up_proj"], sd[f"{key}.down_proj"]
    i = w1.shape[2] // 2
    for e in range(w1.shape[0]):
        assert torch.equal(pe[f"{key}.{e}.gate_proj.weight"], w1[e][:, :i].T)
        assert torch.equal(pe[f"{key}.{e}.up_proj.weight"], w1[e][:, i:].T)
        assert torch.equal(pe[f"{key}.{e}.down_proj.weight"], w2[e].T)
    assert f"{key}.gate_up_proj" not in pe
    # expert 2 as three nn.Linear equals HF's own expert computation (chunk order of HF 5.24)
    x = torch.randn(5, w1.shape[1], dtype=torch.float64)
    gate, up = (x @ w1[2].double()).chunk(2, dim=-1)
    ref = (torch.nn.functional.silu(gate) * up) @ w2[2].double()
    lin = {n: pe[f"{key}.2.{n}.weight"].double() for n in ("gate_proj", "up_proj", "down_proj")}
    out = torch.nn.functional.linear(
        torch.nn.functional.silu(torch.nn.functional.linear(x, lin["gate_proj"]))
        * torch.nn.functional.linear(x, lin["up_proj"]),
        lin["down_proj"],
    )
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    _equal(from_per_expert(pe, _tiny_hf_config()), sd)


@pytest.mark.parametrize("dst", ["hf4", "hf5", "hf"])
def test_hf_loads_converted_directory(hf_dir, tmp_path, dst):
    """HF 5.24 itself loads the hf4 / hf5 / hf directories with no missing or unexpected keys."""
    from transformers import AriaForConditionalGeneration

    out = convert_checkpoint(hf_dir[0], tmp_path / dst, src_layout="hf", dst_layout=dst)
    model, info = AriaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _equal(model.state_dict(), hf_dir[1])


def test_official_directory_round_trip_and_names(hf_dir, tmp_path):
    off = convert_checkpoint(hf_dir[0], tmp_path / "off", src_layout="hf", dst_layout="official")
    sd = load_safetensors_dir(off)
    cfg = json.loads((off / "config.json").read_text())
    assert "language_model.model.layers.0.mlp.experts.fc1.weight" in sd
    assert "multi_modal_projector.cross_attn.ln_kv.weight" in sd
    assert "multi_modal_projector.ln_ffn.bias" in sd
    assert "multi_modal_projector.ffn.linear_in.weight" in sd
    assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in sd
    assert not any("post_layernorm" in k for k in sd)
    assert cfg["text_config"]["model_type"] == "aria_moe_lm"
    assert cfg["text_config"]["moe_intermediate_size"] == 16
    back = convert_checkpoint(off, tmp_path / "back", src_layout="official", dst_layout="hf")
    _equal(load_safetensors_dir(back), load_safetensors_dir(hf_dir[0]))
    cfg_back = json.loads((back / "config.json").read_text())
    assert cfg_back["text_config"]["intermediate_size"] == 16
    assert cfg_back["text_config"]["rope_parameters"]["rope_theta"] == pytest.approx(10000.0)
    # files other than weights/config are copied
    assert (back / "generation_config.json").is_file()


def test_sharded_write_and_read(hf_dir, tmp_path):
    out = convert_checkpoint(
        hf_dir[0], tmp_path / "pe", src_layout="hf", dst_layout="per_expert", max_shard_size=40_000
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    back = convert_checkpoint(out, tmp_path / "back", src_layout="per_expert", dst_layout="hf")
    _equal(load_safetensors_dir(back), load_safetensors_dir(hf_dir[0]))


def test_text_only_checkpoint(tmp_path):
    from transformers import AriaTextForCausalLM

    torch.manual_seed(1)
    m = AriaTextForCausalLM(_tiny_hf_config().text_config)
    m.save_pretrained(tmp_path / "t")
    sd = load_safetensors_dir(tmp_path / "t")
    assert "model.layers.0.mlp.experts.fc1.weight" in sd
    hf5 = convert_state_dict(sd, src_layout="hf", dst_layout="hf5")
    _equal(hf5, m.state_dict())
    for lay in LAYOUTS:
        _equal(
            sd,
            convert_state_dict(
                convert_state_dict(sd, src_layout="hf", dst_layout=lay),
                src_layout=lay,
                dst_layout="hf",
            ),
        )


def test_config_round_trips():
    cfg = _tiny_hf_config().to_dict()
    cfg = json.loads(json.dumps(cfg))
    for lay in LAYOUTS:
        there = convert_config(cfg, src_layout="hf", dst_layout=lay)
        back = convert_config(there, src_layout=lay, dst_layout="hf")
        assert back == cfg, lay


def test_errors(hf_dir, tmp_path):
    sd = load_safetensors_dir(hf_dir[0])
    with pytest.raises(ValueError, match="src_layout"):
        convert_state_dict(sd, src_layout="gguf", dst_layout="hf")
    with pytest.raises(ValueError, match="dst_layout"):
        convert_state_dict(sd, src_layout="hf", dst_layout="megatron")
    bad = dict(sd)
    bad["language_model.model.layers.0.mlp.experts.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"experts\.bias"):
        convert_state_dict(bad, src_layout="hf", dst_layout="hf5")
    # hf5 names are foreign to the hf (file) layout
    with pytest.raises(ValueError, match="do not belong"):
        convert_state_dict(hf_dir[1], src_layout="hf", dst_layout="official")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("1")
    with pytest.raises(FileExistsError, match="dst_dir"):
        convert_checkpoint(hf_dir[0], tmp_path / "full", src_layout="hf", dst_layout="hf5")
    with pytest.raises(FileNotFoundError, match="src_dir"):
        convert_checkpoint(tmp_path / "full", tmp_path / "o", src_layout="hf", dst_layout="hf5")
    pe = to_per_expert(hf_dir[1])
    del pe["model.language_model.layers.0.mlp.experts.3.up_proj.weight"]
    with pytest.raises(ValueError, match="lacks"):
        from_per_expert(pe)
    with pytest.raises(ValueError, match="moe_num_experts"):
        to_per_expert(hf_dir[1], {"moe_num_experts": 5})

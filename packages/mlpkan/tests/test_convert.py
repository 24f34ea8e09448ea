"""Official-checkpoint converter: a hand-built state dict with the official MLP-KAN names (timm
VisionTransformer + kanBlock + MoE_KAN_MLP + FasterKAN, including the unused blocks.*.mlp.*)
loads strictly and computes what the official forward computes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from paperbricks.core_kernels.testing import assert_close, assert_lean_import
from paperbricks.mlpkan.convert import (
    config_from_official_state_dict,
    convert_official_state_dict,
    load_official_checkpoint,
)

D, DEPTH, HEADS, PATCH, IMG, HDIM, LABELS = 16, 2, 2, 4, 8, 12, 3


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the official names and shapes (DeiT-style, E = 4: 2 MLP + 2 KAN)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float()

    sd = {
        "cls_token": r(1, 1, D),
        "pos_embed": r(1, (IMG // PATCH) ** 2 + 1, D),
        "patch_embed.proj.weight": r(D, 3, PATCH, PATCH),
        "patch_embed.proj.bias": r(D),
        "norm.weight": 1 + r(D),
        "norm.bias": r(D),
        "head.weight": r(LABELS, D),
        "head.bias": r(LABELS),
    }
    grid = torch.linspace(-2, 2, 8)
    for i in range(DEPTH):
        b = f"blocks.{i}"
        sd.update(
            {
                f"{b}.norm1.weight": 1 + r(D),
                f"{b}.norm1.bias": r(D),
                f"{b}.attn.qkv.weight": r(3 * D, D),  # kanBlock: qkv_bias=False
                f"{b}.attn.proj.weight": r(D, D),
                f"{b}.attn.proj.bias": r(D),
                f"{b}.norm2.weight": 1 + r(D),
                f"{b}.norm2.bias": r(D),
                # the stray dense MLP of timm's Block constructor (never used in forward)
                f"{b}.mlp.fc1.weight": r(4 * D, D),
                f"{b}.mlp.fc1.bias": r(4 * D),
                f"{b}.mlp.fc2.weight": r(D, 4 * D),
                f"{b}.mlp.fc2.bias": r(D),
                f"{b}.kan.gate.weight": r(4, D, scale=1.0),
            }
        )
        for e in (0, 1):
            p = f"{b}.kan.experts.{e}"
            sd.update(
                {
                    f"{p}.fc1.weight": r(HDIM, D),
                    f"{p}.fc1.bias": r(HDIM),
                    f"{p}.fc2.weight": r(D, HDIM),
                    f"{p}.fc2.bias": r(D),
                }
            )
        for e in (2, 3):
            for layer, (n_in, n_out) in enumerate(((D, HDIM // 2), (HDIM // 2, D))):
                p = f"{b}.kan.experts.{e}.layers.{layer}"
                sd.update(
                    {
                        f"{p}.layernorm.weight": 1 + r(n_in),
                        f"{p}.layernorm.bias": r(n_in),
                        f"{p}.rbf.grid": grid.clone(),
                        f"{p}.spline_linear.weight": r(n_out, n_in * 8),
                    }
                )
    return sd


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official VisionKAN forward, written from its description (float64)."""
    t = {k: v.double() for k, v in sd.items()}
    h = F.conv2d(x, t["patch_embed.proj.weight"], t["patch_embed.proj.bias"], stride=PATCH)
    h = h.flatten(2).transpose(1, 2)
    h = torch.cat([t["cls_token"].expand(x.shape[0], -1, -1), h], 1) + t["pos_embed"]
    bsz, n_tok, _ = h.shape
    hd = D // HEADS
    for i in range(DEPTH):
        b = f"blocks.{i}"
        u = F.layer_norm(h, (D,), t[f"{b}.norm1.weight"], t[f"{b}.norm1.bias"], 1e-5)
        qkv = (u @ t[f"{b}.attn.qkv.weight"].T).reshape(bsz, n_tok, 3, HEADS, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * hd**-0.5, -1) @ v
        att = att.transpose(1, 2).reshape(bsz, n_tok, D)
        h = h + att @ t[f"{b}.attn.proj.weight"].T + t[f"{b}.attn.proj.bias"]
        u = F.layer_norm(h, (D,), t[f"{b}.norm2.weight"], t[f"{b}.norm2.bias"], 1e-5).reshape(-1, D)
        probs = torch.softmax(u @ t[f"{b}.kan.gate.weight"].T, -1)
        w, idx = probs.topk(2, -1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(u)
        for e in range(4):
            p = f"{b}.kan.experts.{e}"
            tok, slot = torch.where(idx == e)
            if not len(tok):
                continue
            z = u[tok]
            if e < 2:
                z = F.gelu(z @ t[f"{p}.fc1.weight"].T + t[f"{p}.fc1.bias"])
                z = z @ t[f"{p}.fc2.weight"].T + t[f"{p}.fc2.bias"]
            else:
                for layer in range(2):
                    q_ = f"{p}.layers.{layer}"
                    z = F.layer_norm(
                        z,
                        z.shape[-1:],
                        t[f"{q_}.layernorm.weight"],
                        t[f"{q_}.layernorm.bias"],
                        1e-5,
                    )
                    basis = 1 - torch.tanh((z[..., None] - t[f"{q_}.rbf.grid"]) / 0.33) ** 2
                    z = basis.reshape(z.shape[0], -1) @ t[f"{q_}.spline_linear.weight"].T
            out.index_add_(0, tok, w[tok, slot, None] * z)
        h = h + out.reshape(bsz, n_tok, D)
    h = F.layer_norm(h, (D,), t["norm.weight"], t["norm.bias"], 1e-6)
    return h[:, 0] @ t["head.weight"].T + t["head.bias"]


def test_converter_drops_the_stray_mlp_and_loads_strictly():
    sd = official_state_dict()
    converted = convert_official_state_dict(sd)
    assert not any(".mlp." in k for k in converted)
    assert converted["vit.blocks.0.ffn.mlp_w1"].shape == (2, D, HDIM)
    assert converted["vit.blocks.1.ffn.mlp_w2"].shape == (2, HDIM, D)
    assert torch.equal(
        converted["vit.blocks.0.ffn.mlp_w1"][1], sd["blocks.0.kan.experts.1.fc1.weight"].T
    )
    assert torch.equal(
        converted["vit.blocks.1.ffn.kan_experts.0.layers.1.spline_linear.weight"],
        sd["blocks.1.kan.experts.2.layers.1.spline_linear.weight"],
    )
    n_dropped = sum(k.split(".")[2] == "mlp" for k in sd if k.startswith("blocks."))
    n_mlp_experts = 2 * 4 * DEPTH
    assert len(converted) == len(sd) - n_dropped - n_mlp_experts + 4 * DEPTH
    model = load_official_checkpoint(sd, num_attention_heads=HEADS, attn_impl="reference")
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.image_size) == (
        D,
        DEPTH,
        PATCH,
        IMG,
    )
    assert (cfg.num_mlp_experts, cfg.num_kan_experts, cfg.mlp_expert_hidden, cfg.kan_hidden) == (
        2,
        2,
        HDIM,
        HDIM // 2,
    )
    assert cfg.num_labels == LABELS and cfg.official_compat and cfg.qkv_bias is False
    assert set(model.state_dict()) == set(converted)


def test_converted_model_computes_the_official_forward(seeded):
    sd = official_state_dict(seed=1)
    model = load_official_checkpoint(
        sd, num_attention_heads=HEADS, attn_impl="reference", impl="reference"
    ).double()
    x = torch.randn(3, 3, IMG, IMG, dtype=torch.float64)
    ref = official_forward(sd, x)
    assert_close("official forward", ref, model(x).logits, ratio=1e-10)
    # Both kinds of expert are exercised by this input.
    counts = model.routing_stats()[0]["expert_counts"]
    assert counts[:2].sum() > 0 and counts[2:].sum() > 0


def test_checkpoint_wrappers_and_files(tmp_path):
    sd = official_state_dict()
    wrapped = {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": torch.tensor(3)}
    cfg = config_from_official_state_dict(wrapped, num_attention_heads=HEADS)
    assert cfg.kan_num_grids == 8 and cfg.kan_grid_range == [-2.0, 2.0]
    assert cfg.num_attention_heads == HEADS
    assert math.isclose(cfg.block_eps, 1e-5)
    pth = tmp_path / "checkpoint.pth"
    torch.save({"model": sd}, pth)
    a = load_official_checkpoint(pth, num_attention_heads=HEADS)
    st = tmp_path / "checkpoint.safetensors"
    save_file(sd, str(st))
    b = load_official_checkpoint(st, num_attention_heads=HEADS)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_converter_errors():
    sd = official_state_dict()
    with pytest.raises(ValueError, match="unrecognised official key"):
        convert_official_state_dict({**sd, "blocks.0.ls1.gamma": torch.zeros(D)})
    with pytest.raises(ValueError, match="patch_embed"):
        convert_official_state_dict({"head.weight": torch.zeros(2, 2)})
    with pytest.raises(TypeError, match="mapping"):
        convert_official_state_dict([1, 2])
    bad_cfg = config_from_official_state_dict(sd, num_attention_heads=HEADS, num_hidden_layers=1)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official_checkpoint(sd, config=bad_cfg)


def test_moe_import_is_lean():
    # (paperbricks.mlpkan.models / convert cannot be: transformers' PreTrainedModel imports
    # triton itself in transformers 5.24.)
    assert_lean_import("paperbricks.mlpkan.moe")

"""HF models: parity of the dense-MLP ViT with transformers' ViT, parameter counts vs the closed
form, matched widths, save/load round trips, gradients everywhere, drop-path, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from paperbricks.core_kernels.testing import assert_bitwise_equal, assert_close, requires_cuda
from paperbricks.mlpkan.models import (
    MLPKANConfig,
    MLPKANForImageClassification,
    MLPKANRegressor,
    MLPKANRegressorConfig,
    MLPKANViTModel,
    count_parameters,
    match_hidden,
    matched_config,
)


def _vit_cfg(**kw) -> MLPKANConfig:
    args = dict(
        image_size=8,
        patch_size=4,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_expert_hidden=12,
        kan_hidden=6,
        num_mlp_experts=2,
        num_kan_experts=2,
        num_labels=3,
        attn_impl="reference",
        impl="reference",
    )
    args.update(kw)
    return MLPKANConfig(**args)


def _reg_cfg(**kw) -> MLPKANRegressorConfig:
    args = dict(n_inputs=3, hidden_size=8, mlp_expert_hidden=8, kan_hidden=4, num_layers=2)
    args.update(kw)
    return MLPKANRegressorConfig(**args)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_dense_mlp_vit_equals_transformers_vit(seeded):
    """ffn="mlp" is timm's/DeiT's ViT: copy its weights into HF ViTForImageClassification."""
    cfg = _vit_cfg(ffn="mlp", dense_mlp_hidden=24, num_hidden_layers=2)
    ours = MLPKANForImageClassification(cfg).double().eval()
    hf_cfg = ViTConfig(
        image_size=8,
        patch_size=4,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        num_labels=3,
    )
    hf = ViTForImageClassification(hf_cfg).double().eval()
    sd = ours.state_dict()
    new = {
        "vit.embeddings.cls_token": sd["vit.cls_token"],
        "vit.embeddings.position_embeddings": sd["vit.pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["vit.patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["vit.patch_embed.proj.bias"],
        "vit.layernorm.weight": sd["vit.norm.weight"],
        "vit.layernorm.bias": sd["vit.norm.bias"],
        "classifier.weight": sd["head.weight"],
        "classifier.bias": sd["head.bias"],
    }
    for i in range(2):
        o, h = f"vit.blocks.{i}", f"vit.layers.{i}"
        for name, part in zip(("q", "k", "v"), sd[f"{o}.attn.qkv.weight"].chunk(3), strict=True):
            new[f"{h}.attention.{name}_proj.weight"] = part
        for name, part in zip(("q", "k", "v"), sd[f"{o}.attn.qkv.bias"].chunk(3), strict=True):
            new[f"{h}.attention.{name}_proj.bias"] = part
        for a, b in (
            ("attn.proj", "attention.o_proj"),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("ffn.fc1", "mlp.fc1"),
            ("ffn.fc2", "mlp.fc2"),
        ):
            new[f"{h}.{b}.weight"] = sd[f"{o}.{a}.weight"]
            new[f"{h}.{b}.bias"] = sd[f"{o}.{a}.bias"]
    hf.load_state_dict(new, strict=True)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    assert_close("logits vs transformers ViT", hf(x).logits, ours(x).logits, ratio=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"router": "soft", "soft_slots_per_expert": 2},
        {"ffn": "mlp"},
        {"ffn": "kan", "dense_kan_hidden": 5},
        {"kan_basis": "bspline", "kan_num_grids": 4, "qkv_bias": False},
        {"kan_basis": "rbf", "num_mlp_experts": 0, "num_kan_experts": 3, "top_k": 1},
        {"official_compat": True},
    ],
)
def test_vit_parameter_count_matches_closed_form(seeded, kw):
    cfg = _vit_cfg(**kw)
    model = MLPKANForImageClassification(cfg)
    assert count_parameters(cfg) == _trainable(model)
    ffn = model.vit.blocks[0].ffn
    assert count_parameters(cfg, per_block=True) == _trainable(ffn)


@pytest.mark.parametrize("ffn", ["mlp-kan", "mlp", "kan"])
def test_regressor_parameter_count_matches_closed_form(seeded, ffn):
    cfg = _reg_cfg(ffn=ffn)
    assert count_parameters(cfg) == _trainable(MLPKANRegressor(cfg))


def test_deit_tiny_mlp_kan_counts_from_spec():
    cfg = MLPKANConfig(num_labels=100)  # DeiT-tiny, official MLP-KAN FFN
    assert count_parameters(cfg, per_block=True) == 1_479_936
    dense = MLPKANConfig(ffn="mlp", dense_mlp_hidden=4 * 192)
    assert count_parameters(dense, per_block=True) == 295_872  # the dense DeiT FFN (spec §2)


@pytest.mark.parametrize("ffn", ["mlp", "kan"])
@pytest.mark.parametrize("make", [_vit_cfg, _reg_cfg])
def test_match_hidden_picks_the_closest_width(ffn, make):
    cfg = make()
    target = count_parameters(cfg)
    h = match_hidden(cfg, ffn)
    field = "dense_mlp_hidden" if ffn == "mlp" else "dense_kan_hidden"
    counts = {
        w: count_parameters(
            matched_config(cfg, ffn, target=count_parameters(cfg)).__class__(
                **{**_plain(cfg), "ffn": ffn, field: w}
            )
        )
        for w in (h - 1, h, h + 1)
        if w >= 1
    }
    assert min(counts, key=lambda w: abs(counts[w] - target)) == h
    matched = matched_config(cfg, ffn)
    assert matched.ffn == ffn and getattr(matched, field) == h
    assert count_parameters(matched) == counts[h]


def _plain(cfg):
    d = cfg.to_dict()
    for k in ("model_type", "transformers_version", "architectures"):
        d.pop(k, None)
    return d


@pytest.mark.parametrize("kw", [{}, {"router": "soft"}, {"ffn": "kan"}])
def test_vit_save_load_round_trip_is_exact(seeded, tmp_path, kw):
    model = MLPKANForImageClassification(_vit_cfg(**kw)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "paperbricks_mlpkan_vit"
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, MLPKANForImageClassification) and not loaded.training
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert_bitwise_equal(sd[k], sd2[k], k)
    x = torch.randn(2, 3, 8, 8)
    assert_bitwise_equal(model(x).logits, loaded(x).logits, "logits")
    backbone = AutoModel.from_pretrained(tmp_path)
    assert isinstance(backbone, MLPKANViTModel)


def test_regressor_save_load_round_trip_is_exact(seeded, tmp_path):
    model = MLPKANRegressor(_reg_cfg(router="soft", soft_slots_per_expert=2)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MLPKANRegressor)
    x = torch.randn(5, 3)
    assert_bitwise_equal(model(x).predictions, loaded(x).predictions, "predictions")
    for k, v in model.state_dict().items():
        assert_bitwise_equal(v, loaded.state_dict()[k], k)


@pytest.mark.parametrize("router", ["topk", "soft"])
def test_every_vit_parameter_receives_a_gradient(seeded, router):
    kw = {"top_k": 4} if router == "topk" else {"router": "soft"}  # k = E touches every expert
    model = MLPKANForImageClassification(_vit_cfg(**kw))
    out = model(torch.randn(2, 3, 8, 8), labels=torch.tensor([0, 2]))
    out.loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert name.endswith("rbf.grid")
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("ffn", ["mlp-kan", "mlp", "kan"])
def test_every_regressor_parameter_receives_a_gradient(seeded, ffn):
    model = MLPKANRegressor(_reg_cfg(ffn=ffn, top_k=8))
    out = model(torch.randn(6, 3), labels=torch.randn(6))
    out.loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_losses_router_outputs_and_stats(seeded):
    model = MLPKANForImageClassification(_vit_cfg(router_aux_loss_coef=0.01))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    out = model(x, labels=y)
    ce = torch.nn.functional.cross_entropy(out.logits, y)
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (2 * 5, 4)
    assert float(out.aux_loss) > 0
    assert_close("loss = CE + aux", ce + out.aux_loss, out.loss, ratio=1e-6)
    stats = model.routing_stats()
    assert len(stats) == 2
    assert float(stats[0]["kan_share"] + stats[0]["mlp_share"]) == pytest.approx(1.0)
    reg = MLPKANRegressor(_reg_cfg())
    xr, yr = torch.randn(4, 3), torch.randn(4)
    o = reg(xr, labels=yr)
    assert o.predictions.shape == (4, 1)
    assert_close("mse", torch.nn.functional.mse_loss(o.predictions[:, 0], yr), o.loss, ratio=1e-6)
    assert len(reg.routing_stats()) == 2


def test_drop_path_is_honoured_and_official_compat_preset(seeded):
    model = MLPKANForImageClassification(_vit_cfg(drop_path=0.5, ffn="mlp"))
    x = torch.randn(8, 3, 8, 8)
    model.train()
    assert not torch.equal(model(x).logits, model(x).logits)  # stochastic depth in training
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    compat = _vit_cfg(official_compat=True, drop_path=0.3)
    assert compat.qkv_bias is False and compat.drop_path == 0.0 and compat.block_eps == 1e-5
    m = MLPKANForImageClassification(compat)
    assert m.vit.blocks[0].attn.qkv.bias is None and m.vit.blocks[0].norm1.eps == 1e-5
    assert m.vit.norm.eps == 1e-6


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="top_k"):
        _vit_cfg(top_k=5)
    with pytest.raises(ValueError, match="ffn"):
        _vit_cfg(ffn="moe")
    with pytest.raises(ValueError, match="image_size"):
        _vit_cfg(image_size=10)
    with pytest.raises(ValueError, match="kan_grid_range"):
        _vit_cfg(kan_grid_range=(2.0, -2.0))
    with pytest.raises(ValueError, match="router"):
        _reg_cfg(router="hash")
    model = MLPKANForImageClassification(_vit_cfg())
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.randn(2, 3, 12, 12))
    with pytest.raises(ValueError, match="labels"):
        model(torch.randn(2, 3, 8, 8), labels=torch.tensor([1]))
    reg = MLPKANRegressor(_reg_cfg())
    with pytest.raises(ValueError, match="n_inputs=3"):
        reg(torch.randn(4, 2))
    with pytest.raises(TypeError, match="MLPKANConfig"):
        count_parameters(ViTConfig())


@requires_cuda
@pytest.mark.parametrize("router", ["topk", "soft"])
def test_gpu_vit_bf16_matches_fp32_cpu(seeded, router):
    cfg = _vit_cfg(
        image_size=32,
        patch_size=4,
        hidden_size=64,
        num_attention_heads=4,
        mlp_expert_hidden=64,
        kan_hidden=32,
        router=router,
        impl="auto",
        attn_impl="auto",
        num_mlp_experts=4,
        num_kan_experts=4,
    )
    model = MLPKANForImageClassification(cfg).eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x).logits
    gpu = MLPKANForImageClassification(cfg).eval().to("cuda")
    gpu.load_state_dict(model.state_dict())
    out32 = gpu(x.cuda()).logits
    assert_close("gpu fp32", ref, out32.cpu(), ratio=1e-4)
    gpu = gpu.to(torch.bfloat16).train()
    out = gpu(x.cuda().bfloat16(), labels=torch.tensor([0, 1, 2, 0], device="cuda"))
    out.loss.backward()
    assert torch.isfinite(out.logits.float()).all()
    assert_close("gpu bf16", ref, out.logits.float().cpu(), ratio=0.2)  # routing may flip
    for name, p in gpu.named_parameters():
        if p.requires_grad and p.grad is not None:
            assert torch.isfinite(p.grad.float()).all(), name

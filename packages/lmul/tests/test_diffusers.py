"""LMulAttnProcessor on diffusers Attention modules: direct reference, AttnProcessor2_0 plumbing."""

from __future__ import annotations

import sys

import pytest
import torch

import paperbricks.lmul.modules as modules_mod
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    requires_cuda,
    rms_error_ratio,
)
from paperbricks.lmul.config import LMulConfig
from paperbricks.lmul.ops import lmul_matmul

pytest.importorskip("diffusers")
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from paperbricks.lmul.diffusers_processor import LMulAttnProcessor
from paperbricks.lmul.modules import apply_lmul_


def _exact_matmul(a: torch.Tensor, b: torch.Tensor, **_: object) -> torch.Tensor:
    return torch.matmul(a, b)


def _direct(attn: Attention, x: torch.Tensor, enc: torch.Tensor | None, mask, cfg: LMulConfig):
    """The spec written out for a (B, N, C) self/cross-attention without norms: projections,
    L-Matmul QKᵀ per head, exact scale and float32 softmax, L-Matmul PV, output projection."""
    b = x.shape[0]
    ctx = x if enc is None else enc
    q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
    h = attn.heads
    q, k, v = (t.view(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
    kw = cfg.matmul_kwargs()
    s = lmul_matmul(q, k.transpose(-1, -2).contiguous(), **kw).float() * attn.scale
    if mask is not None:
        s = s + mask[:, None].float()  # (B, 1, 1|N, S)
    p = torch.softmax(s, dim=-1).to(v.dtype)
    o = lmul_matmul(p, v, **kw).transpose(1, 2).reshape(b, -1, attn.inner_dim)
    return attn.to_out[1](attn.to_out[0](o))


@pytest.mark.parametrize("bits", [3, None])
def test_self_attention_equals_direct_reference(seeded, bits):
    cfg = LMulConfig(mantissa_bits=bits)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    attn.set_processor(LMulAttnProcessor(cfg))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert_bitwise_equal(attn(x), _direct(attn, x, None, None, cfg), "self-attention")


def test_cross_attention_with_mask_equals_direct_reference(seeded):
    cfg = LMulConfig(mantissa_bits=4)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).eval()
    attn.set_processor(LMulAttnProcessor(cfg))
    x, enc = torch.randn(2, 5, 16), torch.randn(2, 7, 12)
    mask = torch.zeros(2, 1, 7)
    mask[1, :, 4:] = -10000.0  # diffusers' additive bias for padded text tokens
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=enc, attention_mask=mask)
        assert_bitwise_equal(out, _direct(attn, x, enc, mask, cfg), "cross-attention")
        bool_mask = mask == 0  # a boolean mask (True = attend) gives the same result
        same = attn(x, encoder_hidden_states=enc, attention_mask=bool_mask)
    assert_close("bool vs additive mask", out, same, ratio=1e-6)


def _feature_map_attention() -> Attention:
    """A VAE/UNet mid-block style module: group norm, residual, output rescale, 4-D input."""
    return Attention(
        query_dim=8,
        heads=2,
        dim_head=4,
        norm_num_groups=2,
        residual_connection=True,
        rescale_output_factor=2.0,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    ).eval()


@pytest.mark.parametrize("kind", ["feature_map", "cross_masked", "qk_norm"])
def test_exact_products_equal_attn_processor_2_0(kind, monkeypatch, seeded):
    """Outside oracle: with exact products the processor is diffusers' AttnProcessor2_0."""
    kwargs: dict = {}
    if kind == "feature_map":
        attn, x = _feature_map_attention(), torch.randn(2, 8, 3, 3)
    elif kind == "cross_masked":
        attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).eval()
        x = torch.randn(2, 5, 16)
        mask = torch.zeros(2, 1, 7)
        mask[0, :, 5:] = -10000.0
        kwargs = {"encoder_hidden_states": torch.randn(2, 7, 12), "attention_mask": mask}
    else:
        attn = Attention(query_dim=16, heads=2, dim_head=8, qk_norm="layer_norm").eval()
        x = torch.randn(2, 5, 16)
    attn.set_processor(AttnProcessor2_0())
    with torch.no_grad():
        ref = attn(x, **kwargs)
        monkeypatch.setattr(modules_mod, "lmul_matmul", _exact_matmul)
        attn.set_processor(LMulAttnProcessor(LMulConfig()))
        out = attn(x, **kwargs)
    assert out.shape == ref.shape
    assert_close(f"{kind}: exact-product LMulAttnProcessor vs AttnProcessor2_0", ref, out)


def test_feature_map_gap_grows_as_bits_drop(seeded):
    attn, x = _feature_map_attention(), torch.randn(2, 8, 4, 4)
    gaps = {}
    with torch.no_grad():
        ref = attn(x)  # the default AttnProcessor2_0
        for bits in (None, 3):
            attn.set_processor(LMulAttnProcessor(LMulConfig(mantissa_bits=bits)))
            gaps[bits] = rms_error_ratio(ref, attn(x))
    assert 0 < gaps[None] < gaps[3] < 0.1, gaps


def test_apply_lmul_sets_processors_on_a_tiny_unet(seeded):
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()
    x, t, enc = torch.randn(1, 4, 8, 8), 3, torch.randn(1, 5, 12)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=enc).sample
        cfg = LMulConfig(mantissa_bits=None)
        # only the cross-attention modules (attn2): the self-attention keeps AttnProcessor2_0
        apply_lmul_(unet, cfg, filter_fn=lambda mod, fqn: fqn.endswith("attn2"))
        kinds = {name: type(p).__name__ for name, p in unet.attn_processors.items()}
        assert {n for n, k in kinds.items() if k == "LMulAttnProcessor"} == {
            n for n in kinds if ".attn2." in n
        }
        assert len(kinds) == 8 and set(kinds.values()) == {"LMulAttnProcessor", "AttnProcessor2_0"}
        out = unet(x, t, encoder_hidden_states=enc).sample
    assert 0 < rms_error_ratio(ref, out) < 0.05


def test_errors(monkeypatch):
    with pytest.raises(TypeError, match="LMulConfig"):
        LMulAttnProcessor({"mantissa_bits": 3})
    attn = Attention(query_dim=16, heads=2, dim_head=8, added_kv_proj_dim=6)
    attn.set_processor(LMulAttnProcessor())
    with pytest.raises(ValueError, match="added_kv_proj_dim"):
        attn(torch.randn(1, 3, 16), encoder_hidden_states=torch.randn(1, 2, 6))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"paperbricks-lmul\[diffusers\]"):
        LMulAttnProcessor()


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_processor_triton_matches_reference(dtype, seeded):
    attn = Attention(query_dim=128, cross_attention_dim=64, heads=4, dim_head=32)
    attn = attn.to("cuda", dtype).eval()
    x = torch.randn(2, 256, 128, device="cuda", dtype=dtype)
    enc = torch.randn(2, 77, 64, device="cuda", dtype=dtype)
    outs = {}
    with torch.no_grad():
        ref = attn(x, encoder_hidden_states=enc)
        for impl in ("triton", "reference"):
            attn.set_processor(LMulAttnProcessor(LMulConfig(mantissa_bits=4, impl=impl)))
            outs[impl] = attn(x, encoder_hidden_states=enc)
    assert_bitwise_equal(outs["triton"], outs["reference"], "processor triton vs reference")
    assert rms_error_ratio(ref.float(), outs["triton"].float()) < 0.2

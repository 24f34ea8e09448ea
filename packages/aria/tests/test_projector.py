"""AriaProjector against HF's: query count by patch count, padding, the per-head mask layout."""

from __future__ import annotations

import pytest
import torch
import transformers

from paperbricks.aria.models.configuration_aria import AriaConfig
from paperbricks.aria.models.modeling_aria import AriaProjector
from paperbricks.core_kernels.testing import assert_bitwise_equal, assert_close, requires_cuda

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    image_size=56,
    patch_size=14,
)
TEXT = dict(
    vocab_size=64,
    hidden_size=48,
    intermediate_size=16,
    num_hidden_layers=1,
    num_attention_heads=4,
    moe_num_experts=4,
    moe_topk=2,
)
TABLE = {4: 2, 16: 4}


def _randomise_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            is_norm = "norm" in name and name.endswith("weight")
            p.copy_(1.0 + noise if is_norm else noise)


def _pair(vision=VISION, text=TEXT, table=TABLE, std=0.3):
    hf_cfg = transformers.AriaConfig(
        vision_config={"model_type": "idefics3_vision", **vision},
        text_config=text,
        projector_patch_to_query_dict=table,
    )
    hf = transformers.models.aria.modeling_aria.AriaProjector(hf_cfg).eval()
    _randomise_(hf, std=std)
    ours = AriaProjector(
        AriaConfig(vision_config=vision, text_config=text, projector_patch_to_query_dict=table)
    ).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


def _mask(b: int, n: int, valid_counts: list[int]) -> torch.Tensor:
    m = torch.zeros(b, n, dtype=torch.bool)
    for i, c in enumerate(valid_counts):
        m[i, :c] = True
    return m


@pytest.mark.parametrize(("n_patches", "n_q"), [(4, 2), (16, 4)])
def test_matches_hf_and_picks_query_count(seeded, n_patches, n_q):
    hf, ours = _pair()
    x = torch.randn(3, n_patches, 32)
    with torch.no_grad():
        ref = hf(x)
        out = ours(x)
    assert out.shape == (3, n_q, 48)
    assert_close("projector", ref, out)


def test_padded_batch_matches_hf_per_head_mask_layout(seeded):
    # Two images with different padding: HF builds the (B·heads, n_q, N) boolean mask with
    # repeat_interleave (batch-major); a tiled mask would mix the images' masks up.
    hf, ours = _pair()
    x = torch.randn(2, 16, 32)
    patch_mask = _mask(2, 16, [16, 6])
    with torch.no_grad():
        ref = hf(x, attn_mask=~patch_mask)
        out = ours(x, patch_mask)
        tiled = ~patch_mask
        wrong = hf.cross_attn(
            x,
            hf.query[:4].unsqueeze(0).repeat(2, 1, 1),
            attn_mask=tiled.repeat(4, 1).unsqueeze(1).expand(-1, 4, -1),
        )
        wrong = hf.feed_forward(hf.layer_norm(wrong))
    assert_close("projector (padded)", ref, out)
    assert (wrong - ref).abs().max() > 1e-3  # the test would catch the tiling bug


def test_padded_patches_do_not_influence_outputs(seeded):
    _, ours = _pair()
    x = torch.randn(2, 16, 32)
    patch_mask = _mask(2, 16, [9, 13])
    x2 = x.clone()
    x2[~patch_mask] = torch.randn(int((~patch_mask).sum()), 32) * 100
    with torch.no_grad():
        a = ours(x, patch_mask)
        b = ours(x2, patch_mask)
        c = ours(x2)  # unmasked: the padded rows now matter
    assert_bitwise_equal(a, b, "projector output")
    assert not torch.allclose(a, c)


def test_unknown_patch_count_raises(seeded):
    _, ours = _pair()
    with pytest.raises(ValueError, match=r"9 patches.*\[4, 16\]"):
        ours(torch.randn(1, 9, 32))
    assert ours.num_queries(16) == 4


def test_input_errors(seeded):
    _, ours = _pair()
    with pytest.raises(ValueError, match="features"):
        ours(torch.randn(16, 32))
    with pytest.raises(ValueError, match="last dim"):
        ours(torch.randn(1, 16, 31))
    with pytest.raises(ValueError, match="patch_mask"):
        ours(torch.randn(2, 16, 32), torch.ones(2, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one valid patch"):
        ours(torch.randn(2, 16, 32), _mask(2, 16, [16, 0]))


def test_gradients_reach_queries_and_ignore_padding(seeded):
    _, ours = _pair()
    x = torch.randn(2, 16, 32, requires_grad=True)
    patch_mask = _mask(2, 16, [16, 5])
    ours(x, patch_mask).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert ours.query.grad[:4].abs().sum() > 0 and ours.query.grad[4:].abs().sum() == 0
    assert x.grad[1, 5:].abs().sum() == 0 and x.grad[1, :5].abs().sum() > 0


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_hf_at_aria_like_sizes(dtype):
    vision = dict(VISION, hidden_size=256, num_attention_heads=8, image_size=980)
    text = dict(TEXT, hidden_size=320)
    # std ~ 1/sqrt(d) keeps the attention logits O(1): with O(1)-scale weights at d=256 the
    # softmax is nearly one-hot and bf16 rounding flips its argmax between two equally good paths
    hf, ours = _pair(vision, text, table={1225: 128, 4900: 256}, std=0.06)
    hf, ours = hf.to("cuda", dtype), ours.to("cuda", dtype)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 1225, 256, device="cuda", generator=g).to(dtype)
    patch_mask = _mask(2, 1225, [1225, 700]).cuda()
    with torch.no_grad():
        ref = hf(x, attn_mask=~patch_mask)
        out = ours(x, patch_mask)
    assert out.shape == (2, 128, 320)
    ratio = None if dtype == torch.float32 else 3e-2
    assert_close("projector", ref.float(), out.float(), ratio=ratio)

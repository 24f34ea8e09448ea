"""Aria's ViT against HF's Idefics3 vision tower (the module HF Aria builds from vision_config)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from transformers.models.idefics3.modeling_idefics3 import (
    Idefics3VisionEmbeddings,
    Idefics3VisionTransformer,
)

from paperbricks.aria.models.configuration_aria import AriaVisionConfig
from paperbricks.aria.models.modeling_aria import (
    AriaVisionModel,
    patch_attention_mask,
    vision_position_ids,
)
from paperbricks.aria.processing import random_pixel_batch
from paperbricks.core_kernels.testing import assert_bitwise_equal, assert_close, requires_cuda

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=70,
    patch_size=14,
)


def _randomise_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """O(1) random weights (HF's 0.02-std init makes every image look alike)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            is_norm = "norm" in name and name.endswith("weight")
            p.copy_(1.0 + noise if is_norm else noise)


def _pair(dtype=torch.float32, device="cpu", std=0.2, **overrides):
    cfg = {**VISION, **overrides}
    hf_cfg = transformers.Idefics3VisionConfig(**cfg)
    hf_cfg._attn_implementation = "eager"
    hf = Idefics3VisionTransformer(hf_cfg).eval()
    _randomise_(hf, std=std)
    ours = AriaVisionModel(AriaVisionConfig(**cfg, attn_impl="reference")).eval()
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=True)
    assert not missing and not unexpected
    return hf.to(device, dtype), ours.to(device, dtype)


def _hf_patch_mask(pixel_mask, patch_size):
    fake = SimpleNamespace(
        vision_tower=SimpleNamespace(config=SimpleNamespace(patch_size=patch_size))
    )
    return transformers.AriaModel._create_patch_attention_mask(fake, pixel_mask)


SIZES = [(70, 70), (42, 70), (70, 15), (29, 43), (14, 14)]


def test_patch_mask_any_pixel_rule_matches_hf():
    _, mask = random_pixel_batch(SIZES, 70, seed=1)
    ours = patch_attention_mask(mask, 14)
    assert torch.equal(ours, _hf_patch_mask(mask, 14))
    # 29 rows -> 3 patch rows (rows 28..29 make the third patch valid), 43 cols -> 4
    assert ours[3].sum(0).max() == 3 and ours[3].sum(1).max() == 4
    assert ours[4].sum() == 1


@pytest.mark.parametrize("side", [4, 5, 7, 35])
def test_position_ids_match_hf_bucketisation(side):
    # every (rows, cols) of valid patches on a side x side canvas, against HF's embeddings
    emb = Idefics3VisionEmbeddings(
        transformers.Idefics3VisionConfig(hidden_size=4, image_size=14 * side, patch_size=14)
    )
    with torch.no_grad():
        emb.position_embedding.weight.copy_(
            torch.arange(side * side, dtype=torch.float32)[:, None].expand(-1, 4)
        )
        emb.patch_embedding.weight.zero_()
        emb.patch_embedding.bias.zero_()
    shapes = [(r, c) for r in range(1, side + 1) for c in range(1, side + 1)]
    if side == 35:
        shapes = [(35, 35), (24, 35), (35, 17), (1, 35), (33, 29)]
    masks = torch.zeros(len(shapes), side, side, dtype=torch.bool)
    for i, (r, c) in enumerate(shapes):
        masks[i, :r, :c] = True
    px = torch.zeros(len(shapes), 3, 14 * side, 14 * side)
    with torch.no_grad():
        hf_ids = emb(px, masks)[..., 0].round().long()  # (B, N): the looked-up row index
    ours = vision_position_ids(masks, side)
    assert torch.equal(ours, hf_ids)


def test_position_ids_known_values():
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    assert vision_position_ids(full, 4).tolist() == [[0, 2, 8, 10]]
    # non-square: 1 x 2 valid patches on a 2 x 2 grid are stretched over the row, not a sub-grid
    m = torch.tensor([[[True, True], [False, False]]])
    assert vision_position_ids(m, 4).tolist() == [[0, 2, 0, 0]]


def test_features_match_hf_last_hidden_state_without_post_layernorm():
    hf, ours = _pair()
    px, mask = random_pixel_batch(SIZES, 70, seed=2)
    pmask = patch_attention_mask(mask, 14)
    with torch.no_grad():
        ref = hf(px, patch_attention_mask=pmask, output_hidden_states=True)
        out = ours(px, pixel_mask=mask)
    valid = out.patch_mask  # (B, N)
    # valid patches match; padded rows differ by design (they attend among themselves)
    assert_close("features[valid]", ref.hidden_states[-1][valid], out.features[valid])
    assert_close("post-LN[valid]", ref.last_hidden_state[valid], out.last_hidden_state[valid])
    # the features are NOT post-layernormed (would be a silent bug): far apart
    gap = (ref.last_hidden_state[valid] - out.features[valid]).norm() / out.features.norm()
    assert gap > 0.1
    # a fully valid image matches in every row
    assert_close("features[0]", ref.hidden_states[-1][0], out.features[0])


def test_no_pixel_mask_means_all_valid():
    hf, ours = _pair()
    px, _ = random_pixel_batch([(70, 70), (70, 70)], 70, seed=3)
    with torch.no_grad():
        ref = hf(px, output_hidden_states=True).hidden_states[-1]
        out = ours(px).features
    assert_close("features", ref, out)


def test_padded_pixels_of_fully_padded_patches_change_nothing(nan_poison):
    _, ours = _pair()
    px, mask = random_pixel_batch([(42, 29), (70, 56)], 70, seed=4)
    pmask = patch_attention_mask(mask, 14)
    pad_pixels = ~pmask.repeat_interleave(14, 1).repeat_interleave(14, 2)  # (B, H, W)
    px2 = px.clone()
    px2[pad_pixels[:, None].expand_as(px)] = 123.0
    with torch.no_grad():
        a = ours(px, pixel_mask=mask)
        b = ours(px2, pixel_mask=mask)
    valid = a.patch_mask
    assert torch.isfinite(a.features).all()
    assert_bitwise_equal(a.features[valid], b.features[valid], "valid features")
    # ...but pixels inside a partially valid patch do reach the encoder
    px3 = px.clone()
    px3[0, :, 41, 28] = 5.0  # row 41 / col 28 are padding inside a valid patch
    with torch.no_grad():
        c = ours(px3, pixel_mask=mask)
    assert not torch.equal(a.features[0][valid[0]], c.features[0][valid[0]])


def test_batch_equals_images_alone():
    _, ours = _pair()
    px, mask = random_pixel_batch([(28, 56), (70, 70), (14, 70)], 70, seed=5)
    with torch.no_grad():
        batch = ours(px, pixel_mask=mask).features
        for i in range(3):
            alone = ours(px[i : i + 1], pixel_mask=mask[i : i + 1])
            v = alone.patch_mask[0]
            assert_close(f"image {i}", alone.features[0][v], batch[i][v])


def test_triton_interpreter_matches_reference():
    _, ours = _pair(num_hidden_layers=1, image_size=28)
    ours_t = AriaVisionModel(
        AriaVisionConfig(**{**VISION, "num_hidden_layers": 1, "image_size": 28}, attn_impl="triton")
    ).eval()
    ours_t.load_state_dict(ours.state_dict())
    px, mask = random_pixel_batch([(28, 14), (28, 28)], 28, seed=6)
    with torch.no_grad():
        ref = ours(px, pixel_mask=mask)
        out = ours_t(px, pixel_mask=mask)
    v = ref.patch_mask
    assert_close("features", ref.features[v], out.features[v])


def test_input_errors():
    _, ours = _pair(num_hidden_layers=1)
    with pytest.raises(ValueError, match="pixel_values"):
        ours(torch.zeros(1, 3, 70, 69))
    with pytest.raises(ValueError, match="pixel_values"):
        ours(torch.zeros(3, 70, 70))
    with pytest.raises(ValueError, match="pixel_mask"):
        ours(torch.zeros(1, 3, 70, 70), pixel_mask=torch.ones(1, 70, 56, dtype=torch.bool))
    with pytest.raises(ValueError, match="no valid patch"):
        ours(torch.zeros(1, 3, 70, 70), pixel_mask=torch.zeros(1, 70, 70, dtype=torch.bool))
    with pytest.raises(ValueError, match="patch_size"):
        patch_attention_mask(torch.ones(1, 70, 70, dtype=torch.bool), 0)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_hf(dtype):
    # Aria's real canvas geometry (490 px, patch 14, 35 x 35 table), triton attention (auto)
    cfg = dict(
        VISION, hidden_size=128, intermediate_size=256, num_attention_heads=2, image_size=490
    )
    hf, ours = _pair(dtype=dtype, device="cuda", std=0.1, **cfg)  # ~1/sqrt(d): O(1) logits
    ours.config.attn_impl = "auto"
    for layer in ours.encoder.layers:
        layer.self_attn.attn_impl = "auto"
    px, mask = random_pixel_batch([(490, 490), (336, 490), (490, 350)], 490, seed=7)
    px, mask = px.to("cuda", dtype), mask.cuda()
    with torch.no_grad():
        ref = hf(px, patch_attention_mask=patch_attention_mask(mask, 14), output_hidden_states=True)
        out = ours(px, pixel_mask=mask)
    v = out.patch_mask
    ratio = None if dtype == torch.float32 else 3e-2
    assert_close("features", ref.hidden_states[-1][v].float(), out.features[v].float(), ratio=ratio)

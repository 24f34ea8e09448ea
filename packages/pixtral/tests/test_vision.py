"""Pixtral-ViT: HF parity, packing isolation, RoPE-2D invariance, parameter count, input errors."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModel

from paperbricks.core_kernels.rope import apply_rope, rope_2d_angles
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    requires_cuda,
)
from paperbricks.pixtral.models import (
    PixtralVisionConfig,
    PixtralVisionModel,
    count_parameters,
)

TINY = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=64,
    patch_size=4,
)


def _hf_model(act: str, seed: int = 0) -> transformers.PixtralVisionModel:
    torch.manual_seed(seed)
    cfg = transformers.PixtralVisionConfig(hidden_act=act, **TINY)
    cfg._attn_implementation = "eager"
    model = transformers.PixtralVisionModel(cfg).eval()
    with torch.no_grad():  # make the norm gains non-trivial so a dropped gain is caught
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name == "ln_pre.weight":
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module", params=["silu", "gelu"])
def hf_pair(request, tmp_path_factory):
    """(HF model, ours loaded from HF's save_pretrained directory)."""
    hf = _hf_model(request.param)
    path = tmp_path_factory.mktemp(f"hf_{request.param}")
    hf.save_pretrained(path)
    ours, info = PixtralVisionModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return hf, ours.eval()


def _images(sizes, seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, h, w, generator=g) for h, w in sizes]


def _pad(images):
    h = max(i.shape[1] for i in images)
    w = max(i.shape[2] for i in images)
    out = torch.zeros(len(images), images[0].shape[0], h, w)
    for n, img in enumerate(images):
        out[n, :, : img.shape[1], : img.shape[2]] = img
    return out, torch.tensor([list(i.shape[1:]) for i in images])


@pytest.mark.parametrize("sizes", [[(8, 12)], [(8, 12), (4, 4), (16, 8)]])
def test_hf_parity(hf_pair, sizes):
    hf, ours = hf_pair
    assert ours.config.hidden_act == hf.config.hidden_act  # a loaded value is honoured
    imgs = _images(sizes)
    pad, image_sizes = _pad(imgs)
    with torch.no_grad():
        ref = hf(pad, image_sizes=image_sizes).last_hidden_state  # (1, N, d)
        out = ours(imgs)
        out_pad = ours(pad, image_sizes=image_sizes)
    assert out.last_hidden_state.shape == ref.shape
    torch.testing.assert_close(out.last_hidden_state, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_pad.last_hidden_state, ref, atol=1e-5, rtol=0)
    assert [f.shape[0] for f in out.image_features] == [h * w // 16 for h, w in sizes]
    assert out.grid_sizes.tolist() == [[h // 4, w // 4] for h, w in sizes]


def test_hf_parity_image_sizes_not_multiple_of_patch(hf_pair):
    """A padded batch whose image_sizes are not patch multiples is floored to whole patches."""
    hf, ours = hf_pair
    pad = _images([(16, 16), (16, 16)], seed=3)
    pad = torch.stack(pad)
    image_sizes = torch.tensor([[11, 14], [16, 7]])
    with torch.no_grad():
        ref = hf(pad, image_sizes=image_sizes).last_hidden_state
        out = ours(pad, image_sizes=image_sizes)
    assert out.grid_sizes.tolist() == [[2, 3], [4, 1]]
    torch.testing.assert_close(out.last_hidden_state, ref, atol=1e-5, rtol=0)


def test_packing_isolation(hf_pair):
    _, ours = hf_pair
    a, b = _images([(8, 12), (12, 8)], seed=1)
    b2 = _images([(12, 8)], seed=2)[0]
    with torch.no_grad():
        alone = ours([a]).image_features[0]
        packed = ours([a, b]).image_features[0]
        packed2 = ours([a, b2]).image_features[0]
        second = ours([b, a]).image_features[1]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, alone, atol=1e-5, rtol=0)
    assert_bitwise_equal(packed, packed2, "A's features when B changes")


def test_rope_2d_relative_invariance(hf_pair):
    """q·k after RoPE-2D with the model's head_dim depends only on (Δi, Δj)."""
    _, ours = hf_pair
    d = ours.config.head_dim
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 10, d, generator=g, dtype=torch.float64)
    i = torch.randint(0, 16, (10,), generator=g)
    j = torch.randint(0, 16, (10,), generator=g)

    def scores(di, dj):
        cos, sin = rope_2d_angles(i + di, j + dj, d, dtype=torch.float64)
        return apply_rope(q, cos, sin, layout="half") @ apply_rope(k, cos, sin, layout="half").T

    base = scores(0, 0)
    for di, dj in [(3, 0), (0, 5), (7, 2)]:
        torch.testing.assert_close(scores(di, dj), base, atol=1e-5, rtol=0)
    assert (scores(0, 0) - scores(0, 0)).abs().max() == 0


def test_parameter_count_published_config_on_meta():
    cfg = PixtralVisionConfig()
    with torch.device("meta"):
        model = PixtralVisionModel(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == count_parameters(cfg) == 403_489_792
    hf_cfg = transformers.PixtralVisionConfig(hidden_act="silu")
    with torch.device("meta"):
        hf = transformers.PixtralVisionModel(hf_cfg)
    assert sum(p.numel() for p in hf.parameters()) == n


def test_auto_classes_and_own_roundtrip(tmp_path):
    cfg = AutoConfig.for_model("paperbricks_pixtral_vision", **TINY)
    assert isinstance(cfg, PixtralVisionConfig) and cfg.hidden_act == "silu"
    torch.manual_seed(0)
    model = AutoModel.from_config(cfg).eval()
    assert isinstance(model, PixtralVisionModel)
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()
    img = _images([(8, 8)])
    with torch.no_grad():
        assert_bitwise_equal(model(img).last_hidden_state, again(img).last_hidden_state, "reload")


def test_triton_impl_matches_reference_in_interpreter():
    torch.manual_seed(0)
    cfg = PixtralVisionConfig(**{**TINY, "num_hidden_layers": 1})
    ref = PixtralVisionModel(cfg).eval()
    tri = PixtralVisionModel(
        PixtralVisionConfig(**{**TINY, "num_hidden_layers": 1}, attn_impl="triton")
    )
    tri.load_state_dict(ref.state_dict())
    imgs = _images([(8, 4), (4, 4)])
    with torch.no_grad():
        assert_close(
            "triton vs reference", ref(imgs).last_hidden_state, tri(imgs).last_hidden_state
        )


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ([torch.randn(4, 8, 8)], "3 channels"),
        ([torch.randn(3, 0, 8)], "patch_size"),
        ([torch.randn(3, 8, 2)], "patch_size"),
        ([torch.randn(3, 8, 10)], "multiples of patch_size"),
        ([torch.randn(8, 8)], r"\(C, H, W\)"),
        ([torch.zeros(3, 8, 8, dtype=torch.int64)], "floating-point"),
        ([], "non-empty"),
        (torch.randn(0, 3, 8, 8), "batch size 0"),
    ],
)
def test_bad_images_raise(images, match):
    model = PixtralVisionModel(PixtralVisionConfig(**TINY))
    with pytest.raises((ValueError, TypeError), match=match):
        model(images)


def test_bad_image_sizes_raise():
    model = PixtralVisionModel(PixtralVisionConfig(**TINY))
    pad = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="image_sizes"):
        model(pad, image_sizes=[[8, 8]])
    with pytest.raises(ValueError, match=r"image_sizes\[1\]"):
        model(pad, image_sizes=[[8, 8], [12, 8]])
    with pytest.raises(ValueError, match="patch_size"):
        model(pad, image_sizes=[[8, 8], [3, 8]])  # floors to zero patch rows
    with pytest.raises(ValueError, match="image_sizes"):
        model([pad[0]], image_sizes=[[8, 8]])
    with pytest.raises(TypeError, match="output_hidden_states"):
        model([pad[0]], output_hidden_states=True)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="head_dim"):
        PixtralVisionConfig(hidden_size=36, num_attention_heads=6)
    with pytest.raises(ValueError, match="attn_impl"):
        PixtralVisionConfig(attn_impl="dense")
    with pytest.raises(ValueError, match="rope_type"):
        PixtralVisionConfig(rope_parameters={"rope_type": "default"})


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_hf_eager(dtype, tmp_path):
    hf = _hf_model("silu")
    hf.save_pretrained(tmp_path)
    hf = hf.cuda()
    ours = PixtralVisionModel.from_pretrained(tmp_path, dtype=dtype).cuda().eval()
    sizes = [(64, 48), (16, 16), (32, 64), (8, 4)]
    imgs = _images(sizes)
    pad, image_sizes = _pad(imgs)
    with torch.no_grad():
        ref = hf(pad.cuda(), image_sizes=image_sizes).last_hidden_state
        out = ours([i.cuda() for i in imgs]).last_hidden_state  # Triton RoPE/attention/norm
    assert out.dtype == dtype
    ratio = 1e-4 if dtype == torch.float32 else 3e-2
    assert_close(f"cuda {dtype}", ref, out.float(), ratio=ratio)

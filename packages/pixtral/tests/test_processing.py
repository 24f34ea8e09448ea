"""Tests for paperbricks.pixtral.processing: token counts, rounding modes, HF parity, normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from paperbricks.pixtral.processing import (
    IMAGE_MEAN,
    IMAGE_STD,
    PixtralImageProcessor,
    expand_prompt,
    image_grid,
    image_token_layout,
    num_image_tokens,
    resized_size,
)

sizes = st.integers(min_value=1, max_value=5000)


def _hf_processor():
    pytest.importorskip("transformers")
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    return PixtralImageProcessorPil()


def test_1024_square_gives_4160_tokens():
    assert num_image_tokens(1024, 1024) == 4160
    assert num_image_tokens(1024, 1024, rounding="hf") == 4160
    layout = image_token_layout(1024, 1024)
    assert len(layout) == 4160
    assert layout.count("[IMG]") == 4096
    assert layout.count("[IMG_BREAK]") == 63 and layout.count("[IMG_END]") == 1


@settings(max_examples=200, deadline=None)
@given(w=sizes, h=sizes, rounding=st.sampled_from(["mistral", "hf"]))
def test_token_count_is_rows_times_cols_plus_one(w, h, rounding):
    lo, hi = min(w, h), max(w, h)
    # the short side becomes lo * 1024 / hi: floor gives 0 below 1, round-half-even at or below 0.5
    zero = hi > 1024 and (lo * 1024 < hi if rounding == "hf" else 2 * lo * 1024 <= hi)
    if zero:
        with pytest.raises(ValueError, match="scales to"):
            num_image_tokens(w, h, rounding=rounding)
        return
    n_h, n_w = image_grid(w, h, rounding=rounding)
    assert 1 <= n_h <= 64 and 1 <= n_w <= 64
    assert num_image_tokens(w, h, rounding=rounding) == n_h * (n_w + 1)
    layout = image_token_layout(
        w, h, image_token=0, image_break_token=1, image_end_token=2, rounding=rounding
    )
    rows = np.asarray(layout).reshape(n_h, n_w + 1)
    assert (rows[:, :n_w] == 0).all()
    assert (rows[:-1, n_w] == 1).all() and rows[-1, n_w] == 2
    if max(w, h) <= 1024:  # no downscale: both modes agree and the grid is ceil(side / 16)
        assert (n_h, n_w) == (math.ceil(h / 16), math.ceil(w / 16))
        assert image_grid(w, h, rounding="mistral") == image_grid(w, h, rounding="hf")


@pytest.mark.parametrize(
    ("w", "h", "grid"),
    [
        (1, 1, (1, 1)),
        (16, 16, (1, 1)),
        (17, 16, (1, 2)),
        (4096, 64, (1, 64)),  # very wide: 1024 x 16
        (64, 4096, (64, 1)),  # very tall
        (1024, 1, (1, 64)),
        (2048, 2, (1, 64)),
    ],
)
def test_edge_sizes(w, h, grid):
    for rounding in ("mistral", "hf"):
        assert image_grid(w, h, rounding=rounding) == grid
        assert num_image_tokens(w, h, rounding=rounding) == grid[0] * (grid[1] + 1)


def test_extreme_aspect_raises_instead_of_clamping():
    with pytest.raises(ValueError, match="scales to"):
        num_image_tokens(5000, 1)
    with pytest.raises(ValueError, match="scales to"):
        num_image_tokens(1, 5000, rounding="hf")
    # 3000 x 2: round(0.683) = 1 keeps a row in mistral mode, floor gives 0 in HF mode
    assert image_grid(3000, 2, rounding="mistral") == (1, 64)
    with pytest.raises(ValueError, match="scales to"):
        image_grid(3000, 2, rounding="hf")


def test_documented_divergence_3072x2306():
    assert resized_size(3072, 2306, rounding="mistral") == (1024, 769)
    assert resized_size(3072, 2306, rounding="hf") == (1024, 768)
    assert image_grid(3072, 2306, rounding="mistral") == (49, 64)
    assert image_grid(3072, 2306, rounding="hf") == (48, 64)
    assert num_image_tokens(3072, 2306) == 3185
    assert num_image_tokens(3072, 2306, rounding="hf") == 3120


def test_divergence_half_to_even_and_column_case():
    # 2048 x 1041: h / 2 = 520.5 -> round-half-to-even 520, floor 520 -> same grid (33 rows)
    assert resized_size(2048, 1041, rounding="mistral") == resized_size(2048, 1041, rounding="hf")
    # 2306 x 3072 (tall): the divergence moves to the columns
    assert image_grid(2306, 3072, rounding="mistral") == (64, 49)
    assert image_grid(2306, 3072, rounding="hf") == (64, 48)
    # divergences only happen when downscaling and only by one row/column
    rng = np.random.default_rng(0)
    n_diff = 0
    for w, h in rng.integers(1025, 5000, size=(300, 2)):
        gm, gh = image_grid(int(w), int(h)), image_grid(int(w), int(h), rounding="hf")
        assert 0 <= gm[0] - gh[0] <= 1 and 0 <= gm[1] - gh[1] <= 1
        n_diff += gm != gh
    assert n_diff > 0


def test_hf_rounding_matches_transformers_processor_sizes():
    hf = _hf_processor()
    ours = PixtralImageProcessor(rounding="hf")
    mistral = PixtralImageProcessor(rounding="mistral")
    for w, h in [(3072, 2306), (1500, 700), (33, 47), (1025, 1025), (2000, 17), (640, 480)]:
        img = np.zeros((h, w, 3), dtype=np.uint8)
        expected = tuple(int(x) for x in hf(img, return_tensors="np")["image_sizes"][0])
        n_h, n_w = ours.grid(w, h)
        assert (16 * n_h, 16 * n_w) == expected, (w, h)
        if (w, h) == (3072, 2306):
            assert mistral.grid(w, h) != ours.grid(w, h)


def test_hf_grid_matches_transformers_function_on_random_sizes():
    pytest.importorskip("transformers")
    from transformers.image_utils import ChannelDimension
    from transformers.models.pixtral.image_processing_pil_pixtral import (
        get_resize_output_image_size,
    )

    rng = np.random.default_rng(1)
    for w, h in np.concatenate([rng.integers(1, 4000, size=(300, 2)), [[4000, 2], [3, 3500]]]):
        w, h = int(w), int(h)
        dummy = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (h, w, 3), (0, 0, 0))
        out = get_resize_output_image_size(dummy, 1024, 16, ChannelDimension.LAST)
        try:
            n_h, n_w = image_grid(w, h, rounding="hf")
        except ValueError:
            assert 0 in out, (w, h, out)  # HF would produce an empty grid; we raise instead
            continue
        assert out == (16 * n_h, 16 * n_w), (w, h)


def test_pixel_values_match_transformers_without_resize():
    hf = _hf_processor()
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(48, 80, 3), dtype=np.uint8)
    ref = hf(img, return_tensors="np")["pixel_values"][0]  # (3, 48, 80)
    out = PixtralImageProcessor(rounding="hf")(img)["pixel_values"][0]
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)
    # the same image through PIL and torch (C, H, W) inputs
    out_pil = PixtralImageProcessor()(Image.fromarray(img))["pixel_values"][0]
    out_t = PixtralImageProcessor()(torch.from_numpy(img).permute(2, 0, 1))["pixel_values"][0]
    torch.testing.assert_close(out_pil, out)
    torch.testing.assert_close(out_t, out)


def test_resized_pixels_close_to_transformers():
    hf = _hf_processor()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(1100, 1300, 3), dtype=np.uint8)
    ref = hf(img, return_tensors="np")["pixel_values"][0]
    out = PixtralImageProcessor(rounding="hf")(img)["pixel_values"][0].numpy()
    assert out.shape == ref.shape == (3, 880, 1024)
    # same PIL bicubic on the uint8 RGB image, then the same rescale/normalise
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_normalisation_values():
    proc = PixtralImageProcessor()
    colour = np.array([255, 128, 0], dtype=np.uint8)
    img = np.broadcast_to(colour, (20, 30, 3)).copy()
    pv = proc(img)["pixel_values"][0]
    assert pv.shape == (3, 32, 32)
    expected = (colour / 255.0 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    np.testing.assert_allclose(pv.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(pv.std(dim=(1, 2)).numpy(), 0.0, atol=1e-5)
    # float input in [0, 1] gives the same values
    pv_f = proc(img.astype(np.float32) / 255.0)["pixel_values"][0]
    torch.testing.assert_close(pv_f, pv, atol=1e-5, rtol=0)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)  # fully transparent black
    pv = PixtralImageProcessor()(Image.fromarray(rgba, mode="RGBA"))["pixel_values"][0]
    white = (1.0 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    np.testing.assert_allclose(pv.mean(dim=(1, 2)).numpy(), white, atol=1e-5)
    pv_np = PixtralImageProcessor()(rgba)["pixel_values"][0]
    torch.testing.assert_close(pv_np, pv)


def test_list_of_images_unpadded_with_sizes():
    proc = PixtralImageProcessor()
    out = proc([np.zeros((10, 40, 3), np.uint8), Image.new("L", (17, 33))])
    assert out["image_sizes"] == [(16, 48), (48, 32)]
    assert [tuple(p.shape) for p in out["pixel_values"]] == [(3, 16, 48), (3, 48, 32)]


@pytest.mark.parametrize(
    ("image", "exc", "match"),
    [
        (np.zeros((8, 8, 2), np.uint8), ValueError, "channels"),
        (np.zeros((8, 8, 1), np.uint8), ValueError, "channels"),
        (np.zeros((8, 8), np.uint8), ValueError, "H, W, C"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "non-empty"),
        (np.zeros((8, 0, 3), np.uint8), ValueError, "non-empty"),
        (torch.zeros(5, 8, 8), ValueError, "channels"),
        (np.full((8, 8, 3), 2.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.int32), TypeError, "dtype"),
        ("not an image", TypeError, "PIL.Image"),
    ],
)
def test_bad_images_raise(image, exc, match):
    with pytest.raises(exc, match=match):
        PixtralImageProcessor()(image)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="rounding"):
        num_image_tokens(10, 10, rounding="ceil")
    with pytest.raises(ValueError, match="width"):
        num_image_tokens(0, 10)
    with pytest.raises(TypeError, match="height"):
        num_image_tokens(10, 1.5)
    with pytest.raises(ValueError, match="images"):
        PixtralImageProcessor()([])


def test_expand_prompt_text_and_ids():
    text = expand_prompt("a [IMG] b [IMG]", [(32, 16), (16, 32)])
    assert text == "a [IMG][IMG][IMG_END] b [IMG][IMG_BREAK][IMG][IMG_END]"
    ids = expand_prompt(
        [5, 10, 6, 10],
        [(32, 16), (3072, 2306)],
        image_token=10,
        image_break_token=12,
        image_end_token=13,
        rounding="hf",
    )
    assert ids[:5] == [5, 10, 10, 13, 6]
    assert len(ids) == 2 + 3 + 3120
    ids_m = expand_prompt(
        torch.tensor([10]), [(3072, 2306)], image_token=10, image_break_token=12, image_end_token=13
    )
    assert len(ids_m) == 3185 and ids_m[-1] == 13
    # a separate placeholder token
    assert expand_prompt("<image>", [(16, 16)], placeholder="<image>") == "[IMG][IMG_END]"


def test_expand_prompt_errors():
    with pytest.raises(ValueError, match="placeholder"):
        expand_prompt("no image", [(16, 16)])
    with pytest.raises(ValueError, match="placeholder"):
        expand_prompt(
            [10, 10], [(16, 16)], image_token=10, image_break_token=12, image_end_token=13
        )
    with pytest.raises(TypeError, match="expected an int id"):
        expand_prompt([10], [(16, 16)])


def test_lean_import():
    from paperbricks.core_kernels.testing import assert_lean_import

    assert_lean_import("paperbricks.pixtral.processing")

"""rope: HF Llama / Pixtral parity, layout permutation, relative-position property, GQA helpers."""

import math

import pytest
import torch

from paperbricks.core_kernels.rope import (
    apply_rope,
    kv_head_index,
    permute_rope_rows,
    repeat_kv,
    rope_2d_angles,
    rope_angles,
    rope_inv_freq,
)
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    gradcheck_f64,
    requires_cuda,
)

LAYOUTS = ("interleaved", "half")


def test_lean_import():
    assert_lean_import("paperbricks.core_kernels.rope")


# --- angles: known values ---------------------------------------------------------------------


def test_inv_freq_and_angles_known_values():
    inv = rope_inv_freq(8, base=10000.0)
    assert torch.allclose(inv, torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64))
    cos, sin = rope_angles(torch.tensor([0, 3]), dim=8, dtype=torch.float64)
    assert cos.shape == (2, 4)
    assert torch.equal(cos[0], torch.ones(4, dtype=torch.float64))
    assert torch.allclose(sin[1], torch.sin(3 * inv))
    # fractional positions are allowed
    c, _ = rope_angles(torch.tensor([0.5]), dim=2, base=10.0, dtype=torch.float64)
    assert c.item() == pytest.approx(math.cos(0.5))


def test_2d_angles_follow_the_spec_formula():
    dim, base = 16, 100.0
    theta = [base ** (-2 * m / dim) for m in range(dim // 2)]
    i, j = torch.tensor([2, 0, 5]), torch.tensor([3, 7, 1])
    cos, sin = rope_2d_angles(i, j, dim, base, dtype=torch.float64)
    q = dim // 4
    for n in range(3):
        for b in range(dim // 2):
            ang = int(i[n]) * theta[2 * b] if b < q else int(j[n]) * theta[2 * (b - q) + 1]
            assert sin[n, b].item() == pytest.approx(math.sin(ang), abs=1e-12)
            assert cos[n, b].item() == pytest.approx(math.cos(ang), abs=1e-12)


def test_2d_angles_int_grid_is_row_major():
    cos, sin = rope_2d_angles(3, 4, 8)
    i, j = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    c2, s2 = rope_2d_angles(i.flatten(), j.flatten(), 8)
    assert cos.shape == (12, 4)
    assert_bitwise_equal(cos, c2, "cos")
    assert_bitwise_equal(sin, s2, "sin")


# --- parity with HF transformers ---------------------------------------------------------------


def test_half_layout_matches_hf_llama_apply_rotary_pos_emb(seeded):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    rot = LlamaRotaryEmbedding(cfg)
    b, t, d = 2, 11, cfg.head_dim
    q = torch.randn(b, 4, t, d)
    k = torch.randn(b, 2, t, d)
    pos = torch.stack([torch.arange(t), torch.arange(t) + 37])  # (B, T), second sequence offset
    hf_cos, hf_sin = rot(q, pos)  # (B, T, D), duplicated halves
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    cos, sin = rope_angles(pos, d, base=500.0)  # (B, T, D/2)
    assert_close("cos", hf_cos, torch.cat([cos, cos], -1))
    assert_close("sin", hf_sin, torch.cat([sin, sin], -1))
    assert_close("q", hf_q, apply_rope(q, cos[:, None], sin[:, None], layout="half"))
    assert_close("k", hf_k, apply_rope(k, cos[:, None], sin[:, None], layout="half"))


def test_2d_matches_hf_pixtral_rotary_embedding(seeded):
    from transformers import PixtralVisionConfig
    from transformers.models.pixtral import modeling_pixtral as mp

    cfg = PixtralVisionConfig(
        hidden_size=64,
        num_attention_heads=2,
        rope_parameters={"rope_type": "axial", "rope_theta": 100.0},
    )
    rot_cls = getattr(mp, "PixtralRotaryEmbedding", None) or mp.PixtralVisionRotaryEmbedding
    rot = rot_cls(cfg)
    d = cfg.head_dim
    # two packed images of 3x5 and 4x2 patches, positions built as PixtralVisionModel.forward does
    pos = []
    for h, w in ((3, 5), (4, 2)):
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pos.append(torch.stack([hh.flatten(), ww.flatten()], dim=-1))
    pos = torch.cat(pos)  # (N, 2)
    n = pos.shape[0]
    q = torch.randn(1, 2, n, d)
    k = torch.randn(1, 2, n, d)
    hf_cos, hf_sin = rot(q, pos)  # (N, D)
    hf_q, hf_k = mp.apply_rotary_pos_emb(q, k, hf_cos, hf_sin, unsqueeze_dim=0)
    cos, sin = rope_2d_angles(pos[:, 0], pos[:, 1], d, base=100.0)  # (N, D/2)
    assert_close("cos", hf_cos, torch.cat([cos, cos], -1))
    assert_close("sin", hf_sin, torch.cat([sin, sin], -1))
    assert_close("q", hf_q, apply_rope(q, cos, sin, layout="half"))
    assert_close("k", hf_k, apply_rope(k, cos, sin, layout="half"))
    # the first image alone through the int-grid form
    c3, s3 = rope_2d_angles(3, 5, d, base=100.0)
    assert_bitwise_equal(c3, cos[:15], "grid form cos")
    assert_bitwise_equal(s3, sin[:15], "grid form sin")


def test_repeat_kv_matches_hf(seeded):
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    x = torch.randn(2, 3, 5, 4)
    for n_rep in (1, 4):
        assert_bitwise_equal(repeat_kv(x, n_rep), hf_repeat_kv(x, n_rep), f"n_rep={n_rep}")
    rep = repeat_kv(x, 4)
    heads = torch.arange(12)
    assert_bitwise_equal(rep, x[:, kv_head_index(heads, 4)], "kv_head_index")
    assert [kv_head_index(h, 4) for h in range(12)] == [h // 4 for h in range(12)]


# --- layouts and weight permutation -------------------------------------------------------------


def test_permute_rope_rows_known_order_and_roundtrip(seeded):
    assert permute_rope_rows(torch.arange(8), 2, 4, to="half").tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert permute_rope_rows(torch.arange(8), 2, 4, to="interleaved").tolist() == [
        0, 2, 1, 3, 4, 6, 5, 7,
    ]  # fmt: skip
    assert permute_rope_rows(torch.arange(6), 1, 6, to="interleaved").tolist() == [0, 3, 1, 4, 2, 5]
    w = torch.randn(3 * 8, 5)
    back = permute_rope_rows(permute_rope_rows(w, 3, 8, to="interleaved"), 3, 8, to="half")
    assert_bitwise_equal(back, w, "round trip")


def test_layouts_agree_on_activations_bitwise(seeded):
    h, d, t = 3, 8, 6
    q_half = torch.randn(t, h * d)  # rows = tokens, columns = heads·D in the half layout
    q_int = permute_rope_rows(q_half.T, h, d, to="interleaved").T
    cos, sin = rope_angles(t, d)  # (T, D/2)
    rot_half = apply_rope(q_half.view(t, h, d), cos[:, None], sin[:, None], layout="half")
    rot_int = apply_rope(q_int.view(t, h, d), cos[:, None], sin[:, None], layout="interleaved")
    back = permute_rope_rows(rot_int.reshape(t, h * d).T, h, d, to="half").T
    assert_bitwise_equal(back.contiguous(), rot_half.reshape(t, h * d), "rotated")


@pytest.mark.parametrize("direction", ["to_interleaved", "to_half"])
def test_permuted_weights_give_the_same_attention_scores(seeded, direction):
    # A model with Wq/Wk in layout A and RoPE in layout A equals permuted weights with RoPE in B.
    e, h, hkv, d, t = 32, 4, 2, 8, 7
    x = torch.randn(t, e)
    wq, wk = torch.randn(h * d, e) / e**0.5, torch.randn(hkv * d, e) / e**0.5
    src, dst = ("half", "interleaved") if direction == "to_interleaved" else ("interleaved", "half")
    wq2, wk2 = permute_rope_rows(wq, h, d, to=dst), permute_rope_rows(wk, hkv, d, to=dst)
    cos, sin = rope_angles(torch.arange(t) * 3, d)

    def scores(wq_, wk_, layout):
        q = (x @ wq_.T).view(t, h, d).transpose(0, 1)  # (H, T, D)
        k = (x @ wk_.T).view(t, hkv, d).transpose(0, 1)  # (Hkv, T, D)
        q = apply_rope(q, cos, sin, layout=layout)
        k = repeat_kv(apply_rope(k, cos, sin, layout=layout)[None], h // hkv)[0]
        return q @ k.transpose(-1, -2)  # (H, T, T)

    ref = scores(wq, wk, src)
    assert_close("scores", ref, scores(wq2, wk2, dst))
    # and the wrong pairing (permuted weights, same layout) really differs
    assert not torch.allclose(ref, scores(wq2, wk2, src), atol=1e-3)


# --- rotation invariants ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relative_position_1d(seeded, layout):
    d = 16
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)

    def score(m, n):
        cm, sm = rope_angles(torch.tensor(m), d, base=100.0, dtype=torch.float64)
        cn, sn = rope_angles(torch.tensor(n), d, base=100.0, dtype=torch.float64)
        return (apply_rope(q, cm, sm, layout) @ apply_rope(k, cn, sn, layout)).item()

    for delta in (0, 3, -5):
        base_score = score(10 + delta, 10)
        for n in (0, 7, 41):
            assert score(n + delta, n) == pytest.approx(base_score, rel=1e-10, abs=1e-10)
    assert score(3, 0) != pytest.approx(score(4, 0), rel=1e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relative_position_2d(seeded, layout):
    d = 16
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)

    def score(p, r):
        cp, sp = rope_2d_angles(torch.tensor(p[0]), torch.tensor(p[1]), d, 100.0, torch.float64)
        cr, sr = rope_2d_angles(torch.tensor(r[0]), torch.tensor(r[1]), d, 100.0, torch.float64)
        return (apply_rope(q, cp, sp, layout) @ apply_rope(k, cr, sr, layout)).item()

    for di, dj in ((0, 0), (2, -1), (-3, 4)):
        ref = score((5 + di, 6 + dj), (5, 6))
        for i, j in ((0, 0), (9, 2), (4, 13)):
            assert score((i + di, j + dj), (i, j)) == pytest.approx(ref, rel=1e-10, abs=1e-10)
    # both offsets matter: rows and columns rotate different pairs
    assert score((1, 0), (0, 0)) != pytest.approx(score((0, 1), (0, 0)), rel=1e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rotation_preserves_norm_and_position_zero_is_identity(seeded, layout):
    x = torch.randn(2, 3, 9, 12)
    cos, sin = rope_angles(9, 12)
    out = apply_rope(x, cos, sin, layout)
    assert_close("norms", x.norm(dim=-1), out.norm(dim=-1))
    assert_bitwise_equal(out[:, :, 0], x[:, :, 0], "position 0")


def test_low_precision_input_keeps_dtype(seeded):
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    cos, sin = rope_angles(5, 8)
    out = apply_rope(x, cos, sin, "interleaved")
    assert out.dtype == torch.bfloat16
    assert_close("bf16", apply_rope(x.float(), cos, sin, "interleaved"), out)


def test_apply_rope_gradcheck(seeded):
    cos, sin = rope_angles(4, 6, dtype=torch.float64)
    for layout in LAYOUTS:
        assert gradcheck_f64(
            lambda a, c=cos, s=sin, lay=layout: apply_rope(a, c, s, lay), torch.randn(2, 4, 6)
        )


# --- validation ---------------------------------------------------------------------------------


def test_validation_errors():
    cos, sin = rope_angles(4, 8)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="dim: expected a positive int divisible by 2"):
        rope_angles(4, 7)
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_2d_angles(2, 2, 6)
    with pytest.raises(TypeError, match="rows, cols"):
        rope_2d_angles(2, torch.arange(2), 8)
    with pytest.raises(ValueError, match="base"):
        rope_angles(4, 8, base=0.0)
    with pytest.raises(ValueError, match="layout"):
        apply_rope(x, cos, sin, layout="neox")
    with pytest.raises(ValueError, match="D even"):
        apply_rope(torch.randn(4, 7), cos, sin)
    with pytest.raises(ValueError, match="broadcastable"):
        apply_rope(x, cos[:3], sin[:3])
    with pytest.raises(ValueError, match="broadcastable"):
        apply_rope(x, cos[None, None], sin[None, None])  # would grow x's shape
    with pytest.raises(ValueError, match=r"impl='triton'.*float64"):
        apply_rope(x.double(), cos, sin, impl="triton")
    with pytest.raises(ValueError, match=r"impl='triton'.*cos/sin"):
        apply_rope(x, cos.requires_grad_(True), sin, impl="triton")
    with pytest.raises(ValueError, match="W: expected n_heads"):
        permute_rope_rows(torch.randn(10, 4), 2, 4)
    with pytest.raises(ValueError, match="to"):
        permute_rope_rows(torch.randn(8, 4), 2, 4, to="neox")
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.randn(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, Hkv, S, D\)"):
        repeat_kv(torch.randn(2, 3, 4), 2)
    with pytest.raises(ValueError, match="h:"):
        kv_head_index(-1, 2)


# --- Triton vs reference under the interpreter ---------------------------------------------------


def _check_triton(x, cos, sin, layout):
    x = x.detach().requires_grad_(True)
    ref = apply_rope(x, cos, sin, layout, impl="reference")
    out = apply_rope(x, cos, sin, layout, impl="triton")
    assert out.shape == x.shape and out.dtype == x.dtype
    assert_close(f"{layout} forward", ref, out)
    dy = torch.randn_like(ref)
    (rdx,) = torch.autograd.grad(ref, x, dy)
    (dx,) = torch.autograd.grad(out, x, dy)
    assert_close(f"{layout} dx", rdx, dx)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("t", [1, 63, 100])
@pytest.mark.parametrize("d", [8, 100])
def test_triton_matches_reference_bhtd(seeded, nan_poison, layout, t, d):
    x = torch.randn(2, 3, t, d)  # (B, H, T, D), angles (T, D/2) broadcast over B and H
    cos, sin = rope_angles(torch.arange(t) * 5, d)
    _check_triton(x, cos, sin, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_triton_per_sequence_positions_and_noncontiguous_x(seeded, nan_poison, layout):
    b, t, h, d = 2, 9, 3, 12
    x = torch.randn(b, h, t, d).transpose(1, 2)  # (B, T, H, D) view, not contiguous
    pos = torch.stack([torch.arange(t), torch.arange(t) + 50])  # (B, T)
    cos, sin = rope_angles(pos, d)  # (B, T, D/2)
    _check_triton(x, cos[:, :, None], sin[:, :, None], layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_triton_2d_angles_packed_images(seeded, nan_poison, layout):
    i = torch.cat([torch.arange(3).repeat_interleave(5), torch.arange(4).repeat_interleave(2)])
    j = torch.cat([torch.arange(5).repeat(3), torch.arange(2).repeat(4)])
    cos, sin = rope_2d_angles(i, j, 16, base=100.0)  # (N, D/2)
    _check_triton(torch.randn(1, 2, i.numel(), 16), cos, sin, layout)


def test_triton_low_precision_and_1d_input(seeded, nan_poison):
    cos, sin = rope_angles(torch.tensor(7), 10)  # (D/2,): a single position
    _check_triton(torch.randn(10), cos, sin, "half")
    x = torch.randn(2, 4, 6, 16).half()
    c, s = rope_angles(6, 16)
    assert_close("fp16", apply_rope(x, c, s, impl="reference"), apply_rope(x, c, s, impl="triton"))


# --- GPU ----------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_apply_rope_matches_cpu_fp64(seeded, dtype):
    x = torch.randn(2, 8, 1000, 128)
    cos, sin = rope_angles(torch.arange(1000) * 7, 128)
    for layout in LAYOUTS:
        ref = apply_rope(x.double(), cos.double(), sin.double(), layout)
        out = apply_rope(x.cuda().to(dtype), cos.cuda(), sin.cuda(), layout)
        assert out.device.type == "cuda" and out.dtype == dtype
        assert_close(f"{layout} {dtype}", ref, out.cpu())


@requires_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gpu_triton_backward_and_2d(seeded, nan_poison, layout):
    x = torch.randn(4, 1024, 16, 64, device="cuda", dtype=torch.bfloat16)  # (B, T, H, D)
    cos, sin = rope_angles(torch.arange(1024, device="cuda"), 64)
    x = x.requires_grad_(True)
    out = apply_rope(x, cos[:, None], sin[:, None], layout, impl="triton")
    ref = apply_rope(x.float(), cos[:, None], sin[:, None], layout, impl="reference")
    assert_close("forward", ref, out)
    dy = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, x, dy)
    # rotation is orthogonal: the gradient is the inverse rotation, so rotating it forward gives dy
    back = apply_rope(dx.float(), cos[:, None], sin[:, None], layout, impl="reference")
    assert_close("dx", dy.float(), back, ratio=1.6e-2)
    i, j = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    c2, s2 = rope_2d_angles(i.flatten().cuda(), j.flatten().cuda(), 64)
    q = torch.randn(2, 16, 1024, 64, device="cuda", dtype=torch.float32)
    assert_close(
        "2d",
        apply_rope(q, c2, s2, layout, impl="reference"),
        apply_rope(q, c2, s2, layout, impl="auto"),
    )


@pytest.mark.slow
def test_bench_cpu_quick_runs():
    from paperbricks.core_kernels.rope.bench import run

    rows = run(quick=True, device="cpu")
    assert rows and all(r.baseline == "HF eager rotate_half" and r.ms > 0 for r in rows)

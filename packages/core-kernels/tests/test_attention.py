"""Tests for paperbricks.core_kernels.attention.

On CPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set by the plugin) at tiny
shapes; the ``gpu`` tests run the full grid of awkward lengths, bf16/fp16 and bigger shapes.
Oracles: the float64 einsum reference, torch SDPA (including its own bottom-right causal bias),
per-segment runs for packing, explicitly repeated K/V for GQA, invariances (causality, packing
isolation), known values, and gradcheck.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from paperbricks.core_kernels.attention import (
    attention,
    attention_reference,
    sdpa_attention,
    segment_ids,
    varlen_attention,
)
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    gradcheck_f64,
    requires_cuda,
)

# ---------------------------------------------------------------------------------------------
# helpers


def _qkv(b, h, hkv, t, s, d, dv, *, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(b, h, t, d, generator=g).to(device, dtype)
    k = torch.randn(b, hkv, s, d, generator=g).to(device, dtype)
    v = torch.randn(b, hkv, s, dv, generator=g).to(device, dtype)
    return q, k, v


def _fwd_bwd(fn, q, k, v, go, glse):
    """Run ``fn`` (returning o, lse) and backprop ``<o, go> + <lse, glse>`` (finite lse only)."""
    q, k, v = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
    o, lse = fn(q, k, v)
    lse_f = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    loss = (o.float() * go.float()).sum() + (lse_f.float() * glse.float()).sum()
    loss.backward()
    return o.detach(), lse.detach(), q.grad, k.grad, v.grad


def _check_against_reference(q, k, v, *, causal, cu_seqlens=None, ratio=None, grad_ratio=None):
    """Triton forward, LSE and dq/dk/dv against the reference evaluated in float64."""
    g = torch.Generator(device="cpu").manual_seed(1)
    o_shape = (*q.shape[:3], v.shape[-1])
    go = torch.randn(o_shape, generator=g).to(q.device, q.dtype)
    glse = torch.randn(q.shape[:3], generator=g).to(q.device, torch.float32)

    def tri(q_, k_, v_):
        return attention(
            q_, k_, v_, causal=causal, cu_seqlens=cu_seqlens, return_lse=True, impl="triton"
        )

    def ref(q_, k_, v_):
        return attention_reference(
            q_, k_, v_, causal=causal, cu_seqlens=cu_seqlens, return_lse=True
        )

    out = _fwd_bwd(tri, q, k, v, go, glse)
    f64 = [x.to(torch.float64) for x in (q, k, v)]
    exp = _fwd_bwd(ref, *f64, go.to(torch.float64), glse.to(torch.float64))
    for name, r, o in zip(("o", "lse"), exp[:2], out[:2], strict=True):
        assert_close(name, r, o, ratio=ratio if name == "o" else None)
    assert out[1].dtype == torch.float32
    for name, r, o in zip(("dq", "dk", "dv"), exp[2:], out[2:], strict=True):
        assert o.dtype == q.dtype
        assert_close(name, r, o, ratio=grad_ratio if grad_ratio is not None else ratio)


# ---------------------------------------------------------------------------------------------
# import hygiene


def test_lean_import():
    assert_lean_import("paperbricks.core_kernels.attention")


# ---------------------------------------------------------------------------------------------
# reference: known values, outside implementations, gradcheck


def test_reference_known_values(seeded):
    q, k, v = _qkv(1, 2, 2, 3, 4, 8, 5)
    # Identical keys: uniform attention, the output is the mean of the values; lse = s + log S.
    k_same = k[:, :, :1].expand(-1, -1, 4, -1)
    o, lse = attention_reference(q, k_same, v, return_lse=True)
    assert_close("uniform o", v.mean(dim=2, keepdim=True).expand_as(o), o)
    s0 = (q @ k_same[:, :, :1].transpose(-1, -2)).squeeze(-1) / math.sqrt(8)
    assert_close("uniform lse", s0 + math.log(4), lse)
    # One key: every query returns that value.
    o1 = attention_reference(q, k[:, :, :1], v[:, :, :1])
    assert_close("single key", v[:, :, :1].expand_as(o1), o1)


def test_reference_causal_bottom_right_and_empty_rows(seeded):
    # T > S: the first T - S queries see no key (o = 0, lse = -inf); query i sees j <= i + S - T.
    q, k, v = _qkv(1, 2, 1, 6, 4, 8, 8)
    o, lse = attention_reference(q, k, v, causal=True, return_lse=True)
    assert torch.equal(o[:, :, :2], torch.zeros_like(o[:, :, :2]))
    assert torch.isneginf(lse[:, :, :2]).all()
    # Row 2 sees key 0 only.
    assert_close("row 2", v[:, :, :1].expand(-1, 2, -1, -1)[:, :, 0], o[:, :, 2])
    # Last query sees every key: same as non-causal.
    full = attention_reference(q, k, v)
    assert_close("last row", full[:, :, -1], o[:, :, -1])


@pytest.mark.parametrize(("t", "s"), [(5, 9), (7, 7), (1, 6)])
def test_reference_matches_sdpa_causal_lower_right(seeded, t, s):
    """torch's own bottom-right causal bias is an outside oracle for the alignment."""
    from torch.nn.attention.bias import causal_lower_right

    q, k, v = _qkv(2, 3, 3, t, s, 8, 8, dtype=torch.float64)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(t, s))
    assert_close("bottom-right", expected, attention_reference(q, k, v, causal=True))


@pytest.mark.parametrize(
    ("h", "hkv", "t", "s", "d", "dv", "causal", "lengths"),
    [
        (4, 4, 9, 9, 8, 8, False, None),
        (4, 2, 9, 13, 8, 6, True, None),
        (4, 1, 13, 9, 8, 12, True, None),
        (2, 2, 1, 7, 16, 16, True, None),
        (4, 2, 12, 12, 8, 8, True, (3, 0, 7, 2)),
        (4, 4, 12, 12, 8, 4, False, (5, 7)),
    ],
)
def test_sdpa_wrapper_matches_reference(seeded, h, hkv, t, s, d, dv, causal, lengths):
    b = 1 if lengths else 2
    q, k, v = _qkv(b, h, hkv, t, s, d, dv, dtype=torch.float64)
    cu = None
    if lengths:
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    ref = attention_reference(q, k, v, causal=causal, cu_seqlens=cu)
    out = sdpa_attention(q, k, v, causal=causal, cu_seqlens=cu)
    assert_close("sdpa", ref, out)


def test_reference_mask_argument(seeded):
    q, k, v = _qkv(1, 2, 2, 5, 5, 8, 8, dtype=torch.float64)
    causal_bool = torch.ones(5, 5, dtype=torch.bool).tril()
    assert_close(
        "bool mask",
        attention_reference(q, k, v, causal=True),
        attention_reference(q, k, v, mask=causal_bool),
    )
    additive = torch.zeros(5, 5, dtype=torch.float64).masked_fill(~causal_bool, float("-inf"))
    assert_close(
        "float mask",
        attention_reference(q, k, v, causal=True),
        attention_reference(q, k, v, mask=additive),
    )


def test_reference_gradcheck(seeded):
    q, k, v = _qkv(1, 2, 1, 4, 5, 3, 2)
    cu = torch.tensor([0, 1, 4], dtype=torch.int32)

    def fn(q_, k_, v_):
        return attention_reference(q_, k_, v_, causal=True, return_lse=True)

    def fn_packed(q_, k_, v_):
        return attention_reference(q_, k_[:, :, :4], v_[:, :, :4], cu_seqlens=cu, return_lse=True)

    assert gradcheck_f64(fn, q, k, v)
    assert gradcheck_f64(fn_packed, q, k, v)


def test_segment_ids():
    cu = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    assert segment_ids(cu, 5).tolist() == [0, 0, 2, 2, 2]


# ---------------------------------------------------------------------------------------------
# Triton kernels (interpreter on CPU) against the reference

_CPU_GRID = [
    # (b, h, hkv, t, s, d, dv, causal)
    (1, 2, 2, 1, 1, 16, 16, False),
    (1, 2, 1, 1, 63, 16, 16, True),
    (2, 2, 2, 63, 63, 16, 16, True),
    (1, 4, 2, 63, 40, 32, 16, False),
    (1, 4, 1, 40, 63, 16, 32, True),
    (1, 2, 1, 50, 17, 16, 16, True),
    (1, 2, 2, 100, 100, 100, 24, False),
    (1, 4, 4, 33, 33, 8, 8, True),
]


@pytest.mark.parametrize(("b", "h", "hkv", "t", "s", "d", "dv", "causal"), _CPU_GRID)
def test_triton_matches_reference(seeded, nan_poison, b, h, hkv, t, s, d, dv, causal):
    q, k, v = _qkv(b, h, hkv, t, s, d, dv)
    _check_against_reference(q, k, v, causal=causal)


@pytest.mark.parametrize("causal", [False, True])
def test_triton_varlen_matches_per_segment_runs(seeded, nan_poison, causal):
    lengths = [7, 0, 20, 1, 17]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    n = int(cu[-1])
    q, k, v = _qkv(1, 4, 2, n, n, 16, 24)
    _check_against_reference(q, k, v, causal=causal, cu_seqlens=cu)
    # Oracle independent of the packed reference: each sequence run on its own.
    o, lse = varlen_attention(q, k, v, cu, causal=causal, return_lse=True, impl="triton")
    for a, z in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        if z == a:
            continue
        sl = slice(a, z)
        e_o, e_lse = attention_reference(
            q[:, :, sl].double(), k[:, :, sl].double(), v[:, :, sl].double(),
            causal=causal, return_lse=True,
        )  # fmt: skip
        assert_close(f"segment {a}:{z}", e_o, o[:, :, sl])
        assert_close(f"segment {a}:{z} lse", e_lse, lse[:, :, sl])


def test_triton_float16_interpreter(seeded, nan_poison):
    """fp16 through the kernels (the interpreter's bf16 tl.dot is wrong, so bf16 is GPU-only)."""
    q, k, v = _qkv(1, 4, 2, 33, 40, 16, 16, dtype=torch.float16)
    _check_against_reference(q, k, v, causal=True, ratio=2e-3, grad_ratio=5e-3)


def test_triton_lse_only_gradient(seeded):
    """Backward with only the LSE used (no gradient flows into o): dLSE folds into delta."""
    q, k, v = _qkv(1, 2, 1, 20, 30, 16, 16)
    xs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    attention(*xs, causal=True, return_lse=True, impl="triton")[1].sum().backward()
    refs = [t.clone().double().requires_grad_(True) for t in (q, k, v)]
    attention_reference(*refs, causal=True, return_lse=True)[1].sum().backward()
    assert refs[2].grad is None  # the LSE does not depend on v
    for name, r, x in zip(("dq", "dk"), refs[:2], xs[:2], strict=True):
        assert_close(name, r.grad, x.grad)
    assert torch.equal(xs[2].grad, torch.zeros_like(xs[2].grad))


def test_triton_gqa_equals_repeated_kv(seeded):
    q, k, v = _qkv(1, 4, 2, 30, 30, 16, 16)
    go = torch.randn(1, 4, 30, 16)

    def run(kk, vv):
        xs = [t.clone().requires_grad_(True) for t in (q, kk, vv)]
        o = attention(*xs, causal=True, impl="triton")
        (o * go).sum().backward()
        return o.detach(), [x.grad for x in xs]

    o_gqa, (dq_g, dk_g, dv_g) = run(k, v)
    o_rep, (dq_r, dk_r, dv_r) = run(k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    assert_close("o", o_rep, o_gqa, ratio=1e-6)
    assert_close("dq", dq_r, dq_g, ratio=1e-6)
    # The repeated heads' gradients sum into their shared KV head.
    assert_close("dk", dk_r.unflatten(1, (2, 2)).sum(2), dk_g, ratio=1e-6)
    assert_close("dv", dv_r.unflatten(1, (2, 2)).sum(2), dv_g, ratio=1e-6)


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_causality_future_does_not_leak(seeded, impl):
    q, k, v = _qkv(1, 2, 1, 40, 40, 16, 16)
    cut = 23
    o = attention(q, k, v, causal=True, impl=impl)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, cut:] += 5.0 * torch.randn_like(x[:, :, cut:])
    o2 = attention(q2, k2, v2, causal=True, impl=impl)
    assert_bitwise_equal(o[:, :, :cut], o2[:, :, :cut], "past outputs")
    assert not torch.equal(o[:, :, cut:], o2[:, :, cut:])


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_packing_isolation(seeded, impl):
    cu = torch.tensor([0, 21, 40], dtype=torch.int32)
    q, k, v = _qkv(1, 2, 2, 40, 40, 16, 16)
    o = attention(q, k, v, cu_seqlens=cu, impl=impl)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, 21:] = torch.randn_like(x[:, :, 21:])
    o2 = attention(q2, k2, v2, cu_seqlens=cu, impl=impl)
    assert_bitwise_equal(o[:, :, :21], o2[:, :, :21], "segment A")
    assert not torch.equal(o[:, :, 21:], o2[:, :, 21:])


def test_triton_non_contiguous_inputs(seeded):
    """(B, T, H, D) tensors viewed as (B, H, T, D) run through the strides."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 20, 2, 16, generator=g).transpose(1, 2)
    k = torch.randn(1, 25, 1, 16, generator=g).transpose(1, 2)
    v = torch.randn(1, 25, 1, 16, generator=g).transpose(1, 2)
    assert not q.is_contiguous()
    _check_against_reference(q, k, v, causal=True)


# ---------------------------------------------------------------------------------------------
# dispatch and errors


def test_auto_on_cpu_uses_reference(seeded):
    q, k, v = _qkv(2, 4, 2, 9, 11, 8, 6)
    out = attention(q, k, v, causal=True)
    assert_bitwise_equal(sdpa_attention(q, k, v, causal=True), out, "auto on cpu")
    o, lse = attention(q, k, v, causal=True, return_lse=True, impl="reference")
    e_o, e_lse = attention_reference(q, k, v, causal=True, return_lse=True)
    assert_bitwise_equal(e_o, o, "reference o")
    assert_bitwise_equal(e_lse, lse, "reference lse")


def test_float64_reference_path(seeded):
    q, k, v = _qkv(1, 2, 1, 5, 6, 8, 8, dtype=torch.float64)
    o = attention(q, k, v, causal=True)
    assert o.dtype == torch.float64
    assert_close("fp64", attention_reference(q, k, v, causal=True), o)
    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        attention(q, k, v, impl="triton")


_Q = torch.zeros(1, 4, 6, 8)
_K = torch.zeros(1, 2, 6, 8)
_V = torch.zeros(1, 2, 6, 8)
_CU = torch.tensor([0, 2, 6], dtype=torch.int32)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"q": torch.zeros(1, 3, 6, 8)}, ValueError, "multiple of key/value heads"),
        ({"k": torch.zeros(1, 2, 6, 16)}, ValueError, "head dim D=8"),
        ({"v": torch.zeros(1, 2, 5, 8)}, ValueError, "like k"),
        ({"k": torch.zeros(2, 2, 6, 8)}, ValueError, "batch B=1"),
        ({"q": torch.zeros(4, 6, 8)}, ValueError, "expected 4 dims"),
        ({"q": torch.zeros(1, 4, 6, 8, dtype=torch.int32)}, TypeError, "float16"),
        ({"q": "not a tensor"}, TypeError, "torch.Tensor"),
        ({"v": torch.zeros(1, 2, 6, 8, dtype=torch.float64)}, TypeError, "one dtype"),
        ({"scale": float("nan")}, ValueError, "scale"),
        ({"impl": "fast"}, ValueError, "impl"),
        ({"cu_seqlens": torch.tensor([0.0, 6.0])}, TypeError, "cu_seqlens"),
        ({"cu_seqlens": torch.tensor([0, 2, 5], dtype=torch.int32)}, ValueError, "from 0 to T=6"),
        (
            {"cu_seqlens": torch.tensor([0, 4, 2, 6], dtype=torch.int32)},
            ValueError,
            "non-decreasing",
        ),
        ({"cu_seqlens": torch.tensor([6], dtype=torch.int32)}, ValueError, ">= 2 entries"),
        ({"cu_seqlens": _CU, "max_seqlen": 3}, ValueError, "longest segment"),
        ({"max_seqlen": 0}, ValueError, "max_seqlen"),
        (
            {
                "q": torch.zeros(2, 4, 6, 8),
                "k": torch.zeros(2, 2, 6, 8),
                "v": torch.zeros(2, 2, 6, 8),
                "cu_seqlens": _CU,
            },
            ValueError,
            "B == 1",
        ),
        (
            {"k": torch.zeros(1, 2, 7, 8), "v": torch.zeros(1, 2, 7, 8), "cu_seqlens": _CU},
            ValueError,
            "T == S",
        ),
        (
            {"q": torch.zeros(1, 4, 6, 256), "k": torch.zeros(1, 2, 6, 256), "impl": "triton"},
            ValueError,
            "<= 128",
        ),
    ],
)
def test_errors(kwargs, exc, match):
    args = {"q": _Q, "k": _K, "v": _V, **kwargs}
    with pytest.raises(exc, match=match):
        attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def test_varlen_requires_cu_seqlens():
    with pytest.raises(ValueError, match="cu_seqlens"):
        varlen_attention(_Q, _K, _V, None)


# ---------------------------------------------------------------------------------------------
# GPU: native kernels, the full grid, low precision, bigger shapes

_LENGTHS = [1, 63, 100, 257]
_GPU_RATIOS = {
    # (forward ratio, gradient ratio); fp32 uses tl.dot with input_precision="ieee".
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 5e-3),
    torch.bfloat16: (1.6e-2, 3e-2),
}


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("t", _LENGTHS)
@pytest.mark.parametrize("s", _LENGTHS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_gpu_triton_grid(seeded, nan_poison, dtype, t, s, causal, group):
    q, k, v = _qkv(2, 4, 4 // group, t, s, 64, 64, dtype=dtype, device="cuda")
    fwd, grad = _GPU_RATIOS[dtype]
    _check_against_reference(q, k, v, causal=causal, ratio=fwd, grad_ratio=grad)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("d", "dv"), [(100, 100), (128, 64), (32, 128), (128, 128)])
def test_gpu_triton_head_dims(seeded, nan_poison, dtype, d, dv):
    q, k, v = _qkv(1, 4, 2, 300, 257, d, dv, dtype=dtype, device="cuda")
    fwd, grad = _GPU_RATIOS[dtype]
    _check_against_reference(q, k, v, causal=True, ratio=fwd, grad_ratio=grad)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_triton_varlen(seeded, nan_poison, dtype, causal):
    lengths = [300, 1, 0, 517, 64, 129]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    n = int(cu[-1])
    q, k, v = _qkv(1, 8, 2, n, n, 64, 64, dtype=dtype, device="cuda")
    fwd, grad = _GPU_RATIOS[dtype]
    _check_against_reference(
        q, k, v, causal=causal, cu_seqlens=cu.cuda(), ratio=fwd, grad_ratio=grad
    )
    o = varlen_attention(q, k, v, cu.cuda(), causal=causal)
    for a, z in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        if z > a:
            sl = slice(a, z)
            eo = attention_reference(
                q[:, :, sl].double(), k[:, :, sl].double(), v[:, :, sl].double(), causal=causal
            )
            assert_close(f"segment {a}:{z}", eo, o[:, :, sl], ratio=fwd)


@requires_cuda
def test_gpu_auto_dispatch_and_sdpa_parity(seeded):
    q, k, v = _qkv(2, 16, 4, 1024, 1024, 128, 128, dtype=torch.bfloat16, device="cuda")
    out = attention(q, k, v, causal=True)  # auto -> triton on CUDA
    ref = sdpa_attention(q, k, v, causal=True)
    assert_close("auto vs sdpa", ref, out)
    tri = attention(q, k, v, causal=True, impl="triton")
    assert_bitwise_equal(tri, out, "auto is triton")


@requires_cuda
def test_gpu_causality_and_packing_isolation(seeded):
    q, k, v = _qkv(1, 4, 2, 700, 700, 64, 64, dtype=torch.bfloat16, device="cuda")
    o = attention(q, k, v, causal=True, impl="triton")
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, 333:] = torch.randn_like(x[:, :, 333:])
    o2 = attention(q2, k2, v2, causal=True, impl="triton")
    assert_bitwise_equal(o[:, :, :333], o2[:, :, :333], "past outputs")
    cu = torch.tensor([0, 333, 700], dtype=torch.int32, device="cuda")
    p1 = attention(q, k, v, cu_seqlens=cu, impl="triton")
    p2 = attention(q2, k2, v2, cu_seqlens=cu, impl="triton")
    assert_bitwise_equal(p1[:, :, :333], p2[:, :, :333], "segment A")


@pytest.mark.parametrize(("d", "dv"), [(8, 16), (16, 8), (5, 12)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_wrapper_unequal_widths_forward_and_backward(seeded, d, dv, causal):
    """The CPU zero-padding of the narrower side (for SDPA's fused kernel) changes nothing."""
    q, k, v = _qkv(2, 4, 2, 7, 9, d, dv, dtype=torch.float64)
    q, k, v = (x.requires_grad_(True) for x in (q, k, v))
    ref = attention_reference(q, k, v, causal=causal, scale=0.3)
    out = sdpa_attention(q, k, v, causal=causal, scale=0.3)
    assert out.shape == (2, 4, 7, dv)
    assert_close("o", ref, out)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    out_grads = torch.autograd.grad(out, (q, k, v), g)
    for name, a, b in zip("qkv", ref_grads, out_grads, strict=True):
        assert_close(f"d{name}", a, b)

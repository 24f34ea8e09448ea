"""``diff_attention``: every implementation against the reference, forward and all gradients.

The fused Triton kernel runs under ``TRITON_INTERPRET=1`` on CPU at tiny shapes (set by the
core-kernels pytest plugin) and natively in the ``@requires_cuda`` tests (bf16/fp16/fp32, longer
sequences, D = 64/128 with Dv = 2D). Oracles: the float64 reference (spec §5.1), GQA = MHA with
repeated KV (§5.2), packed = separate (§5.10), float64 gradcheck of the Triton autograd path
(§5.11), NaN-poisoned allocations, and clear errors for bad input.
"""

from __future__ import annotations

import math

import pytest
import torch

from paperbricks.core_kernels.testing import (
    DEFAULT_RATIOS,
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    gradcheck_f64,
    requires_cuda,
)
from paperbricks.diffattn.ops import diff_attention
from paperbricks.diffattn.reference import diff_attention_sdpa

# ---------------------------------------------------------------------------------------------
# helpers


def _make(b, h, hkv, t, s, d, dv, *, per_head=True, norm="gain", dtype=torch.float32,
          device="cpu", seed=0):  # fmt: skip
    """Inputs as a dict of tensors plus the keyword arguments of the epilogue."""
    g = torch.Generator().manual_seed(seed)
    x = {
        "q1": torch.randn(b, h, t, d, generator=g),
        "q2": torch.randn(b, h, t, d, generator=g),
        "k1": torch.randn(b, hkv, s, d, generator=g),
        "k2": torch.randn(b, hkv, s, d, generator=g),
        "v": torch.randn(b, hkv, s, dv, generator=g),
    }
    x = {k: t_.to(device, dtype) for k, t_ in x.items()}
    # λ away from 1: near λ = 1, U = O1 − λO2 cancels and every fp32 path loses digits to it.
    lam = torch.linspace(-0.2, 0.8, h) if per_head else torch.tensor(0.55)
    x["lam"] = lam.to(device)
    kw: dict = {}
    if norm == "gain":
        x["w"] = (torch.rand(dv, generator=g) + 0.5).to(device)
        kw = {"lambda_init": 0.3}
    elif norm == "nogain":
        kw = {"normalize": True, "lambda_init": 0.2}
    return x, kw


_NAMES = ("q1", "q2", "k1", "k2", "v", "lam", "w")


def _fwd_bwd(x: dict, kw: dict, impl: str, go: torch.Tensor, *, cast=None, **extra):
    """Forward and backward of ``<Y, go>``; returns Y and the gradients of every input."""
    leaves = {
        k: (v.detach().to(cast) if cast is not None else v.detach()).clone().requires_grad_(True)
        for k, v in x.items()
    }
    y = diff_attention(
        leaves["q1"], leaves["q2"], leaves["k1"], leaves["k2"], leaves["v"], leaves["lam"],
        norm_weight=leaves.get("w"), impl=impl, **kw, **extra,
    )  # fmt: skip
    (y.to(go.dtype) * go).sum().backward()
    return y.detach(), {k: leaves[k].grad for k in _NAMES if k in leaves}


def _check(x, kw, impl, *, ratio=None, grad_ratio=None, reduce_ratio=None, **extra):
    """``impl`` against the reference evaluated in float64 on the same inputs."""
    b, h, t, _ = x["q1"].shape
    g = torch.Generator().manual_seed(1)
    go = torch.randn(b, h, t, x["v"].shape[-1], generator=g).to(x["q1"].device, torch.float64)
    y, grads = _fwd_bwd(x, kw, impl, go.to(x["q1"].dtype), **extra)
    y_ref, grads_ref = _fwd_bwd(x, kw, "reference", go, cast=torch.float64, **extra)
    assert y.dtype == x["q1"].dtype
    assert_close(f"{impl} Y", y_ref, y, ratio=ratio)
    grad_ratio = grad_ratio or ratio or DEFAULT_RATIOS[x["q1"].dtype]
    # dλ and dγ are sums over every row (B·T·Dv terms) of a product that largely cancels (dU is
    # orthogonal to Û under the norm): in float32 the summation order alone moves them ~1e-5.
    reduce_ratio = reduce_ratio or 10 * grad_ratio
    for name, ref in grads_ref.items():
        got = grads[name]
        assert got.dtype == x[name].dtype and got.shape == x[name].shape, name
        r = reduce_ratio if name in ("lam", "w") else grad_ratio
        assert_close(f"{impl} d{name}", ref, got, ratio=r)


# ---------------------------------------------------------------------------------------------
# the fused kernel (interpreter) and the flashdiff_1 path against the reference

# (B, H, Hkv, T, S, D, Dv, causal, per-head λ, epilogue)
_CASES = [
    (1, 2, 2, 1, 1, 8, 16, True, True, "none"),  # with the norm, one key makes dλ ≈ 0
    (1, 2, 1, 17, 17, 8, 16, True, False, "gain"),
    (1, 4, 1, 17, 63, 8, 16, True, True, "none"),
    (1, 2, 2, 63, 17, 8, 16, True, True, "nogain"),  # T > S: the first 46 queries see no key
    (2, 4, 2, 17, 17, 16, 32, False, True, "gain"),
    (1, 4, 4, 63, 63, 8, 12, True, False, "gain"),  # Dv not a power of two
    (1, 2, 1, 1, 63, 12, 24, True, True, "gain"),  # one decoding step, D = 12
    (1, 4, 1, 17, 1, 8, 16, False, True, "none"),
]


@pytest.mark.parametrize("impl", ["triton", "sdpa"])
@pytest.mark.parametrize(
    ("b", "h", "hkv", "t", "s", "d", "dv", "causal", "per_head", "norm"), _CASES
)
def test_impl_matches_reference(seeded, impl, b, h, hkv, t, s, d, dv, causal, per_head, norm):
    x, kw = _make(b, h, hkv, t, s, d, dv, per_head=per_head, norm=norm)
    _check(x, kw, impl, causal=causal)


@pytest.mark.parametrize("n_rep", [2, 4])
def test_triton_gqa_equals_mha_with_repeated_kv(seeded, n_rep):
    x, kw = _make(1, 4, 4 // n_rep, 17, 17, 8, 16)
    go = torch.randn(1, 4, 17, 16, generator=torch.Generator().manual_seed(2))
    y, grads = _fwd_bwd(x, kw, "triton", go)
    rep = dict(x)
    for k in ("k1", "k2", "v"):  # explicit repeats; their gradients sum back per KV head
        rep[k] = x[k].repeat_interleave(n_rep, dim=1)
    y_mha, g_mha = _fwd_bwd(rep, kw, "triton", go)
    assert_close("Y", y_mha, y)
    for k in ("q1", "q2", "lam", "w"):
        assert_close(f"d{k}", g_mha[k], grads[k])
    for k in ("k1", "k2", "v"):
        summed = g_mha[k].unflatten(1, (-1, n_rep)).sum(2)  # (B, Hkv, S, ·)
        assert_close(f"d{k}", summed, grads[k])


@pytest.mark.parametrize("causal", [True, False])
def test_triton_packed_matches_reference_and_separate_runs(seeded, causal):
    cu = torch.tensor([0, 5, 5, 22, 23], dtype=torch.int32)  # lengths 5, 0, 17, 1
    x, kw = _make(1, 2, 1, 23, 23, 8, 16)
    _check(x, kw, "triton", causal=causal, cu_seqlens=cu)
    y = diff_attention(x["q1"], x["q2"], x["k1"], x["k2"], x["v"], x["lam"], norm_weight=x["w"],
                       causal=causal, cu_seqlens=cu, impl="triton", **kw)  # fmt: skip
    for a, z in ((0, 5), (5, 22), (22, 23)):
        sl = slice(a, z)
        sep = diff_attention(
            *(x[k][:, :, sl] for k in ("q1", "q2", "k1", "k2", "v")), x["lam"],
            norm_weight=x["w"], causal=causal, impl="triton", **kw,
        )  # fmt: skip
        assert_close(f"segment {a}:{z}", sep, y[:, :, sl])


def test_triton_gradcheck_float64():
    # The kernels accumulate in float64 for float64 inputs (interpreter only), so the analytic
    # backward of the fused path can be checked against finite differences.
    from paperbricks.diffattn.kernels._triton import diff_flash_attention

    x, _ = _make(1, 2, 1, 5, 7, 4, 8, dtype=torch.float64)

    def f(q1, q2, k1, k2, v, lam, w):
        return diff_flash_attention(q1, q2, k1, k2, v, lam, causal=True, scale=None,
                                    normalize=True, norm_weight=w, lambda_init=0.2, eps=1e-5,
                                    cu_seqlens=None)  # fmt: skip

    assert gradcheck_f64(f, *(x[k] for k in _NAMES), fast_mode=True)


def test_triton_nan_poisoned_buffers(seeded, nan_poison):
    # torch.empty returns NaNs here: every output and saved buffer must be written where read.
    x, kw = _make(1, 2, 1, 20, 9, 8, 12, norm="nogain")  # T > S: rows without keys
    _check(x, kw, "triton", causal=True)
    x, kw = _make(1, 2, 2, 9, 20, 8, 12, norm="gain", per_head=False)
    _check(x, kw, "triton", causal=False)


def test_triton_non_contiguous_inputs(seeded):
    # q1/q2, k1/k2 as strided views of one projection (B, T, 2H, D) -> (B, 2H, T, D).
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 13, 8, 8, generator=g).transpose(1, 2)  # (1, 8, 13, 8) strided
    k = torch.randn(1, 13, 4, 8, generator=g).transpose(1, 2)
    v = torch.randn(1, 13, 2, 16, generator=g).transpose(1, 2)
    lam = torch.tensor(0.4)
    args = (q[:, 0::2], q[:, 1::2], k[:, 0::2], k[:, 1::2], v, lam)
    ref = diff_attention(*args, impl="reference", normalize=True)
    assert_close("strided", ref, diff_attention(*args, impl="triton", normalize=True))
    mixed = (q[:, 0::2], q[:, 1::2].contiguous(), k[:, :2], k[:, 2:], v, lam)  # unequal strides
    assert_close("mixed", diff_attention(*mixed, impl="reference"),
                 diff_attention(*mixed, impl="triton"))  # fmt: skip


def test_triton_backward_with_expanded_upstream_gradient(seeded):
    # y.sum().backward() hands the kernel a stride-0 dY.
    x, kw = _make(1, 2, 1, 9, 9, 8, 16)
    grads = {}
    for impl in ("reference", "triton"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
        y = diff_attention(*(leaves[k] for k in ("q1", "q2", "k1", "k2", "v", "lam")),
                           norm_weight=leaves["w"], impl=impl, **kw)  # fmt: skip
        y.sum().backward()
        grads[impl] = leaves
    for k in x:
        r = 1e-4 if k in ("lam", "w") else 1e-5
        assert_close(f"d{k}", grads["reference"][k].grad, grads["triton"][k].grad, ratio=r)


def test_triton_no_grad_path_equals_grad_path(seeded):
    x, kw = _make(1, 2, 1, 17, 17, 8, 16)
    args = [x[k] for k in ("q1", "q2", "k1", "k2", "v", "lam")]
    with torch.no_grad():
        plain = diff_attention(*args, norm_weight=x["w"], impl="triton", **kw)
    leaves = [a.clone().requires_grad_(True) for a in args]
    tracked = diff_attention(*leaves, norm_weight=x["w"], impl="triton", **kw)
    assert_bitwise_equal(plain, tracked.detach(), "Y")


def test_sdpa4_and_sdpa_dispatch(seeded):
    from paperbricks.diffattn.reference import diff_attention_sdpa4

    x, kw = _make(2, 4, 2, 11, 11, 8, 16)
    args = [x[k] for k in ("q1", "q2", "k1", "k2", "v", "lam")]
    ref = diff_attention(*args, norm_weight=x["w"], impl="reference", **kw)
    four = diff_attention_sdpa4(*args, normalize=True, norm_weight=x["w"], **kw)
    assert_close("flashdiff_2", ref, four)
    # auto on CPU tensors is the flashdiff_1 path, bit for bit.
    auto = diff_attention(*args, norm_weight=x["w"], **kw)
    sdpa = diff_attention_sdpa(*args, normalize=True, norm_weight=x["w"], **kw)
    assert_bitwise_equal(sdpa, auto, "auto = sdpa on CPU")


def test_return_maps_and_float_lambda(seeded):
    x, _ = _make(1, 2, 1, 6, 6, 8, 16)
    args = [x[k] for k in ("q1", "q2", "k1", "k2", "v")]
    y, maps = diff_attention(*args, 0.25, return_maps=True)
    assert maps.shape == (1, 2, 6, 6) and maps.dtype == torch.float32
    assert_close("row sums", torch.full((1, 2, 6), 0.75), maps.sum(-1))
    v_rep = x["v"].repeat_interleave(2, dim=1)
    assert_close("Y = maps·V", maps @ v_rep, y)


# ---------------------------------------------------------------------------------------------
# input validation


def _good():
    x, _ = _make(1, 4, 2, 5, 6, 8, 16)
    return x


@pytest.mark.parametrize(
    ("change", "kwargs", "exc", "match"),
    [
        ({"q1": [1.0]}, {}, TypeError, "q1: expected a torch.Tensor"),
        ({"q2": torch.randn(1, 4, 5)}, {}, ValueError, "q2: expected 4 dims"),
        ({"k1": torch.randn(1, 2, 6, 8).double()}, {}, TypeError, "one dtype"),
        ({"q2": torch.randn(1, 4, 6, 8)}, {}, ValueError, "q2: expected shape"),
        (
            {
                "k1": torch.randn(1, 3, 6, 8),
                "k2": torch.randn(1, 3, 6, 8),
                "v": torch.randn(1, 3, 6, 16),
            },
            {},
            ValueError,
            "multiple of KV heads",
        ),
        ({"v": torch.randn(1, 2, 7, 16)}, {}, ValueError, "v: expected"),
        ({"k1": torch.randn(1, 2, 6, 4), "k2": torch.randn(1, 2, 6, 4)}, {}, ValueError, "D=8"),
        ({"q1": torch.randint(0, 3, (1, 4, 5, 8))}, {}, TypeError, "q1: expected a float16"),
        ({"lam": torch.rand(3)}, {}, ValueError, r"lam: expected shape \(\) or \(H,\)"),
        ({"lam": torch.tensor(1)}, {}, TypeError, "lam: expected a float tensor"),
        ({"lam": "0.5"}, {}, TypeError, "lam: expected a 0-d"),
        ({}, {"norm_weight": torch.ones(8)}, ValueError, r"norm_weight: expected .* \(16,\)"),
        ({}, {"norm_weight": torch.ones(16), "normalize": False}, ValueError, "normalize=False"),
        ({}, {"eps": 0.0}, ValueError, "eps: expected a float > 0"),
        ({}, {"scale": float("nan")}, ValueError, "scale: expected a finite float"),
        ({}, {"lambda_init": "0.2"}, ValueError, "lambda_init"),
        ({}, {"impl": "flash"}, ValueError, "impl: expected one of"),
        ({}, {"impl": "triton", "return_maps": True}, ValueError, "return_maps"),
        ({}, {"cu_seqlens": torch.tensor([0, 5], dtype=torch.int32)}, ValueError, "T == S"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, kwargs, exc, match):
    x = _good()
    x.update(change)
    with pytest.raises(exc, match=match):
        diff_attention(x["q1"], x["q2"], x["k1"], x["k2"], x["v"], x["lam"], **kwargs)


def test_bad_cu_seqlens_and_unsupported_triton_inputs():
    x, _ = _make(1, 2, 1, 6, 6, 8, 16)
    args = [x[k] for k in ("q1", "q2", "k1", "k2", "v", "lam")]
    with pytest.raises(ValueError, match="cu_seqlens: expected non-decreasing"):
        diff_attention(*args, cu_seqlens=torch.tensor([0, 4, 3, 6], dtype=torch.int32))
    with pytest.raises(TypeError, match="cu_seqlens: expected a 1-D int32"):
        diff_attention(*args, cu_seqlens=torch.tensor([0.0, 6.0]))
    with pytest.raises(ValueError, match=r"does not support these inputs: dtype torch\.float64"):
        diff_attention(*(a.double() for a in args), impl="triton")
    wide = [*args[:4], torch.randn(1, 1, 6, 300), args[5]]
    with pytest.raises(ValueError, match="Dv=300 > 256"):
        diff_attention(*wide, impl="triton")


def test_lean_import():
    assert_lean_import("paperbricks.diffattn.ops")  # imports reference.py too; kernels are lazy


# ---------------------------------------------------------------------------------------------
# GPU: native kernels, low precision, realistic lengths

_GPU_RATIOS = {
    # (forward, input gradients, dλ/dγ) against the float64 reference on the same rounded inputs.
    # Measured under the interpreter at T = S = 128 (D = 64, Dv = 128) in fp16: about 3e-4 for Y,
    # 5e-4 for the gradients and up to 1.3e-3 for dλ; bf16 has 3 mantissa bits fewer (8×). The
    # interpreter's own bf16 dots are broken (core-kernels' FA2 shows the same), so bf16 is
    # checked only here, natively.
    torch.float32: (1e-5, 2e-5, 1e-4),
    torch.float16: (2e-3, 5e-3, 1e-2),
    torch.bfloat16: (1.6e-2, 3e-2, 6e-2),
}


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(("d", "dv"), [(64, 128), (128, 256), (40, 72)])
@pytest.mark.parametrize("causal", [True, False])
def test_gpu_triton_matches_reference(seeded, nan_poison, dtype, d, dv, causal):
    x, kw = _make(2, 4, 2, 1000, 1000, d, dv, dtype=dtype, device="cuda")
    fwd, grad, red = _GPU_RATIOS[dtype]
    _check(x, kw, "triton", causal=causal, ratio=fwd, grad_ratio=grad, reduce_ratio=red)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("t", "s"), [(1, 777), (300, 1000), (513, 129)])
def test_gpu_triton_decode_and_rectangular(seeded, nan_poison, dtype, t, s):
    x, kw = _make(1, 8, 2, t, s, 64, 128, dtype=dtype, device="cuda", per_head=False)
    fwd, grad, red = _GPU_RATIOS[dtype]
    _check(x, kw, "triton", causal=True, ratio=fwd, grad_ratio=grad, reduce_ratio=red)


@requires_cuda
def test_gpu_triton_varlen(seeded, nan_poison):
    lengths = [300, 1, 0, 517, 64]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    n = int(cu[-1])
    x, kw = _make(1, 4, 2, n, n, 64, 128, dtype=torch.bfloat16, device="cuda")
    fwd, grad, red = _GPU_RATIOS[torch.bfloat16]
    _check(x, kw, "triton", causal=True, ratio=fwd, grad_ratio=grad, reduce_ratio=red,
           cu_seqlens=cu.cuda())  # fmt: skip


@requires_cuda
def test_gpu_auto_is_triton_and_matches_sdpa(seeded):
    x, kw = _make(2, 8, 4, 1024, 1024, 64, 128, dtype=torch.bfloat16, device="cuda")
    args = [x[k] for k in ("q1", "q2", "k1", "k2", "v", "lam")]
    auto = diff_attention(*args, norm_weight=x["w"], **kw)
    tri = diff_attention(*args, norm_weight=x["w"], impl="triton", **kw)
    assert_bitwise_equal(tri, auto, "auto is triton on CUDA")
    sdpa = diff_attention(*args, norm_weight=x["w"], impl="sdpa", **kw)
    assert_close("fused vs flashdiff_1", sdpa.float(), tri.float(), ratio=2e-2)
    assert math.isfinite(float(tri.float().abs().max()))

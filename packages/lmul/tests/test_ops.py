"""Public ops: validation, dispatch, Triton vs reference bit identity, batching and autograd.

The Triton kernels run under TRITON_INTERPRET=1 on CPU (small shapes) and natively in the
``@requires_cuda`` variants, which compare GPU results with the CPU reference bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch

from paperbricks.core_kernels.float_bits import E4M3FN, E5M2
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    requires_cuda,
)
from paperbricks.lmul.config import LMulConfig
from paperbricks.lmul.ops import lmul, lmul_bmm, lmul_matmul
from paperbricks.lmul.reference import lmul_matmul_reference, lmul_reference

INF, NAN = float("inf"), float("nan")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _operands(n: int, dtype: torch.dtype, gen_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Wide-range operands with zeros, Infs, NaNs and container subnormals mixed in."""
    g = torch.Generator().manual_seed(gen_seed)
    info = torch.finfo(dtype)
    spread = math.log2(info.max) / 3  # some products overflow, some underflow

    def draw() -> torch.Tensor:
        v = torch.randn(n, generator=g) * torch.exp2(torch.randn(n, generator=g) * spread)
        return v.to(dtype)

    x, y = draw(), draw()
    specials = torch.tensor([0.0, -0.0, INF, -INF, NAN, info.tiny / 8, info.max, 1.0, 3.0])
    x[: specials.numel()] = specials.to(dtype)
    y[3 : 3 + specials.numel()] = specials.flip(0).to(dtype)
    return x, y


# --- validation --------------------------------------------------------------------------------------


def test_lmul_bad_inputs():
    x = torch.ones(3)
    with pytest.raises(TypeError, match="x: expected a float32, bfloat16 or float16"):
        lmul(torch.ones(3, dtype=torch.int32), x)
    with pytest.raises(TypeError, match="x: expected a float32, bfloat16 or float16"):
        lmul(x.double(), x.double())
    with pytest.raises(TypeError, match=r"y: expected a torch\.Tensor"):
        lmul(x, [1.0, 2.0, 3.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"y: expected the same dtype as x \(torch.float32\)"):
        lmul(x, x.half())
    with pytest.raises(ValueError, match=r"y: shape \(4,\) does not broadcast with x's \(3,\)"):
        lmul(x, torch.ones(4))
    for k, dtype in (
        (0, torch.float32),
        (24, torch.float32),
        (8, torch.bfloat16),
        (11, torch.half),
    ):
        with pytest.raises(ValueError, match="mantissa_bits: expected None or an int in"):
            lmul(x.to(dtype), x.to(dtype), mantissa_bits=k)
    with pytest.raises(ValueError, match="mantissa_bits"):
        lmul(x, x, mantissa_bits=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"semantics: expected one of \('bits', 'equation'\)"):
        lmul(x, x, semantics="paper")
    with pytest.raises(ValueError, match="operand_rounding: expected one of"):
        lmul(x, x, operand_rounding="floor")
    with pytest.raises(ValueError, match="impl: expected one of"):
        lmul(x, x, impl="cuda")


def test_matmul_bad_inputs():
    a, b = torch.ones(2, 3), torch.ones(3, 4)
    with pytest.raises(TypeError, match="a: expected a float32, bfloat16 or float16"):
        lmul_matmul(a.long(), b)
    with pytest.raises(TypeError, match="b: expected the same dtype as a"):
        lmul_matmul(a, b.bfloat16())
    with pytest.raises(ValueError, match="at least 2 dims"):
        lmul_matmul(torch.ones(3), b)
    with pytest.raises(ValueError, match=r"b: expected shape \(\.\.\., K=3, N\)"):
        lmul_matmul(a, torch.ones(4, 4))
    with pytest.raises(ValueError, match="batch dims"):
        lmul_matmul(torch.ones(2, 2, 3), torch.ones(3, 3, 4))
    with pytest.raises(ValueError, match=r"accumulate: expected torch\.float32"):
        lmul_matmul(a, b, accumulate=torch.float16)
    with pytest.raises(ValueError, match="backward: expected one of"):
        lmul_matmul(a, b, backward="ste")
    with pytest.raises(ValueError, match="chunk_size: expected an int >= 1"):
        lmul_matmul(a, b, chunk_size=0)
    with pytest.raises(ValueError, match="mantissa_bits"):
        lmul_matmul(a.bfloat16(), b.bfloat16(), mantissa_bits=23)
    with pytest.raises(ValueError, match="float64 accumulation runs in the torch reference"):
        lmul_matmul(a, b, accumulate=torch.float64, impl="triton")
    with pytest.raises(ValueError, match="a: expected a 3-D"):
        lmul_bmm(a, b)
    with pytest.raises(ValueError, match="b: expected batch size 2"):
        lmul_bmm(torch.ones(2, 2, 3), torch.ones(1, 3, 4))


def test_config_validation_and_kwargs():
    with pytest.raises(ValueError, match="mantissa_bits"):
        LMulConfig(mantissa_bits=0)
    with pytest.raises(ValueError, match="semantics"):
        LMulConfig(semantics="eq")
    with pytest.raises(ValueError, match="targets"):
        LMulConfig(targets=("mlp",))
    with pytest.raises(ValueError, match="accumulate"):
        LMulConfig(accumulate=torch.bfloat16)
    cfg = LMulConfig(mantissa_bits=4, accumulate=E5M2, impl="reference")
    a, b = torch.randn(3, 5), torch.randn(5, 2)
    want = lmul_matmul(a, b, mantissa_bits=4, accumulate=E5M2, impl="reference")
    assert_bitwise_equal(lmul_matmul(a, b, **cfg.matmul_kwargs()), want)
    assert_bitwise_equal(lmul(a, a, **cfg.lmul_kwargs()), lmul(a, a, mantissa_bits=4))


def test_lean_import():
    assert_lean_import("paperbricks.lmul.ops")


# --- dispatch, batching, shapes ----------------------------------------------------------------------


def test_auto_on_cpu_is_the_reference(seeded):
    x, y = _operands(100, torch.float32)
    assert_bitwise_equal(lmul(x, y, impl="auto"), lmul_reference(x, y))


def test_lmul_broadcasts_like_mul(seeded):
    x, y = torch.randn(7, 1, 3), torch.randn(5, 1)
    out = lmul(x, y, mantissa_bits=3, impl="reference")
    assert out.shape == torch.mul(x, y).shape == (7, 5, 3)
    want = lmul_reference(x.expand(7, 5, 3), y.expand(7, 5, 3), mantissa_bits=3)
    assert_bitwise_equal(out, want)


def test_matmul_batch_broadcast_equals_loop(seeded):
    a, b = torch.randn(2, 1, 4, 6), torch.randn(3, 6, 5)
    out = lmul_matmul(a, b, mantissa_bits=3, impl="reference")
    assert out.shape == torch.matmul(a, b).shape == (2, 3, 4, 5)
    for i in range(2):
        for j in range(3):
            assert_bitwise_equal(out[i, j], lmul_matmul(a[i, 0], b[j], mantissa_bits=3))
    assert lmul_bmm(a[:, 0], b[:2]).shape == (2, 4, 5)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_matmul_empty_dims(impl):
    z = lmul_matmul(torch.ones(2, 3, 0), torch.ones(2, 0, 4), impl=impl)
    assert torch.equal(z, torch.zeros(2, 3, 4))
    assert lmul_matmul(torch.ones(0, 3), torch.ones(3, 4), impl=impl).shape == (0, 4)


# --- Triton vs reference (interpreter on CPU) --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("semantics", ["bits", "equation"])
@pytest.mark.parametrize("k", [None, 1, 3, 4, 5])
def test_triton_lmul_bit_identical(nan_poison, dtype, semantics, k):
    for n, rounding in ((63, "trunc"), (1000, "rne")):
        x, y = _operands(n, dtype, gen_seed=n)
        kw = {"mantissa_bits": k, "semantics": semantics, "operand_rounding": rounding}
        ref = lmul(x, y, impl="reference", **kw)
        assert_bitwise_equal(lmul(x, y, impl="triton", **kw), ref, f"n={n} {rounding}")


def test_triton_lmul_broadcast(nan_poison, seeded):
    x, y = torch.randn(7, 1).bfloat16(), torch.randn(1, 13).bfloat16()
    ref = lmul(x, y, mantissa_bits=4, impl="reference")
    assert_bitwise_equal(lmul(x, y, mantissa_bits=4, impl="triton"), ref)


@pytest.mark.parametrize(
    "dtype,semantics,k,rounding,accumulate",
    [
        (torch.float32, "bits", None, "trunc", torch.float32),
        (torch.bfloat16, "equation", 3, "rne", torch.float32),
        (torch.float16, "bits", 4, "trunc", torch.float32),
        (torch.float32, "bits", 3, "trunc", E4M3FN),
    ],
)
def test_triton_matmul_bit_identical(nan_poison, dtype, semantics, k, rounding, accumulate):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 17, 33, generator=g).to(dtype)
    b = torch.randn(33, 9, generator=g).to(dtype)
    a[0, 0, 1], b[1, 1] = 0.0, INF  # an Inf·0 product: the NaN must land in the same place
    kw = {
        "mantissa_bits": k,
        "semantics": semantics,
        "operand_rounding": rounding,
        "accumulate": accumulate,
    }
    ref = lmul_matmul(a, b, impl="reference", **kw)
    out = lmul_matmul(a, b, impl="triton", **kw)
    assert_bitwise_equal(out, ref, "L-Matmul")
    assert torch.isnan(ref[0, 0, 1]) and torch.isfinite(ref[1, 0, 0])


# --- autograd --------------------------------------------------------------------------------------------


def test_backward_exact_is_straight_through(seeded):
    a = torch.randn(2, 5, 7, requires_grad=True)
    b = torch.randn(2, 7, 3, requires_grad=True)
    out = lmul_matmul(a, b, mantissa_bits=3, impl="reference")
    g = torch.randn_like(out)
    out.backward(g)
    assert_bitwise_equal(a.grad, torch.matmul(g, b.detach().transpose(-1, -2)), "da")
    assert_bitwise_equal(b.grad, torch.matmul(a.detach().transpose(-1, -2), g), "db")


def test_backward_exact_with_batch_broadcast(seeded):
    a = torch.randn(3, 4, 6, requires_grad=True)
    b = torch.randn(6, 2, requires_grad=True)
    out = lmul_matmul(a, b, impl="reference")
    g = torch.randn_like(out)
    out.backward(g)
    a2, b2 = a.detach().requires_grad_(), b.detach().requires_grad_()
    torch.matmul(a2, b2).backward(g)
    assert_close("da", a2.grad, a.grad, ratio=1e-6)
    assert_close("db", b2.grad, b.grad, ratio=1e-6)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_backward_lmul(seeded, impl):
    a = torch.randn(2, 6, 5, requires_grad=True)
    b = torch.randn(2, 5, 4, requires_grad=True)
    kw = {"mantissa_bits": 3, "semantics": "bits", "operand_rounding": "trunc", "impl": impl}
    out = lmul_matmul(a, b, backward="lmul", **kw)
    g = torch.randn_like(out)
    out.backward(g)
    ad, bd = a.detach(), b.detach()
    assert_bitwise_equal(a.grad, lmul_matmul(g, bd.transpose(-1, -2), **kw), "da")
    assert_bitwise_equal(b.grad, lmul_matmul(ad.transpose(-1, -2), g, **kw), "db")


def test_lmul_elementwise_straight_through(seeded):
    x = torch.randn(4, 1, requires_grad=True)
    y = torch.randn(1, 5, requires_grad=True)
    out = lmul(x, y, mantissa_bits=3)
    g = torch.randn_like(out)
    out.backward(g)
    assert_bitwise_equal(x.grad, (g * y.detach()).sum(1, keepdim=True), "dx")
    assert_bitwise_equal(y.grad, (g * x.detach()).sum(0, keepdim=True), "dy")


# --- GPU (native Triton vs the CPU reference) ----------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("semantics", ["bits", "equation"])
def test_gpu_lmul_matches_cpu_reference(dtype, semantics):
    x, y = _operands((1 << 20) + 7, dtype, gen_seed=5)
    for k, rounding in ((None, "trunc"), (3, "rne"), (4, "trunc")):
        kw = {"mantissa_bits": k, "semantics": semantics, "operand_rounding": rounding}
        ref = lmul(x, y, impl="reference", **kw)
        out = lmul(x.cuda(), y.cuda(), impl="auto", **kw)
        assert_bitwise_equal(out.cpu(), ref, f"{dtype} k={k}")


@requires_cuda
@pytest.mark.parametrize(
    "dtype,k,accumulate",
    [(torch.float32, None, torch.float32), (torch.bfloat16, 3, torch.float32),
     (torch.float16, 4, E5M2)],
)  # fmt: skip
def test_gpu_matmul_matches_cpu_reference(dtype, k, accumulate):
    g = torch.Generator().manual_seed(7)
    a = torch.randn(2, 257, 300, generator=g).to(dtype)
    b = torch.randn(300, 129, generator=g).to(dtype)
    kw = {"mantissa_bits": k, "accumulate": accumulate}
    ref = lmul_matmul(a, b, impl="reference", **kw)
    out = lmul_matmul(a.cuda(), b.cuda(), impl="auto", **kw)
    assert_bitwise_equal(out.cpu(), ref, "GPU Triton vs CPU reference")
    ref_gpu = lmul_matmul_reference(
        a.cuda(), b.cuda().expand(2, 300, 129).contiguous(), mantissa_bits=k, accumulate=accumulate
    )
    assert_bitwise_equal(ref_gpu.cpu(), ref, "GPU torch reference vs CPU reference")


@requires_cuda
def test_gpu_backward_lmul():
    a = torch.randn(4, 64, 96, device="cuda", requires_grad=True)
    b = torch.randn(4, 96, 80, device="cuda", requires_grad=True)
    out = lmul_matmul(a, b, mantissa_bits=3, backward="lmul")
    g = torch.randn_like(out)
    out.backward(g)
    want = lmul_matmul(g.cpu(), b.detach().cpu().transpose(-1, -2), mantissa_bits=3)
    assert_bitwise_equal(a.grad.cpu(), want, "da")

"""The L-Mul torch reference against known values, real-format integer tables and invariants.

Oracles: hand-computed values of Eq. (1); the exhaustive 256×256 e4m3/e5m2 code tables through
``lmul_codes`` (an integer-field implementation on the formats' own codes); fp16/bf16 codes the
same way; the closed forms 2^{e}(1+S) / 2^{e+1}S computed in float64 from frexp; algebraic
invariants; float64 sums of reference products for the matmul.
"""

from __future__ import annotations

import math

import pytest
import torch

from paperbricks.core_kernels.float_bits import (
    BF16,
    E4M3FN,
    E5M2,
    FP16,
    FP32,
    all_codes,
    e8m,
    from_codes,
    round_to,
)
from paperbricks.core_kernels.testing import assert_bitwise_equal
from paperbricks.lmul.reference import (
    lmul_codes,
    lmul_constant,
    lmul_matmul_reference,
    lmul_reference,
    offset_bits,
    to_container,
)

INF, NAN = float("inf"), float("nan")


def f32(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


# --- schedule and constants -----------------------------------------------------------------------


def test_offset_schedule():
    assert [offset_bits(m) for m in range(1, 9)] == [1, 2, 3, 3, 4, 4, 4, 4]
    assert offset_bits(23) == 4
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="m: expected an int >= 1"):
            offset_bits(bad)  # type: ignore[arg-type]


def test_constants_of_the_spec():
    assert lmul_constant(FP32) == 0x3F780000
    assert lmul_constant(BF16) == 0x3F78
    assert lmul_constant(E4M3FN) == 55
    assert lmul_constant(E5M2) == 59
    assert lmul_constant(FP16) == (15 << 10) - (1 << 6)
    with pytest.raises(TypeError, match="fmt: expected a core-kernels FloatFormat"):
        lmul_constant(torch.float32)  # type: ignore[arg-type]


# --- known values -----------------------------------------------------------------------------------


def test_known_fp32_values_bits():
    x = f32(1.0, 1.5, 3.0, 1.75, 0.1)
    y = f32(1.0, 1.5, -5.0, 1.25, 0.2)
    out = lmul_reference(x, y)
    assert_bitwise_equal(out, f32(1.0625, 2.125, -14.5, 2.125, 0.019726563), "known values")


def test_known_values_equation_and_rounding():
    # S = 0.5 + 0.5 + 1/16 >= 1: the displayed formula keeps 1 + S, no carry.
    eq = lmul_reference(f32(1.5, 1.75, 3.0), f32(1.5, 1.25, -5.0), semantics="equation")
    assert_bitwise_equal(eq, f32(2.0625, 2.0625, -14.5), "equation")
    # k = 3: 1.2 truncates to 1.125 (RNE: 1.25); l(3) = 3 adds 1/8.
    t = lmul_reference(f32(1.2), f32(1.0), mantissa_bits=3, operand_rounding="trunc")
    r = lmul_reference(f32(1.2), f32(1.0), mantissa_bits=3, operand_rounding="rne")
    assert t.item() == 1.25 and r.item() == 1.375


def test_closed_forms_float64(seeded):
    """From frexp in float64: equation = 2^e(1+S); bits = 2^e(1+S) for S < 1, 2^{e+1}·S for
    1 <= S < 2 and 2^{e+2}·(S−1) for S >= 2 (the integer sum carries twice; k >= 5 only)."""
    for k in (2, 3, 4, 7, 10):
        x = torch.randn(4000) * 3
        y = torch.randn(4000) * 3
        xr, yr = (round_to(t, e8m(k), mode="trunc") for t in (x, y))
        keep = (xr != 0) & (yr != 0)
        xr, yr = xr[keep].double(), yr[keep].double()
        mx, ex = torch.frexp(xr.abs())  # |x| = mx·2^ex, mx in [0.5, 1)
        my, ey = torch.frexp(yr.abs())
        s = (2 * mx - 1) + (2 * my - 1) + 2.0 ** -offset_bits(k)
        e = (ex - 1 + ey - 1).double()
        sign = torch.sign(xr) * torch.sign(yr)
        want_bits = sign * torch.where(s < 1, 1 + s, torch.where(s < 2, 2 * s, 4 * (s - 1))) * 2**e
        want_eq = sign * (1 + s) * 2**e
        got_bits = lmul_reference(xr.float(), yr.float(), mantissa_bits=k).double()
        got_eq = lmul_reference(xr.float(), yr.float(), mantissa_bits=k, semantics="equation")
        assert torch.equal(got_bits, want_bits), k
        assert torch.equal(got_eq.double(), want_eq), k


def test_mean_relative_error_at_full_width(seeded):
    """Spec §2 measured 2.69 % ("bits") and 6.26 % ("equation") for N(0,1), m = 23."""
    x, y = torch.randn(100_000), torch.randn(100_000)
    exact = x.double() * y.double()
    errs = {
        sem: ((lmul_reference(x, y, semantics=sem).double() - exact).abs() / exact.abs()).mean()
        for sem in ("bits", "equation")
    }
    assert abs(errs["bits"] - 0.0269) < 0.002
    assert abs(errs["equation"] - 0.0626) < 0.003
    assert errs["bits"] < errs["equation"]


# --- exhaustive fp8 tables ----------------------------------------------------------------------------


def _expected_in_format(x, y, r32, fmt):
    """What the policy says the real format gives, from the fp32-container result r32."""
    sign = torch.where((torch.signbit(x) ^ torch.signbit(y)), -1.0, 1.0)
    zero_or_sub = (x.abs() < fmt.min_normal) & ~torch.isnan(x) | (
        (y.abs() < fmt.min_normal) & ~torch.isnan(y)
    )
    inf = torch.isinf(x) | torch.isinf(y)
    nan = torch.isnan(x) | torch.isnan(y) | (inf & zero_or_sub)
    over = r32.abs() > fmt.max_value
    under = r32.abs() < fmt.min_normal
    sat = fmt.max_value if fmt.finite else INF
    out = torch.where(over, sign * sat, r32)
    out = torch.where(under | zero_or_sub, sign * 0.0, out)
    out = torch.where(inf & ~nan, sign * INF, out)
    return torch.where(nan, torch.tensor(NAN), out)


@pytest.mark.parametrize("fmt", [E4M3FN, E5M2], ids=lambda f: f.name)
def test_exhaustive_fp8_tables(fmt):
    codes = all_codes(fmt)  # (256,) uint8
    vals = from_codes(codes, fmt)  # (256,) float32
    x, y = vals[:, None].expand(256, 256), vals[None, :].expand(256, 256)
    native = from_codes(lmul_codes(codes[:, None], codes[None, :], fmt), fmt)  # (256, 256)
    r32 = lmul_reference(x, y, mantissa_bits=fmt.man_bits)  # fp32 container, e8m(m)
    normal = (vals.abs() >= fmt.min_normal) & torch.isfinite(vals)
    in_range = (
        normal[:, None]
        & normal[None, :]
        & (r32.abs() >= fmt.min_normal)
        & (r32.abs() <= fmt.max_value)
    )
    assert_bitwise_equal(native[in_range], r32[in_range], f"{fmt.name} in range")
    assert_bitwise_equal(native, _expected_in_format(x, y, r32, fmt), f"{fmt.name} policy")
    if fmt is E4M3FN:
        pos = normal & (vals > 0)
        assert int((in_range & pos[:, None] & pos[None, :]).sum()) == 10_477


def test_fp8_saturation_and_flush_examples():
    def mul(a, b, fmt):
        ca, cb = (torch.tensor([c], dtype=torch.uint8) for c in (a, b))
        return from_codes(lmul_codes(ca, cb, fmt), fmt).item()

    assert mul(0x7E, 0x40, E4M3FN) == 448.0  # 448 · 2 saturates to max
    assert mul(0xFE, 0x40, E4M3FN) == -448.0
    assert mul(0x7B, 0x48, E5M2) == INF  # 57344 · 4
    assert mul(0x08, 0x08, E4M3FN) == 0.0  # 2^-6 · 2^-6 underflows
    assert mul(0x01, 0x78, E4M3FN) == 0.0  # subnormal operand flushes
    assert math.isnan(mul(0x7F, 0x38, E4M3FN))
    assert math.isnan(mul(0x7C, 0x00, E5M2))  # Inf · 0
    assert mul(0xFC, 0x3C, E5M2) == -INF


@pytest.mark.parametrize("fmt,dtype", [(FP16, torch.float16), (BF16, torch.bfloat16)])
def test_half_containers_equal_native_codes(fmt, dtype):
    """Every fp16/bf16 code (specials, subnormals and overflow included) against a shuffle."""
    codes = all_codes(fmt)  # (65536,) int16 bit patterns
    gen = torch.Generator().manual_seed(1)
    other = codes[torch.randperm(codes.numel(), generator=gen)]
    native = lmul_codes(codes, other, fmt).view(dtype)
    got = lmul_reference(codes.view(dtype), other.view(dtype))
    assert_bitwise_equal(got, native, fmt.name)
    # The float32 container at k = 7 is the bfloat16 L-Mul exactly (e8m(7) == BF16).
    if fmt is BF16:
        got32 = lmul_reference(
            codes.view(dtype).float(), other.view(dtype).float(), mantissa_bits=7
        )
        want32 = from_codes(lmul_codes(codes, other, fmt), fmt)  # float32, canonical NaN
        assert_bitwise_equal(got32, want32, "fp32 container, k = 7")


# --- invariants -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 1, 3, 4, 5])
@pytest.mark.parametrize("semantics", ["bits", "equation"])
def test_commutative_and_sign_symmetric(seeded, k, semantics):
    x = torch.randn(3000) * torch.exp(torch.randn(3000) * 5)
    y = torch.randn(3000) * torch.exp(torch.randn(3000) * 5)
    kw = {"mantissa_bits": k, "semantics": semantics}
    xy = lmul_reference(x, y, **kw)
    assert_bitwise_equal(xy, lmul_reference(y, x, **kw), "commutativity")
    assert_bitwise_equal(-xy, lmul_reference(-x, y, **kw), "sign of x")
    assert_bitwise_equal(xy, lmul_reference(-x, -y, **kw), "both signs")


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 23])
def test_powers_of_two(k):
    a = torch.arange(-60, 61, 7, dtype=torch.float64)
    x, y = (2.0**a)[:, None], (2.0**a)[None, :]
    want = (x * y) * (1 + 2.0 ** -offset_bits(k))  # (n, n), exact in float64
    got = lmul_reference(x.float(), y.float(), mantissa_bits=k).double()
    assert torch.equal(got, want)


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_bits_and_equation_agree_iff_no_carry(seeded, k):
    """Equal where S = x_m + y_m + 2^-l <= 1 (at S = 1 both give 2^{e+1}), different above."""
    x = round_to(torch.rand(5000) + 1, e8m(k), mode="trunc")  # [1, 2): x_m = x − 1
    y = round_to(torch.rand(5000) + 1, e8m(k), mode="trunc")
    s = (x - 1).double() + (y - 1).double() + 2.0 ** -offset_bits(k)
    bits = lmul_reference(x, y, mantissa_bits=k)
    eq = lmul_reference(x, y, mantissa_bits=k, semantics="equation")
    assert torch.equal(bits[s <= 1], eq[s <= 1])
    assert bool((bits[s > 1] != eq[s > 1]).all())
    assert bool((s > 1).any()) and bool((s < 1).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_result_is_exact_on_the_k_bit_grid(seeded, dtype, k):
    """Container exactness: a "bits" L-Mul of k-bit operands has k mantissa bits."""
    x, y = torch.randn(2000).to(dtype), torch.randn(2000).to(dtype)
    out = lmul_reference(x, y, mantissa_bits=k).float()
    assert_bitwise_equal(round_to(out, e8m(k), mode="trunc"), out, "k-bit grid")


# --- special values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("semantics", ["bits", "equation"])
def test_special_values(dtype, semantics):
    info = torch.finfo(dtype)
    sub = info.tiny / 4  # a subnormal of the container
    big = info.max
    x = [0.0, -0.0, 2.0, INF, -INF, INF, NAN, 1.0, sub, sub, info.tiny, big, -big, 2.0]
    y = [3.0, 3.0, -0.0, 2.0, 2.0, 0.0, 1.0, NAN, 5.0, INF, 0.5, 2.0, big, -sub]
    want = [0.0, -0.0, -0.0, INF, -INF, NAN, NAN, NAN, 0.0, NAN, 0.0, INF, -INF, -0.0]
    xt, yt = torch.tensor(x).to(dtype), torch.tensor(y).to(dtype)
    assert xt[8] != 0 and xt[8].abs() < info.tiny  # really a subnormal of the container
    out = lmul_reference(xt, yt, semantics=semantics)
    # to_container: torch's own float32 -> bfloat16 cast gives NaN as 0xFFFF on some builds.
    assert_bitwise_equal(out, to_container(torch.tensor(want), dtype), f"{dtype} specials")


# --- L-Matmul reference -----------------------------------------------------------------------------


def _products(a, b, **kw):
    return lmul_reference(a[..., :, :, None], b[..., None, :, :], **kw)  # (Bt, M, K, N)


@pytest.mark.parametrize("k", [None, 3])
def test_matmul_is_a_sequential_sum_of_lmul_products(seeded, k):
    a, b = torch.randn(2, 5, 11), torch.randn(2, 11, 7)
    p = _products(a, b, mantissa_bits=k)  # (2, 5, 11, 7)
    acc = torch.zeros(2, 5, 7)
    for j in range(11):
        acc = acc + p[:, :, j]
    out = lmul_matmul_reference(a, b, mantissa_bits=k)
    assert_bitwise_equal(out, acc, "sequential sum")
    # Within 1e-6 of the float64 sum, relative to Σ|p| (signed sums may cancel).
    err = (out.double() - p.double().sum(2)).abs()
    assert (err <= 1e-6 * p.double().abs().sum(2)).all()


def test_matmul_fp32_within_1e6_of_float64_sum(seeded):
    a, b = torch.rand(3, 8, 64) + 0.5, torch.rand(3, 64, 6) + 0.5  # positive: no cancellation
    ref64 = _products(a, b, mantissa_bits=4).double().sum(2)
    out = lmul_matmul_reference(a, b, mantissa_bits=4)
    assert ((out.double() - ref64).abs() / ref64).max() < 1e-6


@pytest.mark.parametrize("chunk", [1, 5, 7 * 3, 10_000])
def test_matmul_chunking_does_not_change_bits(seeded, chunk):
    a, b = torch.randn(3, 6, 9), torch.randn(3, 9, 7)
    full = lmul_matmul_reference(a, b, mantissa_bits=3)
    assert_bitwise_equal(lmul_matmul_reference(a, b, mantissa_bits=3, chunk_size=chunk), full)


@pytest.mark.parametrize("fmt", [E4M3FN, E5M2], ids=lambda f: f.name)
def test_matmul_floatformat_accumulation(seeded, fmt):
    a, b = torch.randn(1, 4, 10) * 4, torch.randn(1, 10, 5) * 4
    p = _products(a, b, mantissa_bits=3)
    acc = torch.zeros(1, 4, 5)
    for j in range(10):
        acc = round_to(acc + p[:, :, j], fmt, saturate=fmt.finite)
    out = lmul_matmul_reference(a, b, mantissa_bits=3, accumulate=fmt)
    assert_bitwise_equal(out, acc, f"{fmt.name} accumulation")
    assert_bitwise_equal(round_to(out, fmt), out, "representable")


def test_matmul_float64_accumulation_and_dtype(seeded):
    a, b = torch.randn(1, 3, 40).bfloat16(), torch.randn(1, 40, 2).bfloat16()
    out = lmul_matmul_reference(a, b, accumulate=torch.float64)
    assert out.dtype == torch.bfloat16
    ref64 = _products(a, b).double().sum(2)
    assert torch.equal(out, ref64.to(torch.bfloat16))


# --- random float32 bit patterns against a float64 oracle ------------------------------------------


def _oracle_fp32(x: torch.Tensor, y: torch.Tensor, semantics: str) -> torch.Tensor:
    """The policy written with float64 values (frexp), independent of the bit arithmetic."""
    tiny = torch.finfo(torch.float32).tiny
    xd, yd = x.double(), y.double()
    xz = torch.where(xd.abs() < tiny, 0.0, xd)  # subnormals flush (DAZ)
    yz = torch.where(yd.abs() < tiny, 0.0, yd)
    sign = torch.where(torch.signbit(x) ^ torch.signbit(y), -1.0, 1.0).double()
    mx, ex = torch.frexp(xz.abs())
    my, ey = torch.frexp(yz.abs())
    s = (2 * mx - 1) + (2 * my - 1) + 2.0**-4  # l(23) = 4
    e = (ex - 1 + ey - 1).double()
    if semantics == "bits":
        mag = torch.where(s < 1, 1 + s, torch.where(s < 2, 2 * s, 4 * (s - 1))) * 2**e
    else:
        mag = (1 + s) * 2**e
    mag = torch.where(mag < tiny, 0.0, mag)  # underflow
    out = (sign * mag).float()  # RNE (only "equation" at full width rounds); overflow -> ±Inf
    zero = (xz == 0) | (yz == 0)
    inf = torch.isinf(xz) | torch.isinf(yz)
    out = torch.where(zero, sign.float() * 0.0, out)
    out = torch.where(inf, sign.float() * INF, out)
    nan = torch.isnan(x) | torch.isnan(y) | (inf & zero)
    return torch.where(nan, torch.tensor(NAN), out)


@pytest.mark.parametrize("semantics", ["bits", "equation"])
def test_random_fp32_bit_patterns_against_float64_oracle(seeded, semantics):
    """Uniform over all 2^32 patterns (NaN payloads, Inf, subnormals, over/underflow), plus a
    band of exponents near the overflow and underflow edges of the product."""
    u = torch.randint(-(1 << 31), 1 << 31, (2, 40_000), dtype=torch.int64)
    x, y = u.to(torch.int32).view(torch.float32)  # (40000,) each
    near = torch.randn(2, 20_000) * torch.exp2(torch.randint(-66, 66, (2, 20_000)).float())
    x, y = torch.cat([x, near[0]]), torch.cat([y, near[1]])
    got = lmul_reference(x, y, semantics=semantics)
    assert_bitwise_equal(got, _oracle_fp32(x, y, semantics), f"random patterns ({semantics})")

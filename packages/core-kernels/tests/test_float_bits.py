"""float_bits: formats vs torch.finfo, RNE vs torch's own casts (exhaustive codes, a million random
fp32 patterns, ties), saturation/Inf/NaN/subnormal policies, an exact-rational oracle for other
formats and float64 inputs, fields/codes round trips, Triton bitwise equal to the reference."""

from fractions import Fraction
from math import floor

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from paperbricks.core_kernels.float_bits import (
    BF16,
    E4M3FN,
    E5M2,
    FP16,
    FP32,
    FloatFormat,
    all_codes,
    compose,
    decompose,
    e8m,
    fp32_bits,
    fp32_from_bits,
    from_codes,
    round_to,
    round_to_reference,
    to_codes,
)
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_lean_import,
    requires_cuda,
)

TORCH_FORMATS = [E4M3FN, E5M2, BF16, FP16]
#: Which saturate setting reproduces torch's cast (torch's e4m3fn cast saturates, the others don't).
TORCH_SATURATE = {E4M3FN: True, E5M2: False, BF16: False, FP16: False}
OTHER_FORMATS = [
    e8m(3),
    FloatFormat(3, 2, bias=5),
    FloatFormat(6, 4, finite=True),
    FloatFormat(2, 5),
]
INF = float("inf")
NAN = float("nan")


def bits32(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


def random_patterns(n: int, device: str = "cpu") -> torch.Tensor:
    """n float32 values with uniformly random bit patterns (all exponents, NaN, Inf, subnormals)."""
    u = torch.randint(-(2**31), 2**31, (n,), dtype=torch.int64, device=device)
    return u.to(torch.int32).view(torch.float32)


def edge_values(fmt: FloatFormat) -> torch.Tensor:
    m = fmt.max_value
    ulp_top = 2.0 ** (fmt.emax - fmt.man_bits)
    vals = [0.0, -0.0, INF, -INF, NAN, -NAN, m, -m, m + ulp_top / 2, m + ulp_top / 4]
    vals += [m + ulp_top, 2 * m, 1e30, 3.4e38, fmt.min_normal, fmt.min_subnormal]
    vals += [fmt.min_subnormal / 2, fmt.min_subnormal * 0.75, fmt.min_subnormal / 4, 1e-40, 1e-45]
    vals += [1.0, 1.0 + 2.0 ** -(fmt.man_bits + 1), 1.0 + 3 * 2.0 ** -(fmt.man_bits + 1)]
    x = torch.tensor(vals, dtype=torch.float32)
    return torch.cat([x, -x])


def grid_inputs(fmt: FloatFormat) -> torch.Tensor:
    """Every finite value of a <=16-bit format, the midpoints between neighbours (ties) and the
    float32 numbers one ulp either side of each midpoint."""
    v = from_codes(all_codes(fmt), fmt)
    v = v[torch.isfinite(v)].unique()  # sorted, -0 and 0 merged
    mid = (v[:-1].double() + v[1:].double()) / 2
    mid = mid.float()  # exact: neighbours differ by a power of two times an M-bit integer
    up = torch.nextafter(mid, torch.full_like(mid, INF))
    down = torch.nextafter(mid, torch.full_like(mid, -INF))
    return torch.cat([v, mid, up, down])


def same_or_both_nan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (bits32(a) == bits32(b)) | (torch.isnan(a) & torch.isnan(b))


def oracle_round(v: float, fmt: FloatFormat, trunc: bool = False) -> float:
    """Exact rational rounding (saturating) of a finite Python float to ``fmt``."""
    if v == 0:
        return v
    a = Fraction(abs(v))
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    q = Fraction(2) ** (max(e, fmt.emin) - fmt.man_bits)
    n = a / q
    r = floor(n)
    rem = n - r
    if not trunc and (rem > Fraction(1, 2) or (rem == Fraction(1, 2) and r % 2 == 1)):
        r += 1
    out = min(float(r * q), fmt.max_value)
    return -out if v < 0 else out


def test_lean_import():
    assert_lean_import("paperbricks.core_kernels.float_bits")


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [*TORCH_FORMATS, FP32], ids=lambda f: f.name)
def test_presets_match_torch_finfo(fmt):
    fi = torch.finfo(fmt.torch_dtype)
    assert fmt.bits == fi.bits
    assert fmt.max_value == fi.max
    assert fmt.min_normal == fi.smallest_normal
    assert 2.0**-fmt.man_bits == fi.eps
    # The smallest subnormal is the first positive code.
    one = torch.tensor([1], dtype=torch.int32 if fmt.bits == 32 else torch.int16)
    if fmt.bits == 8:
        one = one.to(torch.uint8)
    assert one.view(fmt.torch_dtype).float().item() == fmt.min_subnormal


def test_format_definitions():
    assert e8m(7) == BF16 and e8m(23) == FP32 and e8m(3).name == "E8M3"
    assert (E4M3FN.bias, E5M2.bias, FP16.bias) == (7, 15, 15)
    assert FloatFormat(4, 3) != E4M3FN and FloatFormat(4, 3).max_value == 240.0
    assert FloatFormat(4, 3, finite=True, name="x") == E4M3FN  # the name is not compared
    assert e8m(3).torch_dtype is None
    with pytest.raises(ValueError, match="exp_bits"):
        FloatFormat(9, 3)
    with pytest.raises(ValueError, match="man_bits"):
        FloatFormat(4, 0)
    with pytest.raises(ValueError, match="bias"):
        FloatFormat(8, 3, bias=128)  # emin = -127, below float32's
    with pytest.raises(ValueError, match="bias"):
        FloatFormat(8, 3, finite=True)  # emax = 128
    with pytest.raises(ValueError, match="k"):
        e8m(0)


# --- codes and fields ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=lambda f: f.name)
def test_all_codes_decode_like_torch(fmt):
    codes = all_codes(fmt)
    assert codes.numel() == 1 << fmt.bits
    ours = from_codes(codes, fmt)
    theirs = codes.view(fmt.torch_dtype).float()
    assert bool(same_or_both_nan(ours, theirs).all())
    assert int(torch.isnan(ours).sum()) == int(torch.isnan(theirs).sum())


@pytest.mark.parametrize(
    "fmt",
    [E4M3FN, E5M2, FloatFormat(4, 3), FloatFormat(3, 4), FloatFormat(2, 5), FloatFormat(6, 1)],
    ids=lambda f: f.name,
)
def test_all_8bit_codes_round_trip(fmt):
    codes = all_codes(fmt)
    assert codes.dtype == torch.uint8 and codes.numel() == 256
    vals = from_codes(codes, fmt)
    nan = torch.isnan(vals)
    back = to_codes(vals, fmt, saturate=False)
    assert torch.equal(back[~nan], codes[~nan])
    # NaN codes map to the canonical NaN code (sign kept).
    man_nan = 7 if fmt == E4M3FN else 1 << (fmt.man_bits - 1)
    canon = (codes[nan].to(torch.int64) & 0x80) | (fmt.exp_all_ones << fmt.man_bits) | man_nan
    assert torch.equal(back[nan].to(torch.int64), canon)
    assert int(nan.sum()) == (2 if fmt.finite else 2 * ((1 << fmt.man_bits) - 1))
    # Values of the format are fixed points of rounding, in both modes.
    for mode in ("rne", "trunc"):
        y = round_to(vals, fmt, mode, saturate=False)
        assert bool(same_or_both_nan(y, vals).all())
    s, e, m = decompose(vals, fmt)
    assert torch.equal(compose(s, e, m, fmt)[~nan], vals[~nan])
    code_fields = (s.long() << (fmt.bits - 1)) | (e.long() << fmt.man_bits) | m.long()
    assert torch.equal(code_fields[~nan], codes[~nan].long())


def test_fp32_bits_helpers(seeded):
    x = torch.cat([random_patterns(1000), torch.tensor([-0.0, 1e-45, -INF])])
    u = fp32_bits(x)
    assert u.dtype == torch.int64 and int(u.min()) >= 0 and int(u.max()) < 2**32
    assert torch.equal(u, bits32(x).to(torch.int64) & 0xFFFFFFFF)
    assert int(fp32_bits(torch.tensor([-2.0]))) == 0xC0000000
    assert_bitwise_equal(fp32_from_bits(u), x, "fp32_from_bits(fp32_bits(x))")
    assert_bitwise_equal(fp32_bits(x.half()), fp32_bits(x.half().float()), "half input")


def test_fp32_fields_are_the_bit_slices(seeded):
    x = torch.cat([torch.randn(1000) * 1e3, random_patterns(1000), torch.tensor([1e-45, -0.0])])
    x = x[torch.isfinite(x)]
    u = bits32(x).to(torch.int64) & 0xFFFFFFFF
    s, e, m = decompose(x, FP32)
    assert torch.equal(s.long(), u >> 31)
    assert torch.equal(e.long(), (u >> 23) & 0xFF)
    assert torch.equal(m.long(), u & 0x7FFFFF)
    assert_bitwise_equal(compose(s, e, m, FP32), x, "compose(decompose(x))")


def test_decompose_and_compose_validate():
    with pytest.raises(ValueError, match="not representable in E4M3FN"):
        decompose(torch.tensor([1.0, 0.3]), E4M3FN)
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        decompose(torch.tensor([1]), E4M3FN)
    z = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"exponent: expected values in \[0, 15\]"):
        compose(z, torch.tensor([0, 16, 1]), z, E4M3FN)
    with pytest.raises(ValueError, match="sign"):
        compose(z + 2, z, z, E4M3FN)
    with pytest.raises(TypeError, match="mantissa: expected an integer tensor"):
        compose(z, z, z.float(), E4M3FN)
    assert compose(torch.tensor(1), torch.tensor([15, 15]), torch.tensor([0, 7]), E4M3FN)[0] == -256


def test_codes_dtypes_and_validation(seeded):
    x = torch.randn(100) * 100
    c16 = to_codes(x, FP16)
    assert c16.dtype == torch.int16 and torch.equal(c16, x.half().view(torch.int16))
    assert torch.equal(to_codes(x, BF16, saturate=False), x.bfloat16().view(torch.int16))
    assert to_codes(x, e8m(3)).dtype == torch.int16  # 12 bits
    assert to_codes(x, FP32).dtype == torch.int32
    assert torch.equal(from_codes(c16, FP16), x.half().float())
    with pytest.raises(ValueError, match=r"codes: expected values in \[0, 255\]"):
        from_codes(torch.tensor([256]), E4M3FN)
    with pytest.raises(TypeError, match="codes: expected an integer tensor"):
        from_codes(torch.tensor([1.0]), E4M3FN)
    with pytest.raises(ValueError, match="at most 16 bits"):
        all_codes(FP32)
    assert all_codes(BF16).dtype == torch.int16 and all_codes(BF16).numel() == 65536


# --- RNE against torch's own casts -----------------------------------------------------------


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=lambda f: f.name)
def test_rne_equals_torch_cast(seeded, fmt):
    x = torch.cat(
        [
            random_patterns(1_000_000),
            torch.randn(100_000) * fmt.max_value / 8,
            torch.randn(100_000) * fmt.min_normal,
            edge_values(fmt),
            grid_inputs(fmt),
        ]
    )
    sat = TORCH_SATURATE[fmt]
    ours = to_codes(x, fmt, saturate=sat)
    theirs = x.to(fmt.torch_dtype).view(ours.dtype)
    nan = torch.isnan(x)
    assert_bitwise_equal(ours[~nan], theirs[~nan], f"to_codes vs torch {fmt.name} cast")
    y = round_to(x, fmt, saturate=sat)
    assert bool(same_or_both_nan(y, x.to(fmt.torch_dtype).float()).all())
    # Inside the finite range both saturate settings agree with torch.
    inside = torch.isfinite(x) & (x.abs() <= fmt.max_value)
    other = round_to(x[inside], fmt, saturate=not sat)
    assert_bitwise_equal(other, x[inside].to(fmt.torch_dtype).float(), "in-range values")


def test_torch_out_of_range_behaviour_as_documented():
    x = torch.tensor([1e6, INF, -INF, 464.0, 480.0])
    assert x.to(torch.float8_e4m3fn).float().tolist() == [448.0, 448.0, -448.0, 448.0, 448.0]
    y = torch.tensor([1e6, 61440.0, 61439.0, INF]).to(torch.float8_e5m2).float().tolist()
    assert y == [INF, INF, 57344.0, INF]


@pytest.mark.parametrize("fmt", TORCH_FORMATS + OTHER_FORMATS, ids=lambda f: f.name)
def test_overflow_inf_nan_policy(fmt):
    m = fmt.max_value
    ulp_top = 2.0 ** (fmt.emax - fmt.man_bits)
    # Past max: the tie max + ulp/2 rounds up when max's mantissa is odd (IEEE formats) and
    # stays at max when even (finite formats, whose top mantissa is all-ones minus one).
    over = [m * 1.5, m + ulp_top] + ([m + ulp_top / 2] if fmt.has_inf else [])
    # float64, so that the inputs past BF16's max are not already Inf in float32.
    vals = over + [-v for v in over] + [m + ulp_top / 4, INF, -INF, NAN, -NAN]
    x = torch.tensor(vals, dtype=torch.float64)
    n = len(over)
    sat = round_to(x, fmt, saturate=True)
    assert sat[:n].tolist() == [m] * n and sat[n : 2 * n].tolist() == [-m] * n
    assert sat[2 * n].item() == m
    assert sat[2 * n + 1 : 2 * n + 3].tolist() == ([INF, -INF] if fmt.has_inf else [m, -m])
    nosat = round_to(x, fmt, saturate=False)
    if fmt.has_inf:
        assert nosat[:n].tolist() == [INF] * n and nosat[n : 2 * n].tolist() == [-INF] * n
        assert nosat[2 * n + 1 : 2 * n + 3].tolist() == [INF, -INF]
    else:
        assert bool(torch.isnan(nosat[: 2 * n]).all())
        assert bool(torch.isnan(nosat[2 * n + 1 : 2 * n + 3]).all())
    # NaN: canonical quiet NaN with the input's sign, in every setting.
    for y in (sat, nosat, round_to(x, fmt, "trunc", "flush", False)):
        assert bits32(y[-2:]).tolist() == [0x7FC00000, 0xFFC00000 - 2**32]
    # Truncation never overflows: IEEE round-toward-zero gives max.
    tr = round_to(x[: 2 * n], fmt, mode="trunc", saturate=False)
    assert tr.abs().tolist() == [m] * (2 * n)


def test_signed_zeros_and_underflow():
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, E4M3FN.min_subnormal / 2, -E4M3FN.min_subnormal])
    y = round_to(x, E4M3FN)
    assert bits32(y[:4]).tolist() == [0, -(2**31), 0, -(2**31)]
    assert y[4].item() == 0.0 and y[5].item() == -E4M3FN.min_subnormal  # tie -> even zero


# --- truncation, flushing, other formats, other dtypes ---------------------------------------


@pytest.mark.parametrize("fmt", [E4M3FN, E5M2, BF16, FP16, e8m(3)], ids=lambda f: f.name)
def test_trunc_never_increases_magnitude_and_is_the_floor(seeded, fmt):
    x = torch.cat([random_patterns(50_000), torch.randn(50_000) * 10, grid_inputs(E4M3FN)])
    x = x[torch.isfinite(x)]
    t = round_to(x, fmt, mode="trunc")
    assert bool((t.abs() <= x.abs()).all())
    assert bool(((t == 0) | (torch.sign(t) == torch.sign(x))).all())
    # The next representable magnitude above |t| exceeds |x| (t is the largest one <= |x|).
    _s, e, m = decompose(t.abs(), fmt)
    code = (e.long() << fmt.man_bits) | m.long()
    nxt = from_codes(code + 1, fmt) if fmt.bits > 8 else from_codes((code + 1).to(torch.uint8), fmt)
    below_max = t.abs() < fmt.max_value
    assert bool((nxt[below_max] > x.abs()[below_max]).all())
    if fmt == BF16:  # truncation of float32 to bfloat16 is masking the low 16 bits
        normal = x.abs() >= BF16.min_normal
        masked = (bits32(x) & -65536).view(torch.float32)
        assert_bitwise_equal(t[normal], masked[normal], "bf16 trunc vs bit mask")


@pytest.mark.parametrize(
    "fmt", [E4M3FN, E5M2, FP16, FloatFormat(3, 2, bias=5)], ids=lambda f: f.name
)
@pytest.mark.parametrize("mode", ["rne", "trunc"])
def test_flush_is_keep_with_subnormal_results_zeroed(seeded, fmt, mode):
    x = torch.cat([torch.randn(20_000) * fmt.min_normal * 2, grid_inputs(E4M3FN)])
    keep = round_to(x, fmt, mode, "keep")
    flush = round_to(x, fmt, mode, "flush")
    tiny = keep.abs() < fmt.min_normal
    assert bool(tiny.any()) and bool((~tiny).any())
    assert_bitwise_equal(flush[~tiny], keep[~tiny], "flush outside the subnormal range")
    assert bool((flush[tiny] == 0).all())
    assert bool((torch.signbit(flush[tiny]) == torch.signbit(x[tiny])).all())


@pytest.mark.parametrize("fmt", [*OTHER_FORMATS, E4M3FN, E5M2], ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ["rne", "trunc"])
def test_rounding_equals_exact_rational_oracle(seeded, fmt, mode):
    scales = 2.0 ** torch.randint(fmt.emin - fmt.man_bits - 3, fmt.emax + 2, (400,))
    x = torch.cat([torch.randn(400) * scales, grid_inputs(E4M3FN)[::7]])
    for dtype in (torch.float32, torch.float64):
        xd = (
            x.to(dtype) if dtype == torch.float32 else x.double() * (1 + 1e-9 * torch.randn(len(x)))
        )
        xd = xd[torch.isfinite(xd)]
        expected = [oracle_round(v, fmt, trunc=mode == "trunc") for v in xd.tolist()]
        got = round_to(xd, fmt, mode)
        assert got.dtype == torch.float32
        assert_bitwise_equal(got, torch.tensor(expected, dtype=torch.float32), f"{dtype} {mode}")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    exp_bits=st.integers(2, 8),
    man_bits=st.integers(1, 12),
    finite=st.booleans(),
    bias_shift=st.integers(-3, 3),
    trunc=st.booleans(),
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=40
    ),
)
def test_random_formats_equal_exact_rational_oracle(
    exp_bits, man_bits, finite, bias_shift, trunc, values
):
    bias = (1 << (exp_bits - 1)) - 1 + bias_shift
    try:
        fmt = FloatFormat(exp_bits, man_bits, bias=bias, finite=finite)
    except ValueError:
        assume(False)
    scale = 2.0 ** ((fmt.emin + fmt.emax) // 2)  # bring some values into the format's range
    x = torch.tensor(values + [v * scale for v in values] + [v * fmt.min_normal for v in values])
    x = x.double()[torch.isfinite(x)]
    expected = torch.tensor([oracle_round(v, fmt, trunc) for v in x.tolist()], dtype=torch.float32)
    mode = "trunc" if trunc else "rne"
    assert_bitwise_equal(round_to(x, fmt, mode), expected, f"{fmt} float64 {mode}")
    x32 = x.float()[torch.isfinite(x.float())]
    expected32 = [oracle_round(v, fmt, trunc) for v in x32.tolist()]
    assert_bitwise_equal(round_to(x32, fmt, mode), torch.tensor(expected32), f"{fmt} float32")


def test_float64_rounds_once():
    # 1 + 2^-4 + 2^-30: just above the E4M3 tie between 1 and 1.125; via float32 the 2^-30 is
    # lost, the tie goes to even (1.0). Rounding from the float64 bits gives 1.125.
    x = torch.tensor(
        [1 + 2**-4 + 2**-30, -(1 + 2**-4 + 2**-30), 1e300, -1e-300], dtype=torch.float64
    )
    y = round_to(x, E4M3FN, saturate=False)
    assert y[:2].tolist() == [1.125, -1.125]
    assert round_to(x[:1].float(), E4M3FN).item() == 1.0
    assert torch.isnan(y[2]) and bits32(y[3:]).tolist() == [-(2**31)]
    assert round_to(x[2:3], E5M2, saturate=False).item() == INF
    assert round_to(x[2:3], E5M2).item() == E5M2.max_value


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_equal_their_float32_values(seeded, dtype):
    x = (torch.randn(5000) * 100).to(dtype)
    for fmt in (E4M3FN, E5M2, e8m(3)):
        assert_bitwise_equal(round_to(x, fmt), round_to(x.float(), fmt), f"{dtype} {fmt.name}")


def test_shapes_and_input_validation():
    x = torch.randn(4, 6).t()  # non-contiguous
    assert_bitwise_equal(round_to(x, E4M3FN), round_to(x.contiguous(), E4M3FN), "non-contiguous")
    assert round_to(torch.empty(0, 3), E5M2).shape == (0, 3)
    assert round_to(torch.tensor(0.3), E4M3FN).shape == ()
    with pytest.raises(ValueError, match="mode"):
        round_to(x, E4M3FN, mode="nearest")
    with pytest.raises(ValueError, match="subnormals"):
        round_to(x, E4M3FN, subnormals="ftz")
    with pytest.raises(TypeError, match="saturate"):
        round_to(x, E4M3FN, saturate=1)
    with pytest.raises(TypeError, match="fmt: expected a FloatFormat"):
        round_to(x, torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        round_to(torch.tensor([1, 2]), E4M3FN)
    with pytest.raises(ValueError, match="impl"):
        round_to(x, E4M3FN, impl="cuda")


# --- Triton --------------------------------------------------------------------------------


def triton_inputs(fmt: FloatFormat, n: int = 2500) -> torch.Tensor:
    return torch.cat(
        [
            random_patterns(n),
            torch.randn(n) * fmt.max_value / 4,
            torch.randn(n // 2) * fmt.min_normal,
            edge_values(fmt),
            grid_inputs(E4M3FN),
        ]
    )


@pytest.mark.parametrize("fmt", [*TORCH_FORMATS, FP32, *OTHER_FORMATS], ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ["rne", "trunc"])
def test_triton_bitwise_equals_reference(seeded, nan_poison, fmt, mode):
    x = triton_inputs(fmt)
    for subnormals in ("keep", "flush"):
        for saturate in (True, False):
            ref = round_to_reference(x, fmt, mode, subnormals, saturate)
            out = round_to(x, fmt, mode, subnormals, saturate, impl="triton")
            assert_bitwise_equal(out, ref, f"{fmt.name} {mode} {subnormals} sat={saturate}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_inputs(seeded, dtype):
    x = (torch.randn(3000) * 300).to(dtype)
    for fmt in (E4M3FN, E5M2):
        assert_bitwise_equal(round_to(x, fmt, impl="triton"), round_to_reference(x, fmt), "half")
    assert_bitwise_equal(
        to_codes(x, E4M3FN, impl="triton"), x.to(torch.float8_e4m3fn).view(torch.uint8), "codes"
    )


def test_triton_dispatch():
    x = torch.randn(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32/float16/bfloat16"):
        round_to(x, E4M3FN, impl="triton")
    # auto on CPU tensors runs the reference (also for float64).
    assert_bitwise_equal(round_to(x, E4M3FN), round_to_reference(x, E4M3FN), "auto")
    assert round_to(torch.empty(0), E4M3FN, impl="triton").shape == (0,)


def test_triton_field_helpers(seeded, monkeypatch):
    """The @triton.jit helpers L-Mul reuses: split float32 into fields, reassemble, and add two
    31-bit magnitudes in uint32 without the int32 overflow."""
    import triton
    import triton.language as tl

    from paperbricks.core_kernels.float_bits import _triton as ft

    # A jit function resolves names through its module's globals, not the enclosing scope.
    monkeypatch.setitem(globals(), "ft", ft)

    @triton.jit
    def _fields_kernel(X, Y, S, E, M, SUM, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        u = ft.fp32_to_bits(tl.load(X + offs, mask=mask, other=0.0))
        s, e, m = ft.fp32_fields(u)
        tl.store(S + offs, s.to(tl.int32), mask=mask)
        tl.store(E + offs, e.to(tl.int32), mask=mask)
        tl.store(M + offs, m.to(tl.int32), mask=mask)
        tl.store(Y + offs, ft.bits_to_fp32(ft.fp32_from_fields(s, e, m)), mask=mask)
        mag = u & 0x7FFFFFFF
        tl.store(SUM + offs, ((mag + mag) >> 1).to(tl.int32), mask=mask)

    x = torch.cat([random_patterns(1500), torch.tensor([3.0e38, -0.0, 1e-45])])
    x = x[~torch.isnan(x)]
    n = x.numel()
    y = torch.empty_like(x)
    s, e, m, tot = (torch.empty(n, dtype=torch.int32) for _ in range(4))
    _fields_kernel[(triton.cdiv(n, 512),)](x, y, s, e, m, tot, n, BLOCK=512)
    u = bits32(x).to(torch.int64) & 0xFFFFFFFF
    assert torch.equal(s.long(), u >> 31)
    assert torch.equal(e.long(), (u >> 23) & 0xFF)
    assert torch.equal(m.long(), u & 0x7FFFFF)
    assert_bitwise_equal(y, x, "fp32_from_fields(fp32_fields(x))")
    assert torch.equal(tot.long(), u & 0x7FFFFFFF)  # (2·mag) >> 1 survives only in uint32


# --- GPU ------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("fmt", [*TORCH_FORMATS, FP32, *OTHER_FORMATS], ids=lambda f: f.name)
def test_gpu_triton_equals_reference_and_torch(seeded, fmt):
    x = torch.cat([random_patterns(1 << 22, "cuda"), triton_inputs(fmt).cuda()])
    for mode in ("rne", "trunc"):
        for subnormals in ("keep", "flush"):
            for saturate in (True, False):
                ref = round_to_reference(x.cpu(), fmt, mode, subnormals, saturate)
                out = round_to(x, fmt, mode, subnormals, saturate)  # auto -> Triton on CUDA
                assert out.is_cuda
                assert_bitwise_equal(out.cpu(), ref, f"{fmt.name} {mode} {subnormals} {saturate}")
    if fmt.torch_dtype is not None and fmt != FP32:
        ours = to_codes(x, fmt, saturate=TORCH_SATURATE[fmt])
        theirs = x.to(fmt.torch_dtype).view(ours.dtype)
        nan = torch.isnan(x)
        assert_bitwise_equal(ours[~nan].cpu(), theirs[~nan].cpu(), f"CUDA torch {fmt.name} cast")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_half_inputs(seeded, dtype):
    x = (torch.randn(1 << 20, device="cuda") * 300).to(dtype)
    for fmt in (E4M3FN, E5M2, e8m(3)):
        out = round_to(x, fmt, impl="triton")
        assert_bitwise_equal(out.cpu(), round_to_reference(x.cpu(), fmt), f"{dtype} {fmt.name}")
    ours = to_codes(x, E4M3FN)
    assert_bitwise_equal(ours.cpu(), x.to(torch.float8_e4m3fn).view(torch.uint8).cpu(), "codes")

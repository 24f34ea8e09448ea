"""Integer-arithmetic reference for rounding to, and encoding in, a :class:`FloatFormat`.

Everything works on the bit patterns of the source floats held in int64 (float32 patterns are
zero-extended, so sums of two 31-bit fields cannot overflow). Rounding a non-negative finite
magnitude ``a`` (its bit pattern, sign cleared) to a format with M mantissa bits uses the fact that
patterns are monotone in value. With the source's W fraction bits and bias B_src, source exponent
field ``E`` (``E_eff = max(E, 1)``) and target ``emin = 1 − bias``, the target grid spacing in
pattern units is ``2^k`` with

    k = (W − M) + max(0, emin − (E_eff − B_src))                                     (1)

For ``k <= W`` the grid points are exactly the patterns whose low k bits are zero (the implicit
leading bit ``2^W`` is itself a grid point), so round-to-nearest-even is

    lo = a mod 2^k,  base = a − lo,  up = lo > 2^(k−1) or (lo = 2^(k−1) and r odd)
    rounded = base + up · 2^k                                                        (2)

where r, the kept significand, has the parity of ``base / 2^k`` for k < W; at k = W the kept
bit is the implicit leading bit (odd for normal sources, even for subnormal ones), and a carry out of the fraction bits correctly bumps the exponent. For ``k > W`` the magnitude is
below the smallest target subnormal ``2^(emin − M)``: the result is that subnormal when the
significand ``s`` exceeds half of it (``s > 2^(k−1)``, ties go to the even zero), else zero.
Truncation drops ``lo``. Overflow, subnormal flushing, Inf and NaN follow the policies of
:func:`round_to_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .formats import FloatFormat

__all__ = [
    "code_dtype",
    "compose_reference",
    "decompose_reference",
    "format_constants",
    "fp32_bits",
    "fp32_from_bits",
    "from_codes_reference",
    "round_to_reference",
    "to_codes_reference",
]

MODES = ("rne", "trunc")
SUBNORMALS = ("keep", "flush")
FP32_NAN = 0x7FC00000
FP32_INF = 0x7F800000
FP32_SIGN = 0x80000000


@dataclass(frozen=True)
class _Source:
    """Layout of a source float type's bit pattern."""

    frac_bits: int  # W
    bias: int  # B_src
    exp_bits: int

    def pattern(self, exp: int, frac: int) -> int:
        """Pattern of the finite number 2^exp · (1 + frac/2^W), or a subnormal if exp < emin."""
        biased = exp + self.bias
        if biased >= 1:
            return (biased << self.frac_bits) | frac
        return ((1 << self.frac_bits) | frac) >> (1 - biased)

    @property
    def inf(self) -> int:
        return ((1 << self.exp_bits) - 1) << self.frac_bits

    @property
    def qnan(self) -> int:
        return self.inf | (1 << (self.frac_bits - 1))


_FP32 = _Source(23, 127, 8)
_FP64 = _Source(52, 1023, 11)


def format_constants(fmt: FloatFormat, src: _Source = _FP32) -> dict[str, int]:
    """Bit patterns of ``fmt``'s landmarks in the source layout (float32 by default).

    Returns ``{"max_bits", "min_normal_bits", "min_sub_bits"}``: the patterns of the largest
    finite value, the smallest normal and the smallest subnormal, the constexpr arguments of the
    Triton helper ``round_fp32_magnitude``.
    """
    shift = src.frac_bits - fmt.man_bits
    return {
        "max_bits": src.pattern(fmt.emax, fmt.max_man_at_top << shift),
        "min_normal_bits": src.pattern(fmt.emin, 0),
        "min_sub_bits": src.pattern(fmt.emin - fmt.man_bits, 0),
    }


def _check_policy(mode: str, subnormals: str, saturate: bool) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if subnormals not in SUBNORMALS:
        raise ValueError(f"subnormals: expected one of {SUBNORMALS}, got {subnormals!r}")
    if not isinstance(saturate, bool):
        raise TypeError(f"saturate: expected a bool, got {type(saturate).__name__}")


def _round_magnitude(
    a: torch.Tensor, fmt: FloatFormat, src: _Source, trunc: bool, flush: bool, saturate: bool
) -> torch.Tensor:
    """Round non-negative magnitude patterns ``a`` (int64, sign cleared) to ``fmt``; see (1), (2)."""
    c = format_constants(fmt, src)
    w = src.frac_bits
    e_eff = (a >> w).clamp(min=1)
    k = (w - fmt.man_bits) + (fmt.emin - (e_eff - src.bias)).clamp(min=0)  # (1)
    one = torch.ones_like(a)

    ks = k.clamp(max=w)
    step = one << ks
    lo = a & (step - 1)
    base = a - lo
    if trunc:
        rounded = base
    else:
        half = step >> 1
        # Parity of the rounded significand's last kept bit. At k = W that bit is the implicit
        # leading 1 (set for normal sources), not the exponent field's low bit the pattern shows.
        odd = torch.where(ks == w, (a >> w) > 0, ((base >> ks) & 1) == 1)
        up = (lo > half) | ((lo == half) & odd & (ks > 0))  # (2)
        rounded = base + up.to(a.dtype) * step

    # Below the smallest subnormal: 0, or that subnormal when more than half of it (RNE).
    if not trunc:
        frac = a & ((1 << w) - 1)
        s = torch.where((a >> w) > 0, frac | (1 << w), frac)
        kk = k.clamp(min=1, max=w + 2)
        tiny_up = s > (one << (kk - 1))
        tiny = torch.where(tiny_up, c["min_sub_bits"], 0)
    else:
        tiny = torch.zeros_like(a)
    rounded = torch.where(k > w, tiny, rounded)

    if flush:
        rounded = torch.where(rounded < c["min_normal_bits"], 0, rounded)
    # Overflow: saturate, or IEEE (RNE -> Inf, or NaN without Inf; truncation -> max finite).
    over = c["max_bits"] if saturate or trunc else src.inf if fmt.has_inf else src.qnan
    rounded = torch.where(rounded > c["max_bits"], over, rounded)

    # Specials: NaN stays NaN; Inf stays Inf where encodable, else saturates (or becomes NaN).
    inf_out = src.inf if fmt.has_inf else c["max_bits"] if saturate else src.qnan
    rounded = torch.where(a == src.inf, inf_out, rounded)
    return torch.where(a > src.inf, src.qnan, rounded)


def round_to_reference(
    x: torch.Tensor,
    fmt: FloatFormat,
    mode: str = "rne",
    subnormals: str = "keep",
    saturate: bool = True,
) -> torch.Tensor:
    """Round ``x`` to the nearest value of ``fmt`` (integer arithmetic); returned as float32.

    Policies (see :func:`paperbricks.core_kernels.float_bits.round_to` for the full contract):
    ``mode="rne"`` rounds to nearest, ties to even; ``"trunc"`` rounds toward zero. Finite values
    past ``fmt.max_value`` become ±max when ``saturate`` (and always under ``"trunc"``), else ±Inf
    (±NaN in finite formats). ±Inf stays ±Inf in IEEE-style formats; in finite formats it becomes
    ±max when ``saturate``, else NaN. NaN becomes the canonical quiet float32 NaN with x's sign.
    ``subnormals="flush"`` turns results below ``fmt.min_normal`` into zeros of the same sign.

    float16/bfloat16/float32 inputs are exact in float32; float64 inputs are rounded from their
    own float64 bits (one rounding, no double rounding through float32).

    Args:
        x: floating tensor, any shape.
        fmt: the target format.
        mode: ``"rne"`` or ``"trunc"``.
        subnormals: ``"keep"`` or ``"flush"``.
        saturate: clamp finite overflow to ±max (and Inf to ±max in finite formats).

    Returns:
        float32 tensor of x's shape holding values representable in ``fmt``.
    """
    _check_policy(mode, subnormals, saturate)
    trunc, flush = mode == "trunc", subnormals == "flush"
    if x.dtype == torch.float64:
        bits = x.contiguous().view(torch.int64)
        neg = bits < 0
        mag = _round_magnitude(bits & 0x7FFF_FFFF_FFFF_FFFF, fmt, _FP64, trunc, flush, saturate)
        y = torch.where(neg, mag | -(1 << 63), mag).view(torch.float64).to(torch.float32)
        # Re-canonicalise NaN in the float32 layout so both paths give identical bits.
        return torch.where(torch.isnan(y), torch.where(neg, -_nan32(), _nan32()), y)
    u = x.to(torch.float32).contiguous().view(torch.int32).to(torch.int64) & 0xFFFF_FFFF
    sign = u & FP32_SIGN
    mag = _round_magnitude(u & 0x7FFF_FFFF, fmt, _FP32, trunc, flush, saturate)
    return fp32_from_bits(mag | sign)


def _nan32() -> torch.Tensor:
    return torch.tensor(float("nan"), dtype=torch.float32)


def fp32_from_bits(u: torch.Tensor) -> torch.Tensor:
    """float32 tensor from float32 bit patterns held zero-extended in int64 (0..2^32−1).

    The inverse of :func:`fp32_bits`; the torch twin of the Triton helper ``bits_to_fp32``.
    """
    return torch.where(u >= 1 << 31, u - (1 << 32), u).to(torch.int32).view(torch.float32)


def fp32_bits(x: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns of ``x`` (converted to float32 first), zero-extended into int64.

    Fields are ``u >> 31`` (sign), ``(u >> 23) & 0xFF`` (biased exponent) and ``u & 0x7FFFFF``
    (mantissa); int64 leaves room to add two 31-bit magnitudes without overflow. The torch twin
    of the Triton helpers ``fp32_to_bits`` and ``fp32_fields``.
    """
    return x.to(torch.float32).contiguous().view(torch.int32).to(torch.int64) & 0xFFFF_FFFF


def _fields_of_representable(x: torch.Tensor, fmt: FloatFormat) -> tuple[torch.Tensor, ...]:
    """(sign, exponent field, mantissa field) int64 of float32 values assumed exact in ``fmt``."""
    u = fp32_bits(x)  # (...) int64
    sign = u >> 31
    a = u & 0x7FFF_FFFF
    e32 = a >> 23
    frac = a & 0x7F_FFFF
    s = torch.where(e32 > 0, frac | (1 << 23), frac)  # significand, value = s · 2^(E_eff − 150)
    exp_unb = e32.clamp(min=1) - 127
    normal = (e32 > 0) & (exp_unb >= fmt.emin)
    exp_field = torch.where(normal, exp_unb + fmt.bias, 0)
    man_normal = frac >> (23 - fmt.man_bits)
    sub_shift = (23 - fmt.man_bits) + (fmt.emin - exp_unb)  # > 23 - M in the subnormal range
    man_sub = s >> sub_shift.clamp(max=31)
    man = torch.where(normal, man_normal, man_sub)
    man = torch.where(a == 0, 0, man)
    exp_field = torch.where(a == 0, 0, exp_field)
    # Specials.
    nan_man = (1 << fmt.man_bits) - 1 if fmt.finite else 1 << (fmt.man_bits - 1)
    is_inf = a == FP32_INF
    is_nan = a > FP32_INF
    exp_field = torch.where(is_inf | is_nan, fmt.exp_all_ones, exp_field)
    man = torch.where(is_inf, 0, torch.where(is_nan, nan_man, man))
    return sign, exp_field, man


def decompose_reference(
    x: torch.Tensor, fmt: FloatFormat
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fields (sign, exponent field, mantissa field) as int32 of values exactly representable in
    ``fmt`` (checked: raises ``ValueError`` otherwise). NaN decomposes to the canonical NaN code
    (mantissa MSB set in IEEE-style formats, all ones in finite formats)."""
    back = round_to_reference(x, fmt, saturate=False)
    exact = (back == x) | (torch.isnan(back) & torch.isnan(x))
    if not bool(exact.all()):
        bad = int((~exact).sum())
        first = x[~exact].flatten()[0].item()
        raise ValueError(
            f"x: {bad} of {x.numel()} values are not representable in {fmt.name} "
            f"(first: {first!r}); round them with round_to first"
        )
    return tuple(f.to(torch.int32) for f in _fields_of_representable(back, fmt))  # type: ignore[return-value]


def compose_reference(
    sign: torch.Tensor, exponent: torch.Tensor, mantissa: torch.Tensor, fmt: FloatFormat
) -> torch.Tensor:
    """float32 values of the codes given by their fields (integer tensors, broadcastable).

    ``value = (-1)^s · 2^(e − bias) · (1 + m/2^M)`` for ``e >= 1``, ``(-1)^s · 2^emin · m/2^M`` for
    ``e = 0``; the all-ones exponent decodes per the format's Inf/NaN encoding.
    """
    for name, t, hi in (
        ("sign", sign, 1),
        ("exponent", exponent, fmt.exp_all_ones),
        ("mantissa", mantissa, (1 << fmt.man_bits) - 1),
    ):
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor, got {_describe(t)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > hi):
            raise ValueError(
                f"{name}: expected values in [0, {hi}] for {fmt.name}, got range "
                f"[{int(t.min())}, {int(t.max())}]"
            )
    s, e, m = torch.broadcast_tensors(sign.long(), exponent.long(), mantissa.long())
    shift = 23 - fmt.man_bits
    # Normal codes: rebias the exponent into float32's field, widen the mantissa.
    normal = ((e - fmt.bias + 127) << 23) | (m << shift)
    # Subnormal codes: m · 2^(emin − M). int -> float32 is exact (m < 2^23), so m's own float32
    # pattern carries its leading-bit position; rescale that exponent, or build the float32
    # subnormal directly when the result falls below float32's normal range.
    q = fmt.emin - fmt.man_bits
    m_bits = fp32_bits(m.to(torch.float32))
    lead = (m_bits >> 23) - 127  # floor(log2 m) for m > 0
    sub_normal32 = m_bits + (q << 23)
    sub_tiny32 = m << (q + 149)  # q >= -149: emin >= -126 and M <= 23
    sub = torch.where(lead + q >= -126, sub_normal32, sub_tiny32)
    sub = torch.where(m == 0, 0, sub)
    mag = torch.where(e == 0, sub, normal)
    top = e == fmt.exp_all_ones
    if fmt.finite:
        mag = torch.where(top & (m == (1 << fmt.man_bits) - 1), FP32_NAN, mag)
    else:
        mag = torch.where(top, torch.where(m == 0, FP32_INF, FP32_NAN), mag)
    return fp32_from_bits(mag | (s << 31))


def code_dtype(fmt: FloatFormat) -> torch.dtype:
    """Storage dtype of codes: uint8 up to 8 bits, int16 up to 16, int32 up to 32 (bit patterns)."""
    return torch.uint8 if fmt.bits <= 8 else torch.int16 if fmt.bits <= 16 else torch.int32


def to_codes_reference(rounded: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Codes of float32 values already representable in ``fmt`` (no check; see ``to_codes``)."""
    s, e, m = _fields_of_representable(rounded, fmt)
    code = (s << (fmt.bits - 1)) | (e << fmt.man_bits) | m  # (...) int64 in [0, 2^bits)
    dtype = code_dtype(fmt)
    width = torch.iinfo(dtype).bits
    if dtype != torch.uint8 and fmt.bits == width:
        code = torch.where(code >= 1 << (width - 1), code - (1 << width), code)
    return code.to(dtype)


def from_codes_reference(codes: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """float32 values of integer codes (validated to lie in ``[0, 2^bits)`` or, for a dtype exactly
    ``bits`` wide, taken as bit patterns)."""
    if (
        not isinstance(codes, torch.Tensor)
        or codes.dtype.is_floating_point
        or codes.dtype
        in (
            torch.bool,
            torch.complex64,
            torch.complex128,
        )
    ):
        raise TypeError(f"codes: expected an integer tensor, got {_describe(codes)}")
    c = codes.to(torch.int64)
    if torch.iinfo(codes.dtype).bits == fmt.bits:
        c = c & ((1 << fmt.bits) - 1)
    elif c.numel() and (int(c.min()) < 0 or int(c.max()) >= 1 << fmt.bits):
        raise ValueError(
            f"codes: expected values in [0, {(1 << fmt.bits) - 1}] for the {fmt.bits}-bit format "
            f"{fmt.name}, got range [{int(c.min())}, {int(c.max())}]"
        )
    m = c & ((1 << fmt.man_bits) - 1)
    e = (c >> fmt.man_bits) & fmt.exp_all_ones
    s = c >> (fmt.bits - 1)
    return compose_reference(s, e, m, fmt)


def _describe(t: object) -> str:
    if isinstance(t, torch.Tensor):
        return f"a {t.dtype} tensor"
    return type(t).__name__

"""L-Mul and L-Matmul in plain PyTorch integer arithmetic: the specification (arXiv 2410.00907, §3).

L-Mul replaces a float multiply by an integer add of the operands' (exponent‖mantissa) fields.
For ``x = (−1)^{s_x}(1 + x_m)·2^{x_e}`` with m mantissa bits (paper Eq. (4) with the offset
schedule of its Eq. (5))::

    L-Mul(x, y) = (−1)^{s_x ⊕ s_y} · (1 + x_m + y_m + 2^{−l(m)}) · 2^{x_e + y_e}           (1)
    l(m) = m (m ≤ 3),  3 (m = 4),  4 (m > 4)                                            (2)

The exact product has ``x_m·y_m`` where (1) has the constant ``2^{−l}``. In bit form (default
``semantics="bits"``), with ``C = (bias ≪ m) − 2^{m−l}``::

    field(L-Mul) = field(x) + field(y) − C,   sign = s_x ⊕ s_y                           (3)

Eq. (3) differs from Eq. (1) when ``S = x_m + y_m + 2^{−l} > 1``: the integer carry gives
``2^{e+1}·S`` (Mitchell's log multiply) while Eq. (1) gives ``2^{e}·(1 + S)``
(``semantics="equation"``); at ``S = 1`` both give ``2^{e+1}``. For k ≥ 5 the offset can push
``S`` to ``[2, 2 + 2^{−l})``: the field sum then carries twice and "bits" gives
``2^{e+2}·(S − 1)``. Both semantics are exposed; "bits" is what integer hardware computes.

**Emulation.** Values of a container dtype (float32, bfloat16, float16) are first rounded to k
mantissa bits in the container's exponent range (format ``E{E}M{k}``, i.e. core-kernels
``e8m(k)`` for float32/bfloat16 containers; truncation or RNE, subnormals flushed), then (3) is
evaluated on their float32 bit patterns with ``C₃₂ = (127 ≪ 23) − 2^{23−l(k)}``, in int64. As
``l(k) ≤ k``, the offset is a multiple of the k-bit grid, so the result has k mantissa bits and is
exact in the container: this equals native k-bit integer hardware wherever the result is in the
format's range (checked exhaustively against :func:`lmul_codes`, an independent implementation
on real fp8/fp16/bf16 codes). The "equation" result can need k + 1 bits; it is exact for
k < the container's mantissa and rounded once (RNE) to the container at full width.

**Special values** (package policy; IEEE-style containers):

- a zero operand gives a zero with the XOR sign; subnormal operands are flushed to signed zero
  first (as under DAZ), so ``Inf × subnormal`` is NaN like ``Inf × 0``;
- underflow: a result whose exponent is below the format's smallest normal (field sum
  ``< C + 2^m``; this includes the field sum ``≤ C``) gives a signed zero;
- overflow: a result whose exponent exceeds the format's largest gives ±Inf (for finite "FN"
  formats in :func:`lmul_codes`: ± the format's largest finite value);
- NaN in either operand, or ``Inf × 0``, gives the canonical quiet NaN (0x7FC00000, sign +);
  ``Inf × nonzero`` gives ±Inf.

**L-Matmul.** ``C_ij = Σ_k L-Mul(a_ik, b_kj)``; the operands are rounded once, products are formed
in bounded chunks, and the sum runs **in sequence over k** (``acc ← fl(acc + p_k)`` from +0),
which is also the order of the Triton kernel, so the two agree bit for bit. With a FloatFormat
accumulator every partial sum is rounded to it (RNE; finite formats saturate, IEEE ones overflow
to ±Inf, like torch's casts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paperbricks.core_kernels.float_bits import FloatFormat, fp32_bits, fp32_from_bits, round_to

from .config import CONTAINERS, DEFAULT_CHUNK_SIZE

__all__ = [
    "LMulPlan",
    "lmul_codes",
    "lmul_constant",
    "lmul_fp32_bits",
    "lmul_matmul_reference",
    "lmul_reference",
    "make_plan",
    "offset_bits",
    "round_operand",
    "to_container",
]

FP32_SIGN = 0x8000_0000
FP32_MAG = 0x7FFF_FFFF
FP32_MANT = 0x7F_FFFF
FP32_INF = 0x7F80_0000
FP32_NAN = 0x7FC0_0000


def offset_bits(m: int) -> int:
    """The offset exponent l(m) of Eq. (2): m for m ≤ 3, 3 for m = 4, 4 for m > 4.

    Args:
        m: mantissa width, an int >= 1.

    Examples:
        >>> [offset_bits(m) for m in (1, 2, 3, 4, 5, 23)]
        [1, 2, 3, 3, 4, 4]
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m: expected an int >= 1 (mantissa bits), got {m!r}")
    return m if m <= 3 else 3 if m == 4 else 4


def lmul_constant(fmt: FloatFormat) -> int:
    """The bit-form constant ``C = (bias ≪ m) − 2^{m − l(m)}`` of Eq. (3) for a format.

    Examples:
        >>> from paperbricks.core_kernels.float_bits import E4M3FN, E5M2, BF16, FP32
        >>> [hex(lmul_constant(f)) for f in (FP32, BF16)], lmul_constant(E4M3FN), lmul_constant(E5M2)
        (['0x3f780000', '0x3f78'], 55, 59)
    """
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt: expected a core-kernels FloatFormat, got {type(fmt).__name__}")
    m = fmt.man_bits
    return (fmt.bias << m) - (1 << (m - offset_bits(m)))  # type: ignore[operator]


@dataclass(frozen=True)
class LMulPlan:
    """Constants of one L-Mul setting on float32 bit patterns (shared with the Triton kernels).

    ``fmt`` is the emulated operand format ``E{E_container}M{k}`` (bias of the container);
    ``c32`` the float32-pattern constant ``(127 ≪ 23) − 2^{23−l(k)}``; results with pattern
    ``< lo`` underflow and ``>= hi`` overflow; ``mc_shift = 23 − container mantissa`` is where the
    container's last mantissa bit sits (for the "equation" halving).
    """

    container: FloatFormat
    fmt: FloatFormat
    k: int
    l: int
    semantics: str
    c32: int
    offset32: int
    lo: int
    hi: int
    mc_shift: int


def make_plan(container: FloatFormat, k: int, semantics: str) -> LMulPlan:
    """Build the :class:`LMulPlan` for a container format, k mantissa bits and a semantics."""
    fmt = FloatFormat(container.exp_bits, k, bias=container.bias, name=f"E{container.exp_bits}M{k}")
    l = offset_bits(k)
    offset32 = 1 << (23 - l)
    return LMulPlan(
        container=container,
        fmt=fmt,
        k=k,
        l=l,
        semantics=semantics,
        c32=(127 << 23) - offset32,
        offset32=offset32,
        lo=(fmt.emin + 127) << 23,
        hi=(fmt.emax + 128) << 23,
        mc_shift=23 - container.man_bits,
    )


def round_operand(
    x: torch.Tensor, plan: LMulPlan, rounding: str, impl: str = "reference"
) -> torch.Tensor:
    """x rounded to the plan's k-bit format (``rounding`` = "trunc"/"rne"), subnormals flushed.

    Overflow follows IEEE (RNE past the largest value gives ±Inf, truncation gives ±max); NaN
    becomes the canonical NaN. Returns float32 of x's shape.
    """
    return round_to(x, plan.fmt, mode=rounding, subnormals="flush", saturate=False, impl=impl)


def lmul_fp32_bits(ux: torch.Tensor, uy: torch.Tensor, plan: LMulPlan) -> torch.Tensor:
    """Eq. (3) on zero-extended float32 patterns (int64) of already-rounded operands.

    Args:
        ux, uy: int64 tensors (broadcastable) of float32 patterns in ``[0, 2^32)`` whose values
            are in ``plan.fmt`` (see :func:`round_operand`).
        plan: the :class:`LMulPlan`.

    Returns:
        int64 float32 patterns of the L-Mul results (broadcast shape).
    """
    sign = (ux ^ uy) & FP32_SIGN
    ax, ay = ux & FP32_MAG, uy & FP32_MAG
    r = ax + ay - plan.c32  # int64: no overflow (each magnitude < 2^31)
    if plan.semantics == "equation":
        # S >= 1: Eq. (1) keeps 2^e(1+S) = 2^(e+1)·(1 + (S−1)/2) with 1 + S in [2, 4), so the
        # exponent is e + 1 (the integer sum carries once, or twice when S >= 2) and the
        # mantissa is (S−1)/2. The halving drops a bit only at full container width, where it is
        # rounded to nearest even.
        msum = (ax & FP32_MANT) + (ay & FP32_MANT) + plan.offset32  # 2^23·S
        carry = msum >= 1 << 23
        q = (msum - (1 << 23)) >> plan.mc_shift  # (S−1) in container mantissa units
        half = (q >> 1) + (q & (q >> 1) & 1)
        e1 = (ax >> 23) + (ay >> 23) + 1 - 127  # biased exponent field of 2^(e+1)
        r = torch.where(carry, e1 * (1 << 23) + (half << plan.mc_shift), r)
    r = torch.where(r < plan.lo, 0, r)  # underflow -> ±0
    r = torch.where(r >= plan.hi, FP32_INF, r)  # overflow -> ±Inf
    zero = (ax == 0) | (ay == 0)
    inf = (ax == FP32_INF) | (ay == FP32_INF)
    nan = (ax > FP32_INF) | (ay > FP32_INF) | (inf & zero)
    r = torch.where(zero, 0, r)
    r = torch.where(inf, FP32_INF, r)
    return torch.where(nan, FP32_NAN, r | sign)


def _container(dtype: torch.dtype) -> FloatFormat:
    return CONTAINERS[dtype]


#: Canonical quiet NaN bit patterns (as int16) of the 16-bit containers, matching lmul_codes.
_NAN16 = {torch.bfloat16: 0x7FC0, torch.float16: 0x7E00}


def to_container(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast float32/float64 results to the container dtype (RNE) with a canonical NaN.

    torch's float32 -> bfloat16 cast turns NaN into 0xFFFF on some builds; every path of this
    package goes through here so that NaNs have the same bits everywhere (0x7FC0 / 0x7E00).
    """
    if dtype == torch.float32:
        return out.to(dtype)
    nan = torch.tensor(_NAN16[dtype], dtype=torch.int16, device=out.device).view(dtype)
    return torch.where(torch.isnan(out), nan, out.to(dtype))


def lmul_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mantissa_bits: int | None = None,
    semantics: str = "bits",
    operand_rounding: str = "trunc",
) -> torch.Tensor:
    """Element-wise L-Mul (Eqs. (1)–(3)), broadcasting like ``torch.mul``; no input validation.

    Args:
        x, y: float32/bfloat16/float16 tensors of one dtype, broadcastable.
        mantissa_bits: k (default: the container's mantissa width).
        semantics: ``"bits"`` or ``"equation"``.
        operand_rounding: ``"trunc"`` or ``"rne"``.

    Returns:
        Tensor of the broadcast shape in x's dtype.
    """
    container = _container(x.dtype)
    k = container.man_bits if mantissa_bits is None else mantissa_bits
    plan = make_plan(container, k, semantics)
    xr = round_operand(x, plan, operand_rounding)  # (...) float32 on the k-bit grid
    yr = round_operand(y, plan, operand_rounding)
    out = fp32_from_bits(lmul_fp32_bits(fp32_bits(xr), fp32_bits(yr), plan))
    return to_container(out, x.dtype)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _accumulate_step(
    acc: torch.Tensor, p: torch.Tensor, accumulate: torch.dtype | FloatFormat
) -> torch.Tensor:
    """One step ``acc ← fl(acc + p)`` in the accumulation precision."""
    if isinstance(accumulate, FloatFormat):
        # Round like torch's cast to the format would: finite formats saturate.
        return round_to(
            acc + p, accumulate, mode="rne", saturate=accumulate.finite, impl="reference"
        )
    return acc + p.to(acc.dtype)


def lmul_matmul_reference(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    mantissa_bits: int | None = None,
    semantics: str = "bits",
    operand_rounding: str = "trunc",
    accumulate: torch.dtype | FloatFormat = torch.float32,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """``C = A ⊛ B`` with every product an L-Mul, summed in sequence over k; no validation.

    At most ``max(chunk_size, N)`` products are materialised at once (as int64 patterns).

    Args:
        a: (Bt, M, K) float32/bfloat16/float16.
        b: (Bt, K, N), same dtype.
        mantissa_bits, semantics, operand_rounding: as for :func:`lmul_reference`.
        accumulate: torch.float32, torch.float64 or a FloatFormat (every partial sum rounded).
        chunk_size: bound on the materialised products.

    Returns:
        (Bt, M, N) in a's dtype.
    """
    container = _container(a.dtype)
    k_bits = container.man_bits if mantissa_bits is None else mantissa_bits
    plan = make_plan(container, k_bits, semantics)
    bt, m, kk = a.shape
    n = b.shape[-1]
    ua = fp32_bits(round_operand(a, plan, operand_rounding))  # (Bt, M, K) int64
    ub = fp32_bits(round_operand(b, plan, operand_rounding))  # (Bt, K, N) int64
    acc_dtype = torch.float64 if accumulate == torch.float64 else torch.float32
    out = torch.zeros(bt, m, n, dtype=acc_dtype, device=a.device)  # (Bt, M, N)
    # Chunk K first (keeping M and the batch whole) so the sequential loop is as short as can be.
    kc = max(1, min(kk, chunk_size // max(1, bt * m * n)))
    mc = max(1, min(m, chunk_size // max(1, bt * kc * n)))
    bc = max(1, min(bt, chunk_size // max(1, mc * kc * n)))
    for b0, b1 in _chunks(bt, bc):
        for m0, m1 in _chunks(m, mc):
            acc = out[b0:b1, m0:m1]  # (bc, mc, N) view, updated in place below
            for k0, k1 in _chunks(kk, kc):
                pa = ua[b0:b1, m0:m1, k0:k1].transpose(1, 2)[..., None]  # (bc, kc, mc, 1)
                pb = ub[b0:b1, k0:k1, None, :]  # (bc, kc, 1, N)
                p = fp32_from_bits(lmul_fp32_bits(pa, pb, plan))  # (bc, kc, mc, N)
                # A defined summation order (sequential over k) is what makes the Triton
                # kernel bit-identical to this reference; torch.sum's order is unspecified.
                for j in range(k1 - k0):
                    acc = _accumulate_step(acc, p[:, j], accumulate)
            out[b0:b1, m0:m1] = acc
    return to_container(out, a.dtype)


def lmul_codes(x_codes: torch.Tensor, y_codes: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """L-Mul ("bits" semantics, Eq. (3)) directly on the integer codes of a real format.

    An implementation independent of the float32-container emulation, used as its oracle: the
    fields of the codes themselves are added with ``C = lmul_constant(fmt)``, with the format's
    own exponent range. Special values as in the module docstring; overflow gives ±Inf for
    IEEE-style formats and ± the largest finite code for finite ("FN") formats.

    Args:
        x_codes, y_codes: integer tensors of codes (broadcastable), in ``[0, 2^bits)`` or, for a
            dtype exactly ``fmt.bits`` wide (int16 for FP16/BF16), bit patterns; e.g. from
            core-kernels ``to_codes``/``all_codes``.
        fmt: the format (at most 16 bits), e.g. ``E4M3FN``, ``E5M2``, ``FP16``, ``BF16``.

    Returns:
        Codes of the results in core-kernels' code dtype (uint8 for 8-bit formats, int16 bit
        patterns for 16-bit ones).

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.float_bits import E4M3FN, from_codes, to_codes
        >>> one = to_codes(torch.tensor([1.0]), E4M3FN)
        >>> from_codes(lmul_codes(one, one, E4M3FN), E4M3FN)
        tensor([1.1250])
    """
    if not isinstance(fmt, FloatFormat) or fmt.bits > 16:
        raise ValueError(f"fmt: expected a FloatFormat of at most 16 bits, got {fmt!r}")
    for name, c in (("x_codes", x_codes), ("y_codes", y_codes)):
        if not isinstance(c, torch.Tensor) or c.dtype.is_floating_point or c.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor of codes, got {c!r:.60}")
    m, nb = fmt.man_bits, fmt.bits
    full = (1 << nb) - 1
    mag_mask = full >> 1
    cx, cy = x_codes.to(torch.int64) & full, y_codes.to(torch.int64) & full
    sign = ((cx ^ cy) >> (nb - 1)) & 1
    ax, ay = cx & mag_mask, cy & mag_mask
    inf_mag = fmt.exp_all_ones << m
    max_mag = (fmt.max_exp_field << m) | fmt.max_man_at_top
    if fmt.finite:
        nan_x, nan_y = ax == mag_mask, ay == mag_mask
        inf_x = inf_y = torch.zeros_like(nan_x)
        nan_mag = mag_mask
    else:
        nan_x, nan_y = ax > inf_mag, ay > inf_mag
        inf_x, inf_y = ax == inf_mag, ay == inf_mag
        nan_mag = inf_mag | (1 << (m - 1))
    zero_x, zero_y = (ax >> m) == 0, (ay >> m) == 0  # zeros and (flushed) subnormals
    r = ax + ay - lmul_constant(fmt)  # the field sum, int64
    r = torch.where(r < 1 << m, 0, r)  # result exponent field < 1: underflow -> ±0
    r = torch.where(r > max_mag, max_mag if fmt.finite else inf_mag, r)  # overflow
    zero, inf = zero_x | zero_y, inf_x | inf_y
    r = torch.where(zero, 0, r)
    r = torch.where(inf, inf_mag, r)
    nan = nan_x | nan_y | (inf & zero)
    code = torch.where(nan, nan_mag, r | (sign << (nb - 1)))
    if nb <= 8:
        return code.to(torch.uint8)
    if nb == 16:
        code = torch.where(code >= 1 << 15, code - (1 << 16), code)
    return code.to(torch.int16)

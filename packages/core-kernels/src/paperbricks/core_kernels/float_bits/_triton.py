"""Triton form of ``round_to`` and reusable ``@triton.jit`` helpers for float32 bit fields.

Import this module lazily (from inside a function): it imports triton at its top.

Helpers (all elementwise, for use inside other kernels; L-Mul builds on them):

- :func:`fp32_to_bits` / :func:`bits_to_fp32`: bitcasts float32 <-> uint32.
- :func:`fp32_fields`: ``(sign, exponent, mantissa)`` uint32 fields of a float32 pattern
  (1, 8 and 23 bits; exponent biased by 127, mantissa without the implicit bit).
- :func:`fp32_from_fields`: the inverse, ``sign << 31 | exponent << 23 | mantissa``.
- :func:`round_fp32_magnitude`: round a sign-cleared float32 pattern to a format (equations (1)
  and (2) of ``reference.py``), with the overflow/subnormal/Inf/NaN policies as constexpr flags.

All field arithmetic is on uint32: a float32 magnitude is 31 bits, so adding two of them (as
L-Mul does) needs the unsigned range (or int64), never int32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .formats import FloatFormat
from .reference import format_constants

BLOCK = 1024


@triton.jit
def fp32_to_bits(x):
    """Bit pattern (uint32) of a float32 tensor."""
    return x.to(tl.uint32, bitcast=True)


@triton.jit
def bits_to_fp32(u):
    """float32 tensor of uint32 bit patterns."""
    return u.to(tl.float32, bitcast=True)


@triton.jit
def fp32_fields(u):
    """Split uint32 float32 patterns into (sign 0/1, biased exponent 0..255, mantissa 0..2^23−1)."""
    sign = u >> 31
    exponent = (u >> 23) & 0xFF
    mantissa = u & 0x7FFFFF
    return sign, exponent, mantissa


@triton.jit
def fp32_from_fields(sign, exponent, mantissa):
    """Reassemble uint32 float32 patterns from fields (no range checks: fields must fit)."""
    return (sign << 31) | (exponent << 23) | mantissa


@triton.jit
def round_fp32_magnitude(
    a,
    MAN_BITS: tl.constexpr,
    EMIN: tl.constexpr,
    MAX_BITS: tl.constexpr,
    MIN_NORMAL_BITS: tl.constexpr,
    MIN_SUB_BITS: tl.constexpr,
    TRUNC: tl.constexpr,
    FLUSH: tl.constexpr,
    SATURATE: tl.constexpr,
    HAS_INF: tl.constexpr,
):
    """Round sign-cleared uint32 float32 patterns ``a`` to a format; returns uint32 patterns.

    ``MAN_BITS`` and ``EMIN`` describe the format; ``MAX_BITS``, ``MIN_NORMAL_BITS`` and
    ``MIN_SUB_BITS`` are the float32 patterns of its largest finite value, smallest normal and
    smallest subnormal (``reference.format_constants``). NaN comes back as 0x7FC00000.
    """
    one = tl.full(a.shape, 1, tl.uint32)
    zero = tl.zeros(a.shape, tl.uint32)
    e_eff = tl.maximum((a >> 23).to(tl.int32), 1)
    # (1): grid spacing 2^k in pattern units.
    k = (23 - MAN_BITS) + tl.maximum(EMIN + 127 - e_eff, 0)
    ks = tl.minimum(k, 23).to(tl.uint32)
    step = one << ks
    lo = a & (step - 1)
    base = a - lo
    if TRUNC:
        rounded = base
        tiny = zero
    else:
        half = step >> 1
        # At k = 23 the last kept bit is the implicit leading 1, not the exponent's low bit.
        odd = tl.where(ks == 23, (a >> 23) > 0, ((base >> ks) & 1) == 1)
        up = (lo > half) | ((lo == half) & odd & (ks > 0))  # (2)
        rounded = tl.where(up, base + step, base)
        # Below the smallest subnormal: that subnormal if more than half of it, else zero.
        frac = a & 0x7FFFFF
        s = tl.where((a >> 23) > 0, frac | 0x800000, frac)
        kk = tl.minimum(tl.maximum(k, 1), 25).to(tl.uint32)
        tiny = tl.where(s > (one << (kk - 1)), zero + MIN_SUB_BITS, zero)
    rounded = tl.where(k > 23, tiny, rounded)
    if FLUSH:
        rounded = tl.where(rounded < MIN_NORMAL_BITS, zero, rounded)
    if SATURATE or TRUNC:
        over = zero + MAX_BITS
    elif HAS_INF:
        over = zero + 0x7F800000
    else:
        over = zero + 0x7FC00000
    rounded = tl.where(rounded > MAX_BITS, over, rounded)
    if HAS_INF:
        inf_out = zero + 0x7F800000
    elif SATURATE:
        inf_out = zero + MAX_BITS
    else:
        inf_out = zero + 0x7FC00000
    rounded = tl.where(a == 0x7F800000, inf_out, rounded)
    return tl.where(a > 0x7F800000, zero + 0x7FC00000, rounded)


@triton.jit
def _round_to_fwd_kernel(
    X,
    Y,
    n,
    MAN_BITS: tl.constexpr,
    EMIN: tl.constexpr,
    MAX_BITS: tl.constexpr,
    MIN_NORMAL_BITS: tl.constexpr,
    MIN_SUB_BITS: tl.constexpr,
    TRUNC: tl.constexpr,
    FLUSH: tl.constexpr,
    SATURATE: tl.constexpr,
    HAS_INF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    u = fp32_to_bits(x)
    sign = u & 0x80000000
    mag = round_fp32_magnitude(
        u & 0x7FFFFFFF,
        MAN_BITS,
        EMIN,
        MAX_BITS,
        MIN_NORMAL_BITS,
        MIN_SUB_BITS,
        TRUNC,
        FLUSH,
        SATURATE,
        HAS_INF,
    )
    tl.store(Y + offs, bits_to_fp32(mag | sign), mask=mask)


def round_to_triton(
    x: torch.Tensor, fmt: FloatFormat, mode: str, subnormals: str, saturate: bool
) -> torch.Tensor:
    """Launch :func:`_round_to_fwd_kernel` (inputs validated by ``ops.round_to``)."""
    xc = x.contiguous()
    y = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    n = xc.numel()
    if n == 0:
        return y
    c = format_constants(fmt)
    _round_to_fwd_kernel[(triton.cdiv(n, BLOCK),)](
        xc,
        y,
        n,
        MAN_BITS=fmt.man_bits,
        EMIN=fmt.emin,
        MAX_BITS=c["max_bits"],
        MIN_NORMAL_BITS=c["min_normal_bits"],
        MIN_SUB_BITS=c["min_sub_bits"],
        TRUNC=mode == "trunc",
        FLUSH=subnormals == "flush",
        SATURATE=saturate,
        HAS_INF=fmt.has_inf,
        BLOCK=BLOCK,
    )
    return y

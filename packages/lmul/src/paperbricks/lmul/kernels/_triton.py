"""Triton kernels for L-Mul (arXiv 2410.00907, Eq. (3)) and L-Matmul.

Import lazily (from :mod:`paperbricks.lmul.kernels`): this module imports triton at its top.

- :func:`lmul_bits`: the ``@triton.jit`` core on uint32 float32 patterns — XOR the signs, add the
  magnitudes (``< 2^32``, so uint32 never wraps), subtract ``C₃₂``; the "equation" mantissa
  halving; underflow/overflow/zero/Inf/NaN exactly as ``reference.lmul_fp32_bits``.
- ``_lmul_fwd_kernel``: element-wise; loads the container dtype, rounds each operand to k mantissa
  bits with core-kernels' ``round_fp32_magnitude`` (fused), applies :func:`lmul_bits`.
- ``_lmul_matmul_fwd_kernel``: one program per (BM, BN) output tile and batch entry. For each k it
  loads a column of A and a row of B (already rounded to k bits), forms the (BM, BN) tile of
  integer field sums in registers, bitcasts it to float32 and adds it to the fp32 accumulator
  (optionally rounding the accumulator to a FloatFormat after every add).

What differs from the obvious tiled design (a BM×BK×BN broadcast-add reduced with ``tl.sum`` over
BK): ``tl.sum``'s reduction order is unspecified and differs between the interpreter and GPUs,
so its float32 sums could not be bit-identical to any reference. The k loop here adds the
products in sequence, the order the torch reference defines, so the two agree bit for bit on
every device; the per-k operand loads hit L1/L2 after the first touch of each cache line.

Both kernels write float32; the cast to a bfloat16/float16 container happens once in torch (the
values are exact in the container, and torch's NaN conversion is then the same on every path).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from paperbricks.core_kernels.devices import triton_interpreted
from paperbricks.core_kernels.float_bits import FloatFormat
from paperbricks.core_kernels.float_bits._triton import round_fp32_magnitude
from paperbricks.core_kernels.float_bits.reference import format_constants

from ..config import CONTAINERS
from ..reference import LMulPlan, make_plan, round_operand, to_container

BLOCK = 1024
MAX_GRID_Z = 65535


@triton.jit
def lmul_bits(
    ux,
    uy,
    C32: tl.constexpr,
    OFFSET32: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    MC_SHIFT: tl.constexpr,
    EQUATION: tl.constexpr,
):
    """L-Mul of uint32 float32 patterns (broadcastable) of operands already on the k-bit grid."""
    sign = (ux ^ uy) & 0x80000000
    ax = ux & 0x7FFFFFFF
    ay = uy & 0x7FFFFFFF
    s = ax + ay  # both < 2^31: no uint32 wrap
    r = s - C32  # wraps when s < C32; such results underflow and are replaced below
    under = s < C32 + LO
    if EQUATION:
        # S >= 1: exponent e + 1, mantissa (S − 1)/2 (see reference.lmul_fp32_bits). t is that
        # result plus 127 << 23, so that nothing wraps before the underflow test.
        msum = (ax & 0x7FFFFF) + (ay & 0x7FFFFF) + OFFSET32
        carry = msum >= 0x800000
        q = (msum - 0x800000) >> MC_SHIFT
        half = (q >> 1) + (q & (q >> 1) & 1)  # RNE of the dropped bit (nonzero only at full width)
        t = (((ax >> 23) + (ay >> 23) + 1) << 23) + (half << MC_SHIFT)
        under = tl.where(carry, t < (127 << 23) + LO, under)
        r = tl.where(carry, t - (127 << 23), r)
    zero_u = r & 0
    r = tl.where(under, zero_u, r)  # underflow -> ±0
    r = tl.where(r >= HI, zero_u + 0x7F800000, r)  # overflow -> ±Inf
    is_zero = (ax == 0) | (ay == 0)
    is_inf = (ax == 0x7F800000) | (ay == 0x7F800000)
    is_nan = (ax > 0x7F800000) | (ay > 0x7F800000) | (is_inf & is_zero)
    r = tl.where(is_zero, zero_u, r)
    r = tl.where(is_inf, zero_u + 0x7F800000, r)
    return tl.where(is_nan, zero_u + 0x7FC00000, r | sign)


@triton.jit
def _lmul_fwd_kernel(
    X,
    Y,
    OUT,
    n,
    C32: tl.constexpr,
    OFFSET32: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    MC_SHIFT: tl.constexpr,
    EQUATION: tl.constexpr,
    MAN_BITS: tl.constexpr,
    EMIN: tl.constexpr,
    MAX_BITS: tl.constexpr,
    MIN_NORMAL_BITS: tl.constexpr,
    MIN_SUB_BITS: tl.constexpr,
    TRUNC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ux = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32).to(tl.uint32, bitcast=True)
    uy = tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32).to(tl.uint32, bitcast=True)
    # Operand rounding to k bits (subnormals flushed, IEEE overflow), as reference.round_operand.
    mx = round_fp32_magnitude(
        ux & 0x7FFFFFFF, MAN_BITS, EMIN, MAX_BITS, MIN_NORMAL_BITS, MIN_SUB_BITS,
        TRUNC, True, False, True,
    )  # fmt: skip
    my = round_fp32_magnitude(
        uy & 0x7FFFFFFF, MAN_BITS, EMIN, MAX_BITS, MIN_NORMAL_BITS, MIN_SUB_BITS,
        TRUNC, True, False, True,
    )  # fmt: skip
    r = lmul_bits(
        (ux & 0x80000000) | mx, (uy & 0x80000000) | my, C32, OFFSET32, LO, HI, MC_SHIFT, EQUATION
    )
    tl.store(OUT + offs, r.to(tl.float32, bitcast=True), mask=mask)


@triton.jit
def _lmul_matmul_fwd_kernel(
    A,
    B,
    C,
    M,
    N,
    K,
    stride_ab,
    stride_am,
    stride_ak,
    stride_bb,
    stride_bk,
    stride_bn,
    stride_cb,
    stride_cm,
    stride_cn,
    C32: tl.constexpr,
    OFFSET32: tl.constexpr,
    LO: tl.constexpr,
    HI: tl.constexpr,
    MC_SHIFT: tl.constexpr,
    EQUATION: tl.constexpr,
    ACC_ROUND: tl.constexpr,
    ACC_MAN_BITS: tl.constexpr,
    ACC_EMIN: tl.constexpr,
    ACC_MAX_BITS: tl.constexpr,
    ACC_MIN_NORMAL_BITS: tl.constexpr,
    ACC_MIN_SUB_BITS: tl.constexpr,
    ACC_SATURATE: tl.constexpr,
    ACC_HAS_INF: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BM + tl.arange(0, BM)  # (BM,)
    offs_n = pid_n * BN + tl.arange(0, BN)  # (BN,)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = A + pid_b * stride_ab + offs_m.to(tl.int64) * stride_am  # (BM,) column k = 0
    b_ptrs = B + pid_b * stride_bb + offs_n.to(tl.int64) * stride_bn  # (BN,) row k = 0
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K):
        ua = tl.load(a_ptrs + k * stride_ak, mask=mask_m, other=0.0).to(tl.uint32, bitcast=True)
        ub = tl.load(b_ptrs + k * stride_bk, mask=mask_n, other=0.0).to(tl.uint32, bitcast=True)
        p = lmul_bits(ua[:, None], ub[None, :], C32, OFFSET32, LO, HI, MC_SHIFT, EQUATION)
        acc = acc + p.to(tl.float32, bitcast=True)  # (BM, BN), in sequence over k
        if ACC_ROUND:
            u = acc.to(tl.uint32, bitcast=True)
            mag = round_fp32_magnitude(
                u & 0x7FFFFFFF, ACC_MAN_BITS, ACC_EMIN, ACC_MAX_BITS, ACC_MIN_NORMAL_BITS,
                ACC_MIN_SUB_BITS, False, False, ACC_SATURATE, ACC_HAS_INF,
            )  # fmt: skip
            acc = ((u & 0x80000000) | mag).to(tl.float32, bitcast=True)
    c_ptrs = (
        C
        + pid_b * stride_cb
        + offs_m.to(tl.int64)[:, None] * stride_cm
        + offs_n.to(tl.int64)[None, :] * stride_cn
    )
    tl.store(c_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])


def _plan_args(plan: LMulPlan) -> dict[str, object]:
    return {
        "C32": plan.c32,
        "OFFSET32": plan.offset32,
        "LO": plan.lo,
        "HI": plan.hi,
        "MC_SHIFT": plan.mc_shift,
        "EQUATION": plan.semantics == "equation",
    }


def lmul_fwd(
    x: torch.Tensor, y: torch.Tensor, k: int, semantics: str, rounding: str
) -> torch.Tensor:
    """Launch ``_lmul_fwd_kernel`` on the broadcast operands; returns x's dtype."""
    shape = torch.broadcast_shapes(x.shape, y.shape)
    xc = x.expand(shape).contiguous()
    yc = y.expand(shape).contiguous()
    out = torch.empty(shape, dtype=torch.float32, device=x.device)
    n = out.numel()
    if n:
        plan = make_plan(CONTAINERS[x.dtype], k, semantics)
        c = format_constants(plan.fmt)
        _lmul_fwd_kernel[(triton.cdiv(n, BLOCK),)](
            xc,
            yc,
            out,
            n,
            **_plan_args(plan),
            MAN_BITS=plan.fmt.man_bits,
            EMIN=plan.fmt.emin,
            MAX_BITS=c["max_bits"],
            MIN_NORMAL_BITS=c["min_normal_bits"],
            MIN_SUB_BITS=c["min_sub_bits"],
            TRUNC=rounding == "trunc",
            BLOCK=BLOCK,
        )
    return to_container(out, x.dtype)


def _block_sizes() -> tuple[int, int, int]:
    """(BM, BN, num_warps): 32×32 in the interpreter (fewer programs; masks still exercised), 64×64 on GPU."""
    if triton_interpreted():
        return 32, 32, 1
    return 64, 64, 4


def lmul_matmul_fwd(
    a: torch.Tensor,
    b: torch.Tensor,
    k: int,
    semantics: str,
    rounding: str,
    accumulate: torch.dtype | FloatFormat,
) -> torch.Tensor:
    """Launch ``_lmul_matmul_fwd_kernel``: (Bt, M, K) × (Bt, K, N) -> (Bt, M, N) in a's dtype."""
    plan = make_plan(CONTAINERS[a.dtype], k, semantics)
    # A is rounded into a (Bt, K, M) buffer so that the per-k column loads are contiguous.
    at = round_operand(a.transpose(1, 2), plan, rounding, impl="triton")  # (Bt, K, M) float32
    br = round_operand(b, plan, rounding, impl="triton")  # (Bt, K, N) float32 on the k-bit grid
    ar = at.transpose(1, 2)  # (Bt, M, K) view
    bt, m = ar.shape[:2]
    n = br.shape[-1]
    out = torch.empty(bt, m, n, dtype=torch.float32, device=a.device)
    if out.numel() == 0:
        return to_container(out, a.dtype)
    for b0 in range(0, bt, MAX_GRID_Z):  # CUDA caps the grid's z dimension
        b1 = min(bt, b0 + MAX_GRID_Z)
        _launch_matmul(ar[b0:b1], br[b0:b1], out[b0:b1], plan, accumulate)
    return to_container(out, a.dtype)


def _launch_matmul(
    ar: torch.Tensor,
    br: torch.Tensor,
    out: torch.Tensor,
    plan: LMulPlan,
    accumulate: torch.dtype | FloatFormat,
) -> None:
    bt, m, kk = ar.shape
    n = br.shape[-1]
    acc_round = isinstance(accumulate, FloatFormat)
    acc_fmt = accumulate if acc_round else CONTAINERS[torch.float32]
    c = format_constants(acc_fmt)  # type: ignore[arg-type]
    bm, bn, warps = _block_sizes()
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn), bt)
    _lmul_matmul_fwd_kernel[grid](
        ar,
        br,
        out,
        m,
        n,
        kk,
        *ar.stride(),
        *br.stride(),
        *out.stride(),
        **_plan_args(plan),
        ACC_ROUND=acc_round,
        ACC_MAN_BITS=acc_fmt.man_bits,  # type: ignore[union-attr]
        ACC_EMIN=acc_fmt.emin,  # type: ignore[union-attr]
        ACC_MAX_BITS=c["max_bits"],
        ACC_MIN_NORMAL_BITS=c["min_normal_bits"],
        ACC_MIN_SUB_BITS=c["min_sub_bits"],
        ACC_SATURATE=bool(acc_round and acc_fmt.finite),  # type: ignore[union-attr]
        ACC_HAS_INF=acc_fmt.has_inf,  # type: ignore[union-attr]
        BM=bm,
        BN=bn,
        num_warps=warps,
    )

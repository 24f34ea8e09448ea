"""Triton kernels of ``quant``. Import lazily (only from inside functions): this imports triton."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rounding: adding and subtracting 12582912.0 (1.5 · 2^23) rounds an fp32 of magnitude < 2^22 to
# the nearest integer, ties to even (the FPU's default mode), which is torch.round's rule.
# libdevice.rint is not available in the interpreter, so the kernels use this instead.


@triton.jit(do_not_specialize=["D"])
def _rms_norm_quant_fwd_kernel(
    X,  # (N, D) input, any float dtype
    W,  # (D,) RMSNorm weight
    INV_S,  # (1,) float32, 1 / scale
    Q,  # (N, D) int8 codes (out)
    Y,  # (N, D) normed output in X's dtype (out; unused unless HAS_Y)
    stride_xn,
    stride_qn,
    stride_yn,
    D,
    eps,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    HAS_Y: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_xn
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for off in range(0, D, BLOCK_D):
        cols = off + tl.arange(0, BLOCK_D)
        x = tl.load(x_row + cols, mask=cols < D, other=0.0).to(tl.float32)
        acc += x * x
    ms = tl.div_rn(tl.sum(acc, axis=0), D.to(tl.float32))
    r = tl.div_rn(1.0, tl.sqrt_rn(ms + eps))  # correctly rounded, like the torch reference
    inv = tl.load(INV_S)
    for off in range(0, D, BLOCK_D):
        cols = off + tl.arange(0, BLOCK_D)
        m = cols < D
        x = tl.load(x_row + cols, mask=m, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        y = x * r * w
        if HAS_Y:
            tl.store(Y + row * stride_yn + cols, y.to(Y.dtype.element_ty), mask=m)
        u = tl.minimum(tl.maximum(y * inv, QMIN), QMAX)  # clamp first: keeps |u| < 2^22
        q = (u + 12582912.0) - 12582912.0  # round half to even
        tl.store(Q + row * stride_qn + cols, q.to(tl.int8), mask=m)


def rms_norm_quant_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    inv_scale: torch.Tensor,
    eps: float,
    return_normed: bool,
    qmin: int = -128,
    qmax: int = 127,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the fused kernel on ``x`` ``(N, D)`` (last dim contiguous) and ``weight`` ``(D,)``."""
    n, d = x.shape
    q = torch.empty((n, d), dtype=torch.int8, device=x.device)
    y = torch.empty((n, d), dtype=x.dtype, device=x.device) if return_normed else None
    block = min(triton.next_power_of_2(d), 8192)
    num_warps = 4 if block <= 1024 else (8 if block <= 4096 else 16)
    if n > 0:
        _rms_norm_quant_fwd_kernel[(n,)](
            x,
            weight,
            inv_scale,
            q,
            y if y is not None else q,
            x.stride(0),
            q.stride(0),
            y.stride(0) if y is not None else 0,
            d,
            float(eps),
            QMIN=qmin,
            QMAX=qmax,
            HAS_Y=y is not None,
            BLOCK_D=block,
            num_warps=num_warps,
        )
    return q, y


@triton.jit
def _w8a8_matmul_fwd_kernel(
    A,  # (M, K) int8 activation codes
    W,  # (N, K) int8 weight codes (nn.Linear layout)
    SA,  # (M,) float32 per-token scales (stride 0: one per-tensor scale)
    SW,  # (N,) float32 per-channel scales (stride 0: one per-tensor scale)
    C,  # (M, N) output, float dtype
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_wn,
    stride_wk,
    stride_sa,
    stride_sw,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped tile order (rows of tiles share W tiles in L2), as in the Triton matmul tutorial.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = A + rm[:, None].to(tl.int64) * stride_am + rk[None, :] * stride_ak  # (BM, BK)
    w_ptrs = W + rn[None, :].to(tl.int64) * stride_wn + rk[:, None] * stride_wk  # (BK, BN)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + rk) < K
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & k_ok[None, :], other=0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & (rn[None, :] < N), other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)  # exact int8 x int8 -> int32
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk
    sa = tl.load(SA + rm * stride_sa, mask=rm < M, other=0.0)
    sw = tl.load(SW + rn * stride_sw, mask=rn < N, other=0.0)
    out = acc.to(tl.float32) * sa[:, None] * sw[None, :]  # same order as the reference
    c_ptrs = C + rm[:, None].to(tl.int64) * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, out.to(C.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def w8a8_matmul_triton(
    a: torch.Tensor,
    w: torch.Tensor,
    sa: torch.Tensor,
    sw: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``(a @ w.T) · sa · sw`` for int8 ``a (M, K)``, ``w (N, K)``; ``sa``/``sw`` float32 of
    ``M``/``N`` elements, or 1 element each (broadcast with stride 0)."""
    m, k = a.shape
    n = w.shape[0]
    c = torch.empty((m, n), dtype=out_dtype, device=a.device)
    if m == 0 or n == 0:
        return c
    if a.device.type == "cpu":  # the interpreter
        bm, bn, bk, warps, stages = 16, 16, 32, 4, 1  # small tiles: the interpreter is slow
    else:
        bm = 128 if m >= 128 else max(16, triton.next_power_of_2(m))
        bn = 128 if n >= 128 else max(16, triton.next_power_of_2(n))
        bk, warps, stages = 64 if k >= 64 else 32, 8 if bm * bn >= 128 * 128 else 4, 3
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _w8a8_matmul_fwd_kernel[grid](
        a,
        w,
        sa,
        sw,
        c,
        m,
        n,
        k,
        a.stride(0),
        a.stride(1),
        w.stride(0),
        w.stride(1),
        0 if sa.numel() == 1 else sa.stride(0),
        0 if sw.numel() == 1 else sw.stride(0),
        c.stride(0),
        c.stride(1),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_M=8,
        num_warps=warps,
        num_stages=stages,
    )
    return c


@triton.jit
def _quantize_kv_fwd_kernel(
    X,  # (OUTER, H, INNER) contiguous input, any float dtype
    INV_S,  # (H,) float32, 1 / scale per head
    Z,  # (H,) float32 zero points (integers)
    Q,  # (OUTER, H, INNER) codes (out), int8 or uint8
    H,
    INNER,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # one (outer, head) row
    head = row % H
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < INNER
    inv = tl.load(INV_S + head)
    z = tl.load(Z + head)
    x = tl.load(X + row * INNER + cols, mask=m, other=0.0).to(tl.float32)
    # clamp(round(u) + z, qmin, qmax) = round(clamp(u, qmin - z, qmax - z)) + z for integer z
    u = tl.minimum(tl.maximum(x * inv, QMIN - z), QMAX - z)
    q = ((u + 12582912.0) - 12582912.0) + z
    tl.store(Q + row * INNER + cols, q.to(Q.dtype.element_ty), mask=m)


def quantize_kv_triton(
    x: torch.Tensor,
    inv_scale: torch.Tensor,
    zero: torch.Tensor,
    qmin: int,
    qmax: int,
    code_dtype: torch.dtype,
) -> torch.Tensor:
    """Per-head static quantization of a contiguous ``x`` viewed as ``(OUTER, H, INNER)``."""
    outer, h, inner = x.shape
    q = torch.empty((outer, h, inner), dtype=code_dtype, device=x.device)
    if x.numel() == 0:
        return q
    block = min(triton.next_power_of_2(inner), 4096)
    grid = (outer * h, triton.cdiv(inner, block))
    _quantize_kv_fwd_kernel[grid](
        x, inv_scale, zero, q, h, inner, QMIN=qmin, QMAX=qmax, BLOCK=block, num_warps=4
    )
    return q

"""Triton kernels of ``quant``. Import lazily (only from inside functions): this imports triton."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rounding: adding and subtracting 12582912.0 (1.5 · 2^23) rounds an fp32 of magnitude < 2^22 to
# the nearest integer, ties to even (the FPU's default mode), which is torch.round's rule.
# libdevice.rint is not available in the interpreter, so the kernels use this instead.


@triton.jit
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

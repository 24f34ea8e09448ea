"""Triton RMSNorm: fused forward (with the optional residual add) and backward.

Import this module lazily (from inside a function): it imports triton at its top.

Forward, one program per row (the whole row sits in one block of ``BLOCK >= D`` lanes):

    h = x + residual (rounded to the input dtype, stored)      [HAS_RESIDUAL]
    r = 1 / sqrt(mean(h²) + eps)   (float32, stored per row for the backward)
    y = h · r ⊙ w

Backward, with x̂ = h · r and g = dy ⊙ w:

    dh = r · (g − x̂ · mean(g ⊙ x̂))  (+ the incoming gradient of the returned h)
    dw = Σ_rows dy ⊙ x̂

Each backward program walks a contiguous chunk of rows and accumulates its part of dw in float32
registers; the (programs, D) partial sums are added up by torch afterwards.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: The largest last dimension the fused kernels take (one row must fit one block).
MAX_FUSED_D = 16384
#: Input dtypes the kernels take (float64 goes to the reference).
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _rms_norm_fwd_kernel(
    X,
    R,
    W,
    Y,
    H,
    RSTD,
    stride_x,
    stride_r,
    stride_y,
    stride_h,
    n_cols,
    eps,
    HAS_WEIGHT: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        # Round the sum to the storage dtype first, so the norm sees exactly the stored residual.
        h = (x + r).to(H.dtype.element_ty)
        tl.store(H + row * stride_h + cols, h, mask=mask)
        x = h.to(tl.float32)
    mean_sq = tl.sum(x * x, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(mean_sq + eps)
    tl.store(RSTD + row, rstd)
    y = x * rstd
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        y = y * w
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_kernel(
    DY,
    DH,
    H,
    W,
    RSTD,
    DX,
    DW_PARTIAL,
    stride_dy,
    stride_dh,
    stride_h,
    stride_dx,
    n_rows,
    n_cols,
    rows_per_program,
    HAS_WEIGHT: tl.constexpr,
    HAS_DRES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
    # Pointers advance row by row from a 64-bit start offset, so N·D > 2³¹ cannot overflow.
    start = row_start.to(tl.int64)
    h_ptr = H + start * stride_h
    dy_ptr = DY + start * stride_dy
    dh_ptr = DH + start * stride_dh
    dx_ptr = DX + start * stride_dx
    for row in range(row_start, row_end):
        h = tl.load(h_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        xhat = h * rstd
        if HAS_WEIGHT:
            g = dy * w
            dw_acc += dy * xhat
        else:
            g = dy
        c = tl.sum(g * xhat, axis=0) / n_cols
        dx = (g - xhat * c) * rstd
        if HAS_DRES:
            dx += tl.load(dh_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=mask)
        h_ptr += stride_h
        dy_ptr += stride_dy
        dh_ptr += stride_dh
        dx_ptr += stride_dx
    if HAS_WEIGHT:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw_acc, mask=mask)


def _launch_config(n_cols: int) -> tuple[int, int]:
    block = triton.next_power_of_2(n_cols)
    num_warps = min(16, max(1, block // 512))
    return block, num_warps


def rms_norm_fwd(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    residual: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Forward on contiguous (N, D) rows: returns ``(y, h or None, rstd (N,) float32)``."""
    n_rows, n_cols = x.shape
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else None
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows == 0:
        return y, h, rstd
    block, num_warps = _launch_config(n_cols)
    _rms_norm_fwd_kernel[(n_rows,)](
        x,
        residual if residual is not None else x,
        weight if weight is not None else x,
        y,
        h if h is not None else y,
        rstd,
        x.stride(0),
        residual.stride(0) if residual is not None else 0,
        y.stride(0),
        h.stride(0) if h is not None else 0,
        n_cols,
        eps,
        HAS_WEIGHT=weight is not None,
        HAS_RESIDUAL=residual is not None,
        BLOCK=block,
        num_warps=num_warps,
    )
    return y, h, rstd


def _num_bwd_programs(n_rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows, 4 * sms))
    # The CPU interpreter runs programs one after another; a few keep the dw reduction exercised.
    return max(1, min(n_rows, 4))


def rms_norm_bwd(
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    h: torch.Tensor,
    weight: torch.Tensor | None,
    rstd: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward on contiguous (N, D) rows: returns ``(dh_total, dweight or None)``."""
    n_rows, n_cols = h.shape
    dx = torch.empty_like(h)
    if n_rows == 0:
        dw = torch.zeros_like(weight) if weight is not None else None
        return dx, dw
    block, num_warps = _launch_config(n_cols)
    programs = _num_bwd_programs(n_rows, h.device)
    rows_per_program = triton.cdiv(n_rows, programs)
    programs = triton.cdiv(n_rows, rows_per_program)
    dw_partial = (
        torch.empty((programs, n_cols), dtype=torch.float32, device=h.device)
        if weight is not None
        else None
    )
    _rms_norm_bwd_kernel[(programs,)](
        dy,
        dh if dh is not None else dy,
        h,
        weight if weight is not None else h,
        rstd,
        dx,
        dw_partial if dw_partial is not None else rstd,
        dy.stride(0),
        dh.stride(0) if dh is not None else 0,
        h.stride(0),
        dx.stride(0),
        n_rows,
        n_cols,
        rows_per_program,
        HAS_WEIGHT=weight is not None,
        HAS_DRES=dh is not None,
        BLOCK=block,
        num_warps=num_warps,
    )
    dw = dw_partial.sum(dim=0).to(weight.dtype) if dw_partial is not None else None
    return dx, dw


class RMSNormFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels; inputs are (..., D), reshaped to rows here."""

    @staticmethod
    def forward(ctx, x, weight, residual, eps):  # type: ignore[override]
        shape = x.shape
        n_cols = shape[-1]
        x2 = x.reshape(-1, n_cols).contiguous()  # (N, D)
        r2 = residual.reshape(-1, n_cols).contiguous() if residual is not None else None
        w = weight.contiguous() if weight is not None else None
        y, h, rstd = rms_norm_fwd(x2, w, r2, eps)
        ctx.save_for_backward(h if h is not None else x2, w, rstd)
        ctx.shape = shape
        ctx.has_residual = residual is not None
        ctx.has_weight = weight is not None
        if h is None:
            return y.view(shape)
        return y.view(shape), h.view(shape)

    @staticmethod
    def backward(ctx, dy, dh=None):  # type: ignore[override]
        h2, w, rstd = ctx.saved_tensors
        shape = ctx.shape
        n_cols = shape[-1]
        dy2 = dy.reshape(-1, n_cols).contiguous()
        dh2 = dh.reshape(-1, n_cols).contiguous() if dh is not None else None
        dx, dw = rms_norm_bwd(dy2, dh2, h2, w if ctx.has_weight else None, rstd)
        dx = dx.view(shape)
        dres = None
        if ctx.has_residual and ctx.needs_input_grad[2]:
            # x and residual get the same gradient; separate storage so the .grad fields don't alias.
            dres = dx.clone() if ctx.needs_input_grad[0] else dx
        return dx, (dw if ctx.needs_input_grad[1] else None), dres, None

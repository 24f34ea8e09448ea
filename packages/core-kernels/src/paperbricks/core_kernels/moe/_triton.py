"""Triton kernels for the grouped (per-expert) GEMM. Imported lazily, never at package import.

Layout: ``x`` (M, K) holds the tokens sorted by expert; ``offsets`` (E,) int32 holds the
cumulative end row of each expert's block (``offsets[-1] == M``). Expert ``e`` owns rows
``[offsets[e-1], offsets[e])`` (``offsets[-1]`` read as 0 for ``e = 0``).

- :func:`_grouped_mm_fwd_kernel` computes ``y[rows of e] = x[rows of e] @ w[e]`` for every expert.
  The grid tiles the *whole* output (cdiv(M, BM), cdiv(N, BN)); a tile finds the experts its rows
  belong to by counting offsets on the device, then accumulates one masked product per expert
  that owns rows of the tile. Expert boundaries need not align with tiles, and no count ever
  travels to the host. The SWIGLU variant computes the gate tile (columns ``n``) and the up tile
  (columns ``n + I``) of ``w[e]`` (K, 2I) and stores ``silu(gate) * up`` (and, for the backward,
  the pre-activations).
- :func:`_grouped_mm_bwd_kernel` computes the weight gradient ``dw[e] = x[rows of e]ᵀ @ dy[rows of
  e]``; the loop bounds over rows are read from ``offsets`` on the device, and an expert with no
  rows stores zeros. The input gradient reuses the forward kernel with ``wᵀ`` (strides only).

Accumulation is float32; float32 inputs use ``input_precision="ieee"`` (no TF32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_blocks import tile_expert_range

__all__ = ["grouped_mm_dw_triton", "grouped_mm_triton"]


@triton.jit
def _grouped_mm_fwd_kernel(
    x_ptr,
    w_ptr,
    offs_ptr,
    y_ptr,
    h_ptr,
    M,
    K,
    N,
    E,
    stride_xm,
    stride_xk,
    stride_we,
    stride_wk,
    stride_wn,
    stride_ym,
    stride_yn,
    stride_hm,
    stride_hn,
    SWIGLU: tl.constexpr,
    STORE_H: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    row_ok = rows < M
    col_ok = cols < N
    first_row = pid_m * BLOCK_M
    e_lo, e_hi = tile_expert_range(
        offs_ptr, first_row, tl.minimum(first_row + BLOCK_M, M) - 1, E, BLOCK_E
    )
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    for e in range(e_lo, e_hi + 1):
        start = tl.load(offs_ptr + e - 1, mask=e > 0, other=0)
        end = tl.load(offs_ptr + e)
        in_e = (rows >= start) & (rows < end) & row_ok  # (BM,)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + ks
            k_ok = kk < K
            a = tl.load(
                x_ptr + rows[:, None] * stride_xm + kk[None, :] * stride_xk,
                mask=in_e[:, None] & k_ok[None, :],
                other=0.0,
            )  # (BM, BK)
            w_base = w_ptr + tl.cast(e, tl.int64) * stride_we + kk[:, None] * stride_wk
            b = tl.load(
                w_base + cols[None, :] * stride_wn, mask=k_ok[:, None] & col_ok[None, :], other=0.0
            )  # (BK, BN)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
            if SWIGLU:
                b_up = tl.load(
                    w_base + (cols[None, :] + N) * stride_wn,
                    mask=k_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )
                acc_up = tl.dot(a, b_up, acc_up, input_precision=PRECISION)
    out_mask = row_ok[:, None] & col_ok[None, :]
    if SWIGLU:
        if STORE_H:
            h_off = rows[:, None] * stride_hm + cols[None, :] * stride_hn
            tl.store(h_ptr + h_off, acc.to(h_ptr.dtype.element_ty), mask=out_mask)
            tl.store(
                h_ptr + h_off + N * stride_hn, acc_up.to(h_ptr.dtype.element_ty), mask=out_mask
            )
        out = acc * tl.sigmoid(acc) * acc_up
    else:
        out = acc
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
        out.to(y_ptr.dtype.element_ty),
        mask=out_mask,
    )


@triton.jit
def _grouped_mm_bwd_kernel(
    x_ptr,
    dy_ptr,
    offs_ptr,
    dw_ptr,
    K,
    N,
    stride_xm,
    stride_xk,
    stride_dym,
    stride_dyn,
    stride_dwe,
    stride_dwk,
    stride_dwn,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    e = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    kk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # (BK,)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    k_ok = kk < K
    col_ok = cols < N
    start = tl.load(offs_ptr + e - 1, mask=e > 0, other=0)
    end = tl.load(offs_ptr + e)
    ms = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + ms
        r_ok = rows < end
        xb = tl.load(
            x_ptr + rows[:, None] * stride_xm + kk[None, :] * stride_xk,
            mask=r_ok[:, None] & k_ok[None, :],
            other=0.0,
        )  # (BM, BK)
        g = tl.load(
            dy_ptr + rows[:, None] * stride_dym + cols[None, :] * stride_dyn,
            mask=r_ok[:, None] & col_ok[None, :],
            other=0.0,
        )  # (BM, BN)
        acc = tl.dot(tl.trans(xb), g, acc, input_precision=PRECISION)  # x_blockᵀ @ dy_block
    tl.store(
        dw_ptr
        + tl.cast(e, tl.int64) * stride_dwe
        + kk[:, None] * stride_dwk
        + cols[None, :] * stride_dwn,
        acc.to(dw_ptr.dtype.element_ty),
        mask=k_ok[:, None] & col_ok[None, :],
    )


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _stages(dtype: torch.dtype, interpreted: bool) -> dict[str, int]:
    if interpreted:
        return {}
    # fp32 tiles are twice as large: two pipeline stages keep them inside shared memory.
    return {"num_warps": 4, "num_stages": 2 if dtype == torch.float32 else 3}


def _blocks(m: int, n: int, k: int, dtype: torch.dtype, interpreted: bool) -> tuple[int, int, int]:
    if interpreted:
        return 16, 16, 16
    bm = 64 if m >= 64 else 32 if m >= 32 else 16
    bn_max = 64 if dtype == torch.float32 else 128  # fp32 tiles take twice the shared memory
    bn = bn_max if n >= bn_max else max(16, triton.next_power_of_2(n))
    bk = 64 if k >= 64 else max(16, triton.next_power_of_2(k))
    return bm, bn, bk


def grouped_mm_triton(
    x: torch.Tensor,
    w: torch.Tensor,
    offsets: torch.Tensor,
    *,
    swiglu: bool = False,
    store_h: bool = False,
    interpreted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the forward kernel. ``w`` is (E, K, N) with any strides (``wᵀ`` views work).

    Returns ``(y, h)``: ``y`` (M, N) or, with ``swiglu``, (M, N // 2) = silu(gate)·up; ``h`` is
    the (M, N) pre-activation when ``swiglu and store_h``, else None.
    """
    m, k = x.shape
    e, _, n_total = w.shape
    n = n_total // 2 if swiglu else n_total
    y = torch.empty((m, n), device=x.device, dtype=x.dtype)
    h = torch.empty((m, n_total), device=x.device, dtype=x.dtype) if (swiglu and store_h) else None
    if m == 0:
        return y, h
    bm, bn, bk = _blocks(m, n, k, x.dtype, interpreted)
    h_arg = h if h is not None else y
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _grouped_mm_fwd_kernel[grid](
        x,
        w,
        offsets,
        y,
        h_arg,
        m,
        k,
        n,
        e,
        x.stride(0),
        x.stride(1),
        w.stride(0),
        w.stride(1),
        w.stride(2),
        y.stride(0),
        y.stride(1),
        h_arg.stride(0),
        h_arg.stride(1),
        SWIGLU=swiglu,
        STORE_H=h is not None,
        PRECISION=_precision(x.dtype),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        BLOCK_E=max(16, triton.next_power_of_2(e)),
        **_stages(x.dtype, interpreted),
    )
    return y, h


def grouped_mm_dw_triton(
    x: torch.Tensor,
    dy: torch.Tensor,
    offsets: torch.Tensor,
    num_experts: int,
    *,
    interpreted: bool = False,
) -> torch.Tensor:
    """Weight gradient ``dw[e] = x_eᵀ dy_e`` (E, K, N) in ``x.dtype``; empty experts get zeros."""
    m, k = x.shape
    n = dy.shape[1]
    dw = torch.empty((num_experts, k, n), device=x.device, dtype=x.dtype)
    bm, bn, bk = _blocks(m, n, k, x.dtype, interpreted)
    bm = 16 if interpreted else 64
    grid = (num_experts, triton.cdiv(k, bk), triton.cdiv(n, bn))
    _grouped_mm_bwd_kernel[grid](
        x,
        dy,
        offsets,
        dw,
        k,
        n,
        x.stride(0),
        x.stride(1),
        dy.stride(0),
        dy.stride(1),
        dw.stride(0),
        dw.stride(1),
        dw.stride(2),
        PRECISION=_precision(x.dtype),
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        **_stages(x.dtype, interpreted),
    )
    return dw

"""Triton kernels of the fused "basis-in-the-K-loop" KAN GEMM. Imported lazily, never at import.

``y = Φ(u) @ Wᵀ`` with ``Φ(u)[n, j·G + g] = b_g(u[n, j])`` (spec §2, §7): the basis values are
computed in registers, tile by tile, inside the K loop of the GEMM, so the (N, in·G) basis matrix
never exists in memory (the eager FasterKAN writes and re-reads it, G× the activation memory).

Every kernel is *grouped*: ``u`` (M, in) holds tokens sorted by expert and ``offsets`` (E,) int32
the cumulative end row of each expert (core-kernels ``moe.permute`` layout, ``offsets[-1] == M``);
``w`` is (E, out, in·G). The single-layer op is the case E = 1, ``offsets = [M]``.

- :func:`_kan_gemm_fwd_kernel`: grid (M-tiles, out-tiles). A row tile finds its experts by counting
  offsets on the device (as core-kernels' grouped GEMM does), and for each expert, each block of
  BLOCK_J input features and each basis g it evaluates ``b_g`` on the (BM, BJ) tile of ``u`` and
  accumulates ``b_g(u) @ W[e][:, j·G + g]ᵀ`` (a (BJ, BN) strided slice of the weight).
- :func:`_kan_gemm_bwd_dx_kernel`: ``du[n, j] = Σ_g b'_g(u[n, j])·(dy @ W[e])[n, j·G + g]``, the
  inner GEMM over ``out`` done per g in registers.
- :func:`_kan_gemm_bwd_dw_kernel`: ``dW[e][o, j·G + g] = Σ_{n ∈ e} dy[n, o]·b_g(u[n, j])``, one
  program per (expert · row split, feature block · g, out block), recomputing the basis; the
  expert's rows are split into SPLIT chunks whose float32 partial sums the host adds (split-K
  without atomics, so the result is deterministic); empty experts store zeros.

Bases: 0 = RSWAF ``1 − tanh²(z)`` evaluated as ``4e/(1 + e)²`` with ``e = exp(−2|z|)`` (no
cancellation for large |z|), 1 = Gaussian RBF ``exp(−z²)``, ``z = (u − c_g)·inv_h``. The basis and
its derivative are computed in float32 (float64 for float64 inputs) and cast to the weight dtype
before the tensor-core product; accumulation is float32 (float64 for float64), float32 inputs use
``input_precision="ieee"`` (no TF32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from paperbricks.core_kernels.moe.triton_blocks import tile_expert_range

__all__ = ["BASIS_IDS", "kan_gemm_dw_triton", "kan_gemm_dx_triton", "kan_gemm_fwd_triton"]

BASIS_IDS = {"rswaf": 0, "rbf": 1}


@triton.jit
def _basis_and_slope(u, c, inv_h, BASIS: tl.constexpr, SLOPE: tl.constexpr):
    """b_g(u) and, when SLOPE, db_g/du, elementwise on a tile."""
    z = (u - c) * inv_h
    if BASIS == 0:
        ez = tl.exp(-2.0 * tl.abs(z))
        b = 4.0 * ez / ((1.0 + ez) * (1.0 + ez))  # sech²(z) = 1 − tanh²(z)
        if SLOPE:
            t = (1.0 - ez) / (1.0 + ez)
            t = tl.where(z < 0, -t, t)  # tanh(z)
            d = -2.0 * inv_h * t * b
        else:
            d = b
    else:
        b = tl.exp(-z * z)
        if SLOPE:  # noqa: SIM108 (constexpr branch)
            d = -2.0 * inv_h * z * b
        else:
            d = b
    return b, d


@triton.jit
def _kan_gemm_fwd_kernel(
    u_ptr,
    w_ptr,
    grid_ptr,
    invh_ptr,
    offs_ptr,
    y_ptr,
    M,
    IN,
    OUT,
    E,
    stride_um,
    stride_uj,
    stride_we,
    stride_wo,
    stride_wk,
    stride_ym,
    stride_yo,
    G: tl.constexpr,
    BASIS: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    row_ok = rows < M
    col_ok = cols < OUT
    first_row = pid_m * BLOCK_M
    e_lo, e_hi = tile_expert_range(
        offs_ptr, first_row, tl.minimum(first_row + BLOCK_M, M) - 1, E, BLOCK_E
    )
    cdt = tl.float64 if FP64 else tl.float32
    inv_h = tl.load(invh_ptr).to(cdt)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=cdt)
    js = tl.arange(0, BLOCK_J)
    for e in range(e_lo, e_hi + 1):
        start = tl.load(offs_ptr + e - 1, mask=e > 0, other=0)
        end = tl.load(offs_ptr + e)
        in_e = (rows >= start) & (rows < end) & row_ok  # (BM,)
        w_e = w_ptr + tl.cast(e, tl.int64) * stride_we
        for j0 in range(0, IN, BLOCK_J):
            jj = j0 + js
            j_ok = jj < IN
            u = tl.load(
                u_ptr + rows[:, None] * stride_um + jj[None, :] * stride_uj,
                mask=in_e[:, None] & j_ok[None, :],
                other=0.0,
            ).to(cdt)  # (BM, BJ)
            for g in tl.static_range(G):
                c = tl.load(grid_ptr + g).to(cdt)
                b, _ = _basis_and_slope(u, c, inv_h, BASIS, False)
                b = tl.where(in_e[:, None], b, 0.0)  # rows of other experts contribute nothing
                w = tl.load(
                    w_e + cols[None, :] * stride_wo + (jj[:, None] * G + g) * stride_wk,
                    mask=j_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )  # (BJ, BN) = W[e][cols, jj·G + g]ᵀ
                acc = tl.dot(b.to(w.dtype), w, acc, input_precision=PRECISION)
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yo,
        acc.to(y_ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def _kan_gemm_bwd_dx_kernel(
    u_ptr,
    w_ptr,
    grid_ptr,
    invh_ptr,
    offs_ptr,
    dy_ptr,
    du_ptr,
    M,
    IN,
    OUT,
    E,
    stride_um,
    stride_uj,
    stride_we,
    stride_wo,
    stride_wk,
    stride_dym,
    stride_dyo,
    stride_dum,
    stride_duj,
    G: tl.constexpr,
    BASIS: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_j = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    jj = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)  # (BJ,)
    row_ok = rows < M
    j_ok = jj < IN
    first_row = pid_m * BLOCK_M
    e_lo, e_hi = tile_expert_range(
        offs_ptr, first_row, tl.minimum(first_row + BLOCK_M, M) - 1, E, BLOCK_E
    )
    cdt = tl.float64 if FP64 else tl.float32
    inv_h = tl.load(invh_ptr).to(cdt)
    u = tl.load(
        u_ptr + rows[:, None] * stride_um + jj[None, :] * stride_uj,
        mask=row_ok[:, None] & j_ok[None, :],
        other=0.0,
    ).to(cdt)  # (BM, BJ)
    acc = tl.zeros((BLOCK_M, BLOCK_J), dtype=cdt)
    os_ = tl.arange(0, BLOCK_N)
    for e in range(e_lo, e_hi + 1):
        start = tl.load(offs_ptr + e - 1, mask=e > 0, other=0)
        end = tl.load(offs_ptr + e)
        in_e = (rows >= start) & (rows < end) & row_ok
        w_e = w_ptr + tl.cast(e, tl.int64) * stride_we
        for g in tl.static_range(G):
            c = tl.load(grid_ptr + g).to(cdt)
            _, slope = _basis_and_slope(u, c, inv_h, BASIS, True)
            inner = tl.zeros((BLOCK_M, BLOCK_J), dtype=cdt)  # (dy @ W[e])[:, jj·G + g]
            for o0 in range(0, OUT, BLOCK_N):
                oo = o0 + os_
                o_ok = oo < OUT
                dy = tl.load(
                    dy_ptr + rows[:, None] * stride_dym + oo[None, :] * stride_dyo,
                    mask=in_e[:, None] & o_ok[None, :],
                    other=0.0,
                )  # (BM, BN)
                w = tl.load(
                    w_e + oo[:, None] * stride_wo + (jj[None, :] * G + g) * stride_wk,
                    mask=o_ok[:, None] & j_ok[None, :],
                    other=0.0,
                )  # (BN, BJ)
                inner = tl.dot(dy.to(w.dtype), w, inner, input_precision=PRECISION)
            acc += slope * inner
    tl.store(
        du_ptr + rows[:, None] * stride_dum + jj[None, :] * stride_duj,
        acc.to(du_ptr.dtype.element_ty),
        mask=row_ok[:, None] & j_ok[None, :],
    )


@triton.jit
def _kan_gemm_bwd_dw_kernel(
    u_ptr,
    dy_ptr,
    grid_ptr,
    invh_ptr,
    offs_ptr,
    dw_ptr,
    IN,
    OUT,
    stride_um,
    stride_uj,
    stride_dym,
    stride_dyo,
    stride_dws,
    stride_dwe,
    stride_dwo,
    stride_dwk,
    SPLIT: tl.constexpr,
    G: tl.constexpr,
    BASIS: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    e = tl.program_id(0) // SPLIT
    split = tl.program_id(0) % SPLIT
    pid_jg = tl.program_id(1)
    pid_n = tl.program_id(2)
    pid_j = pid_jg // G
    g = pid_jg % G
    jj = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)  # (BJ,)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    j_ok = jj < IN
    col_ok = cols < OUT
    cdt = tl.float64 if FP64 else tl.float32
    inv_h = tl.load(invh_ptr).to(cdt)
    c = tl.load(grid_ptr + g).to(cdt)
    e_start = tl.load(offs_ptr + e - 1, mask=e > 0, other=0)
    e_end = tl.load(offs_ptr + e)
    # Split-K over the expert's rows: program `split` sums its own BLOCK_M-aligned chunk, the
    # host adds the SPLIT partial sums (deterministic, no atomics).
    chunk = tl.cdiv(tl.cdiv(e_end - e_start, SPLIT), BLOCK_M) * BLOCK_M
    start = e_start + split * chunk
    end = tl.minimum(start + chunk, e_end)
    ms = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_N, BLOCK_J), dtype=cdt)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + ms
        r_ok = rows < end
        u = tl.load(
            u_ptr + rows[:, None] * stride_um + jj[None, :] * stride_uj,
            mask=r_ok[:, None] & j_ok[None, :],
            other=0.0,
        ).to(cdt)  # (BM, BJ)
        b, _ = _basis_and_slope(u, c, inv_h, BASIS, False)
        b = tl.where(r_ok[:, None], b, 0.0)
        dy = tl.load(
            dy_ptr + rows[:, None] * stride_dym + cols[None, :] * stride_dyo,
            mask=r_ok[:, None] & col_ok[None, :],
            other=0.0,
        )  # (BM, BN)
        acc = tl.dot(tl.trans(dy), b.to(dy.dtype), acc, input_precision=PRECISION)  # (BN, BJ)
    tl.store(
        dw_ptr
        + tl.cast(split, tl.int64) * stride_dws
        + tl.cast(e, tl.int64) * stride_dwe
        + cols[:, None] * stride_dwo
        + (jj[None, :] * G + g) * stride_dwk,
        acc.to(dw_ptr.dtype.element_ty),
        mask=col_ok[:, None] & j_ok[None, :],
    )


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def _launch_opts(interpreted: bool) -> dict[str, int]:
    return {} if interpreted else {"num_warps": 4, "num_stages": 2}


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def _blocks(
    m: int, n_in: int, n_out: int, dtype: torch.dtype, interpreted: bool
) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N over out, BLOCK_J over input features)."""
    if interpreted:
        return 16, 16, 16
    bm = 64 if m >= 64 else 32 if m >= 32 else 16
    # fp32/fp64 products run on FMA units and stage their operands in shared memory: a 64x128
    # fp32 output tile needs 144 KiB (compiled for sm_90), more than pre-Hopper cards have.
    bn_max = 64 if dtype in (torch.float32, torch.float64) else 128
    return bm, _pow2(n_out, 16, bn_max), _pow2(n_in, 16, 32)


def _scalars(u: torch.Tensor, grid: torch.Tensor, inv_h: float) -> tuple[torch.Tensor, ...]:
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    grid_c = grid.detach().to(device=u.device, dtype=cdt).contiguous()
    invh = torch.full((1,), float(inv_h), device=u.device, dtype=cdt)
    return grid_c, invh


def kan_gemm_fwd_triton(
    u: torch.Tensor,
    w: torch.Tensor,
    grid: torch.Tensor,
    inv_h: float,
    offsets: torch.Tensor,
    basis_id: int,
    *,
    interpreted: bool = False,
) -> torch.Tensor:
    """``y[rows of e] = Φ(u[rows of e]) @ w[e]ᵀ``; ``u`` (M, in), ``w`` (E, out, in·G) any strides."""
    m, n_in = u.shape
    e, n_out, _ = w.shape
    g = grid.numel()
    y = torch.empty((m, n_out), device=u.device, dtype=u.dtype)
    if m == 0:
        return y
    grid_c, invh = _scalars(u, grid, inv_h)
    bm, bn, bj = _blocks(m, n_in, n_out, w.dtype, interpreted)
    launch = (triton.cdiv(m, bm), triton.cdiv(n_out, bn))
    _kan_gemm_fwd_kernel[launch](
        u, w, grid_c, invh, offsets, y,
        m, n_in, n_out, e,
        u.stride(0), u.stride(1), w.stride(0), w.stride(1), w.stride(2), y.stride(0), y.stride(1),
        G=g, BASIS=basis_id, FP64=u.dtype == torch.float64, PRECISION=_precision(w.dtype),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_J=bj, BLOCK_E=_pow2(e, 16, 1 << 20),
        **_launch_opts(interpreted),
    )  # fmt: skip
    return y


def kan_gemm_dx_triton(
    u: torch.Tensor,
    w: torch.Tensor,
    grid: torch.Tensor,
    inv_h: float,
    offsets: torch.Tensor,
    basis_id: int,
    dy: torch.Tensor,
    *,
    interpreted: bool = False,
) -> torch.Tensor:
    """``du[n, j] = Σ_g b'_g(u[n, j])·(dy @ w[e])[n, j·G + g]`` (M, in) in ``u.dtype``."""
    m, n_in = u.shape
    e, n_out, _ = w.shape
    g = grid.numel()
    du = torch.empty_like(u)
    if m == 0:
        return du
    grid_c, invh = _scalars(u, grid, inv_h)
    bm, bn, bj = _blocks(m, n_in, n_out, w.dtype, interpreted)
    bn = min(bn, 64) if not interpreted else bn
    launch = (triton.cdiv(m, bm), triton.cdiv(n_in, bj))
    _kan_gemm_bwd_dx_kernel[launch](
        u, w, grid_c, invh, offsets, dy, du,
        m, n_in, n_out, e,
        u.stride(0), u.stride(1), w.stride(0), w.stride(1), w.stride(2),
        dy.stride(0), dy.stride(1), du.stride(0), du.stride(1),
        G=g, BASIS=basis_id, FP64=u.dtype == torch.float64, PRECISION=_precision(w.dtype),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_J=bj, BLOCK_E=_pow2(e, 16, 1 << 20),
        **_launch_opts(interpreted),
    )  # fmt: skip
    return du


def kan_gemm_dw_triton(
    u: torch.Tensor,
    dy: torch.Tensor,
    grid: torch.Tensor,
    inv_h: float,
    offsets: torch.Tensor,
    basis_id: int,
    num_experts: int,
    w_dtype: torch.dtype,
    *,
    interpreted: bool = False,
) -> torch.Tensor:
    """``dw[e] = dy[rows of e]ᵀ @ Φ(u[rows of e])`` (E, out, in·G); empty experts get zeros."""
    m, n_in = u.shape
    n_out = dy.shape[1]
    g = grid.numel()
    grid_c, invh = _scalars(u, grid, inv_h)
    bm, bn, bj = _blocks(m, n_in, n_out, w_dtype, interpreted)
    if not interpreted:
        bm, bn = 64, min(bn, 64)
    tiles = num_experts * triton.cdiv(n_in, bj) * g * triton.cdiv(n_out, bn)
    if interpreted:
        split = 2  # exercise the split-K path in the CPU tests
    else:  # enough programs to fill the GPU, without chunks shorter than one row block
        rows_per_expert = triton.cdiv(max(m, 1), max(num_experts, 1))
        split = max(1, min(64, 1024 // max(tiles, 1), triton.cdiv(rows_per_expert, 4 * bm)))
    dy = dy.to(w_dtype)
    if split == 1:
        dw = torch.empty((1, num_experts, n_out, n_in * g), device=u.device, dtype=w_dtype)
    else:
        acc_dtype = torch.float64 if w_dtype == torch.float64 else torch.float32
        dw = torch.empty((split, num_experts, n_out, n_in * g), device=u.device, dtype=acc_dtype)
    launch = (num_experts * split, triton.cdiv(n_in, bj) * g, triton.cdiv(n_out, bn))
    _kan_gemm_bwd_dw_kernel[launch](
        u, dy, grid_c, invh, offsets, dw,
        n_in, n_out,
        u.stride(0), u.stride(1), dy.stride(0), dy.stride(1),
        dw.stride(0), dw.stride(1), dw.stride(2), dw.stride(3),
        SPLIT=split, G=g, BASIS=basis_id, FP64=u.dtype == torch.float64,
        PRECISION=_precision(w_dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_J=bj,
        **_launch_opts(interpreted),
    )  # fmt: skip
    return dw[0] if split == 1 else dw.sum(0).to(w_dtype)

"""Triton FWHT: one program per block of rows, whole rows held in registers.

Imported lazily (only from inside :func:`paperbricks.core_kernels.hadamard.fwht`), so importing the
package never imports triton. Each program loads a (BLOCK_M, N) tile, upcasts it to float32
(float64 stays float64), runs the log2(N) butterfly stages on the tile as reshapes of the row into
(blocks, pair, h) with ``tl.split``/``tl.join`` on the pair axis, applies the scale once and stores
in the input dtype. (An earlier form with ``tl.sum`` over the pair axis compiled for sm_90 to about
6× more barriers and shuffles.) The transform is its own adjoint (Sylvester H is symmetric), so
the backward pass is the same kernel on the gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: Target number of elements per program (rows are packed until a tile holds about this many).
_TILE_ELEMS = 4096


@triton.jit
def _fwht_stage(x, BLOCK_M: tl.constexpr, N: tl.constexpr, H: tl.constexpr):
    """One butterfly stage: element i pairs with i + H inside blocks of 2H, (a, b) -> (a + b, a - b)."""
    x4 = tl.reshape(x, (BLOCK_M, N // (2 * H), 2, H))  # (rows, blocks, pair, H)
    a, b = tl.split(tl.permute(x4, (0, 1, 3, 2)))  # each (rows, blocks, H)
    x4 = tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2))  # (rows, blocks, pair, H)
    return tl.reshape(x4, (BLOCK_M, N))


@triton.jit
def _fwht_fwd_kernel(
    X,
    Y,
    M,
    scale,
    stride_xm,
    stride_ym,
    N: tl.constexpr,
    LOG_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, N)  # (N,)
    mask = (rows < M)[:, None]  # (BLOCK_M, 1)
    x = tl.load(X + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
    x = x.to(ACC)  # float32 accumulation (float64 for float64 input)
    for s in tl.static_range(LOG_N):  # unrolled: the stage width 2^s is a compile-time constant
        x = _fwht_stage(x, BLOCK_M, N, 1 << s)
    x = x * scale
    tl.store(
        Y + rows[:, None] * stride_ym + cols[None, :],
        x.to(Y.dtype.element_ty),
        mask=mask,
    )


def _launch(x: torch.Tensor, scale: float) -> torch.Tensor:
    n = x.shape[-1]
    x2 = x.reshape(-1, n).contiguous()  # (M, N)
    m = x2.shape[0]
    y = torch.empty_like(x2)
    if m == 0:
        return y.reshape(x.shape)
    block_m = max(1, min(triton.next_power_of_2(m), _TILE_ELEMS // n))
    tile = block_m * n
    num_warps = 4 if tile <= 4096 else (8 if tile <= 8192 else 16)
    grid = (triton.cdiv(m, block_m),)
    _fwht_fwd_kernel[grid](
        x2,
        y,
        m,
        float(scale),
        x2.stride(0),
        y.stride(0),
        N=n,
        LOG_N=n.bit_length() - 1,
        BLOCK_M=block_m,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        num_warps=num_warps,
    )
    return y.reshape(x.shape)


class FWHTFunction(torch.autograd.Function):
    """``y = scale · H x`` with the Triton kernel; backward ``dx = scale · H dy`` (H = Hᵀ)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return _launch(x, scale)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _launch(dy, ctx.scale), None


def fwht_triton(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Triton FWHT over the last dim (n a power of two ≤ ``ops.TRITON_MAX_N``), differentiable."""
    return FWHTFunction.apply(x, scale)

"""Fused KAN basis-GEMM (Triton), wrapped in one autograd Function; triton is imported lazily.

:func:`kan_gemm_triton` computes ``y[rows of e] = Φ(u[rows of e]) @ W[e]ᵀ`` for tokens sorted by
expert (``offsets`` as produced by core-kernels ``moe.permute``), without materialising the basis
matrix Φ; its backward gives ``du`` through the basis derivative and ``dW`` by recomputing the
basis (see :mod:`paperbricks.mlpkan.kernels._triton`). Public entry points with validation and
``impl`` dispatch are :func:`paperbricks.mlpkan.kan.kan_linear` and
:func:`paperbricks.mlpkan.kan.grouped_kan_linear`.
"""

from __future__ import annotations

from typing import Any

import torch

from paperbricks.core_kernels.devices import import_triton, triton_interpreted

__all__ = ["TRITON_BASES", "kan_gemm_triton"]

# Bases with a fused kernel; the B-spline (Cox–de Boor recursion) is reference-only.
TRITON_BASES: tuple[str, ...] = ("rswaf", "rbf")


def _kernels() -> Any:
    import_triton()
    from paperbricks.mlpkan.kernels import _triton

    return _triton


class _KANGemm(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        u: torch.Tensor,
        weight: torch.Tensor,
        grid: torch.Tensor,
        inv_h: float,
        offsets: torch.Tensor,
        basis: str,
    ) -> torch.Tensor:
        k = _kernels()
        interpreted = triton_interpreted()
        basis_id = k.BASIS_IDS[basis]
        u = u.contiguous()
        y = k.kan_gemm_fwd_triton(
            u, weight, grid, inv_h, offsets, basis_id, interpreted=interpreted
        )
        ctx.save_for_backward(u, weight, grid, offsets)
        ctx.inv_h = inv_h
        ctx.basis_id = basis_id
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        k = _kernels()
        interpreted = triton_interpreted()
        u, weight, grid, offsets = ctx.saved_tensors
        dy = dy.contiguous()
        du = dw = None
        if ctx.needs_input_grad[0]:
            du = k.kan_gemm_dx_triton(
                u, weight, grid, ctx.inv_h, offsets, ctx.basis_id, dy, interpreted=interpreted
            )
        if ctx.needs_input_grad[1]:
            dw = k.kan_gemm_dw_triton(
                u,
                dy,
                grid,
                ctx.inv_h,
                offsets,
                ctx.basis_id,
                weight.shape[0],
                weight.dtype,
                interpreted=interpreted,
            )
        return du, dw, None, None, None, None


def kan_gemm_triton(
    u: torch.Tensor,
    weight: torch.Tensor,
    grid: torch.Tensor,
    inv_denominator: float,
    offsets: torch.Tensor,
    basis: str,
) -> torch.Tensor:
    """Fused grouped KAN GEMM (no validation; call through ``kan.kan_linear``/``grouped_kan_linear``).

    Args:
        u: (M, in) inputs sorted by expert.
        weight: (E, out, in·G) stacked KAN weights, column index ``j·G + g``.
        grid: (G,) basis centres (not differentiated).
        inv_denominator: ``1/h``.
        offsets: (E,) int32 cumulative end rows, ``offsets[-1] == M``.
        basis: ``"rswaf"`` or ``"rbf"``.

    Returns:
        (M, out) in ``u.dtype``; differentiable w.r.t. ``u`` and ``weight``.
    """
    return _KANGemm.apply(u, weight, grid, float(inv_denominator), offsets, basis)

"""Fused differential flash attention (Triton), reached lazily.

:func:`fused_diff_attention` imports ``_triton`` (which imports triton at module level) only when
called, so importing :mod:`paperbricks.diffattn` or this subpackage never imports triton nor
touches CUDA. The kernels are described in ``_triton.py``.
"""

from __future__ import annotations

import torch

__all__ = ["fused_diff_attention"]


def fused_diff_attention(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
    normalize: bool,
    norm_weight: torch.Tensor | None,
    lambda_init: float | None,
    eps: float,
    cu_seqlens: torch.Tensor | None,
) -> torch.Tensor:
    """Run the fused Triton forward (and, through autograd, backward); inputs already validated.

    Arguments as :func:`paperbricks.diffattn.ops.diff_attention`. Returns Y (B, H, T, Dv).
    """
    from paperbricks.core_kernels.devices import import_triton

    import_triton()
    from ._triton import diff_flash_attention

    return diff_flash_attention(
        q1,
        q2,
        k1,
        k2,
        v,
        lam,
        causal=causal,
        scale=scale,
        normalize=normalize,
        norm_weight=norm_weight,
        lambda_init=lambda_init,
        eps=eps,
        cu_seqlens=cu_seqlens,
    )

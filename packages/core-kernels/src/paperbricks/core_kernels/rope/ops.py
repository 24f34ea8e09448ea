"""Public RoPE application: input validation and ``impl`` dispatch."""

from __future__ import annotations

import torch

from ..devices import Impl, import_triton, select_impl
from .reference import _LAYOUTS, apply_rope_reference

__all__ = ["apply_rope"]

# Mirrors _triton's limits without importing triton at module import.
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_LEADING = 4
_MAX_PAIRS = 8192


def apply_rope(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: str = "half",
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Rotate the (even-sized) last dimension of ``x`` by RoPE angles given as cos/sin per pair.

    ``(x₁, x₂) ↦ (x₁ cos φ − x₂ sin φ, x₂ cos φ + x₁ sin φ)`` for each rotation pair, where pair m
    is ``(2m, 2m+1)`` in the ``"interleaved"`` layout and ``(m, m + D/2)`` in the ``"half"`` one.

    Args:
        x: (..., D) queries or keys, D even, any float dtype; e.g. (B, H, T, D).
        cos: (..., D/2) cosines from :func:`rope_angles` or :func:`rope_2d_angles`, broadcastable
            against ``x[..., :D/2]`` without growing it; e.g. (T, D/2) for x (B, H, T, D), or
            (B, 1, T, D/2) for per-sequence positions. Its dtype may differ from ``x``'s.
        sin: like ``cos``, same shape.
        layout: ``"half"`` (HF ``rotate_half``, the default) or ``"interleaved"`` (GPT-J/Meta).
        impl: ``"auto"`` (Triton for CUDA tensors when supported: float32/16/bf16 x with at most
            4 leading dims, D/2 <= 8192, cos/sin not requiring grad; else the reference),
            ``"reference"`` or ``"triton"`` (also on CPU under ``TRITON_INTERPRET=1``).

    Returns:
        (..., D) tensor in ``x.dtype`` (computed in float32, float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.rope import rope_angles
        >>> q = torch.randn(1, 2, 5, 8)  # (B, H, T, D)
        >>> cos, sin = rope_angles(5, dim=8)  # (T, D/2)
        >>> apply_rope(q, cos, sin, layout="half").shape
        torch.Size([1, 2, 5, 8])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] < 2 or x.shape[-1] % 2:
        raise ValueError(f"x: expected shape (..., D) with D even and >= 2, got {tuple(x.shape)}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout: expected one of {_LAYOUTS}, got {layout!r}")
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t!r:.60}")
    if cos.shape != sin.shape:
        raise ValueError(
            f"cos, sin: expected equal shapes, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    pair_shape = (*x.shape[:-1], x.shape[-1] // 2)
    try:
        bshape = torch.broadcast_shapes(pair_shape, cos.shape)
    except RuntimeError:
        bshape = None
    if bshape != torch.Size(pair_shape):
        raise ValueError(
            f"cos: expected a shape broadcastable to {pair_shape} (x's pairs), got {tuple(cos.shape)}"
        )
    reasons = []
    if x.dtype not in _TRITON_DTYPES:
        reasons.append(f"x dtype {x.dtype} (the kernel takes float32, float16, bfloat16)")
    if x.dim() - 1 > _MAX_LEADING:
        reasons.append(f"x has {x.dim()} dims (the kernel takes at most {_MAX_LEADING + 1})")
    if x.shape[-1] // 2 > _MAX_PAIRS:
        reasons.append(f"D/2 = {x.shape[-1] // 2} > {_MAX_PAIRS}")
    if cos.requires_grad or sin.requires_grad:
        reasons.append("gradients w.r.t. cos/sin need the reference")
    chosen = select_impl(
        impl,
        [x, cos, sin],
        op="apply_rope",
        supported=not reasons,
        why_unsupported="; ".join(reasons),
    )
    if chosen == "reference":
        return apply_rope_reference(x, cos, sin, layout)
    import_triton()
    from ._triton import RopeFunction

    return RopeFunction.apply(x, cos, sin, layout == "interleaved")

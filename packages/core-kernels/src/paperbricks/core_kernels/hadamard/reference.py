"""Plain-PyTorch references for the Walsh–Hadamard transforms (the specification of the kernels).

Rows are transformed along the last dimension, as column vectors: ``y = scale · H · x`` per row,
i.e. ``y = scale · x @ Hᵀ`` for a batch ``x`` of shape (..., n).
"""

from __future__ import annotations

import torch

from .constructions import hadamard_matrix

__all__ = ["fwht_reference", "had_transform_reference"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fwht_reference(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Fast Walsh–Hadamard transform over the last dim: ``y = scale · H_n · x`` (Sylvester H_n).

    The butterfly runs log2(n) vectorised stages; stage s pairs elements i and i + h (h = 2^s)
    inside blocks of 2h and maps ``(a, b) ↦ (a + b, a − b)``. Computed in float32 (float64 for
    float64 inputs) and returned in the input dtype; differentiable by autograd.

    Args:
        x: tensor of shape (..., n), n a power of two, floating dtype.
        scale: multiplies the result (``n ** -0.5`` makes the transform orthonormal).

    Returns:
        Tensor of the shape and dtype of x.
    """
    n = x.shape[-1]
    lead = x.shape[:-1]
    y = x.to(_compute_dtype(x.dtype)).reshape(-1, n)  # (M, n)
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)  # (M, blocks, pair, h)
        a, b = y[:, :, 0], y[:, :, 1]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    y = y.reshape(*lead, n)
    if scale != 1.0:
        y = y * scale
    return y.to(x.dtype)


def had_transform_reference(x: torch.Tensor, k: int, scale: float = 1.0) -> torch.Tensor:
    """``y = scale · (H_K ⊗ H_P) · x`` per row, n = K·P, as a reshape, an FWHT and a K×K matmul.

    With ``X = x.reshape(..., K, P)``: ``Y = H_K · X · H_Pᵀ``, i.e. an FWHT over the last axis of X
    followed by ``H_K`` applied over the K axis.

    Args:
        x: tensor of shape (..., n), floating dtype.
        k: K, the non-power-of-two factor (``hadamard_matrix(k)`` must exist); n / K a power of 2.
        scale: multiplies the result (``n ** -0.5`` makes it orthonormal).

    Returns:
        Tensor of the shape and dtype of x.
    """
    n = x.shape[-1]
    lead = x.shape[:-1]
    cdt = _compute_dtype(x.dtype)
    z = fwht_reference(x.to(cdt).reshape(*lead, k, n // k), scale)  # (..., K, P)
    hk = hadamard_matrix(k, dtype=cdt, device=x.device)  # (K, K)
    y = torch.einsum("ac,...cp->...ap", hk, z)  # (..., K, P)
    return y.reshape(*lead, n).to(x.dtype)

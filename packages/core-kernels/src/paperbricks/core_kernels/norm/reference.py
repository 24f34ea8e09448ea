"""Plain-PyTorch reference twins of the normalisation ops (the specification the kernels follow).

RMSNorm (Zhang & Sennrich, 2019), over the last dimension of size D:

    r = 1 / sqrt(mean_d(x_d²) + eps)          (per row)
    y = (x · r) ⊙ w                           (w = 1 when there is no weight)

with the optional fused residual add of pre-norm transformers:

    h = x + residual   (rounded to the input dtype),   y = RMSNorm(h),   returns (y, h)

LayerNorm (Ba et al., 2016): y = (x − mean(x)) / sqrt(var(x) + eps) ⊙ w + b, with the biased
variance.

Statistics are accumulated in float32 for float16/bfloat16 inputs (float64 stays float64) and the
result is rounded once, to the input dtype. HF's ``LlamaRMSNorm`` instead rounds the normalised
value to the input dtype *before* multiplying by the weight, so low-precision results can differ
from it by one rounding.
"""

from __future__ import annotations

import torch

__all__ = ["layer_norm_reference", "rms_norm_reference"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    *,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dimension, in plain PyTorch (differentiable by autograd).

    Args:
        x: (..., D) input.
        weight: (D,) gain, or None for no gain.
        eps: added to the mean square before the square root.
        residual: (..., D), same dtype as ``x``; when given, ``h = x + residual`` is normalised
            and ``(y, h)`` is returned.

    Returns:
        y (..., D) in ``x.dtype``; or ``(y, h)`` when ``residual`` is given.
    """
    h = x if residual is None else x + residual  # (..., D), rounded to x.dtype like an unfused add
    cdt = _compute_dtype(h.dtype)
    hf = h.to(cdt)
    rstd = torch.rsqrt(hf.square().mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    y = hf * rstd  # (..., D)
    if weight is not None:
        y = y * weight.to(cdt)
    y = y.to(x.dtype)
    return y if residual is None else (y, h)


def layer_norm_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """LayerNorm over the last dimension, in plain PyTorch (differentiable by autograd).

    Args:
        x: (..., D) input.
        weight: (D,) gain, or None.
        bias: (D,) shift, or None.
        eps: added to the (biased) variance before the square root.

    Returns:
        (..., D) in ``x.dtype``.
    """
    cdt = _compute_dtype(x.dtype)
    xf = x.to(cdt)
    mu = xf.mean(dim=-1, keepdim=True)  # (..., 1)
    xc = xf - mu  # (..., D)
    rstd = torch.rsqrt(xc.square().mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    y = xc * rstd
    if weight is not None:
        y = y * weight.to(cdt)
    if bias is not None:
        y = y + bias.to(cdt)
    return y.to(x.dtype)

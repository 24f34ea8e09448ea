"""Public normalisation ops: input validation and ``impl`` dispatch, plus the ``RMSNorm`` module."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..devices import Impl, import_triton, select_impl
from .reference import layer_norm_reference, rms_norm_reference

__all__ = ["RMSNorm", "layer_norm", "rms_norm"]

# Mirrors _triton.MAX_FUSED_D / SUPPORTED_DTYPES without importing triton at module import.
_MAX_FUSED_D = 16384
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps: expected a float, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps: expected a finite float >= 0, got {eps!r}")
    return float(eps)


def _check_x(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{name}: expected shape (..., D) with D >= 1, got {tuple(x.shape)}")


def _check_vector(v: torch.Tensor | None, name: str, d: int) -> None:
    if v is None:
        return
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {v.dtype}")
    if tuple(v.shape) != (d,):
        raise ValueError(
            f"{name}: expected shape ({d},) to match x's last dim, got {tuple(v.shape)}"
        )


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    *,
    residual: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dimension, optionally fused with a residual add.

    ``y = x / sqrt(mean(x²) + eps) ⊙ weight``. With ``residual``, ``h = x + residual`` (rounded to
    the input dtype) is normalised instead and ``(y, h)`` is returned, the pre-norm transformer
    pattern ``residual = residual + sublayer_out; y = norm(residual)`` in one pass. Statistics are
    accumulated in float32 for float16/bfloat16 inputs; outputs are in ``x.dtype``.

    Args:
        x: (..., D) floating tensor.
        weight: (D,) gain or None (no gain). May have another float dtype than ``x``; the gradient
            comes back in ``weight.dtype``.
        eps: added to the mean square, ``>= 0``. Default 1e-6 (Llama/Mistral/Pixtral).
        residual: (..., D) tensor with the same shape and dtype as ``x``, or None.
        impl: ``"auto"`` (Triton for CUDA tensors with float32/16/bf16 and D <= 16384, else the
            reference), ``"reference"`` or ``"triton"`` (also on CPU under ``TRITON_INTERPRET=1``).

    Returns:
        y (..., D) in ``x.dtype``; or ``(y, new_residual)`` when ``residual`` is given.

    Examples:
        >>> import torch
        >>> x = torch.randn(2, 5, 8)
        >>> y = rms_norm(x, torch.ones(8), eps=1e-6)
        >>> y.shape
        torch.Size([2, 5, 8])
        >>> y, h = rms_norm(x, torch.ones(8), residual=torch.zeros_like(x))
        >>> bool(torch.equal(h, x))
        True
    """
    _check_x(x)
    eps = _check_eps(eps)
    d = x.shape[-1]
    _check_vector(weight, "weight", d)
    tensors = [x] + ([weight] if weight is not None else [])
    if residual is not None:
        _check_x(residual, "residual")
        if residual.shape != x.shape or residual.dtype != x.dtype:
            raise ValueError(
                f"residual: expected shape {tuple(x.shape)} and dtype {x.dtype} like x, got "
                f"{tuple(residual.shape)} and {residual.dtype}"
            )
        tensors.append(residual)
    reasons = []
    if x.dtype not in _TRITON_DTYPES:
        reasons.append(f"dtype {x.dtype} (fused kernel takes float32, float16, bfloat16)")
    if d > _MAX_FUSED_D:
        reasons.append(f"D={d} > {_MAX_FUSED_D}")
    chosen = select_impl(
        impl,
        tensors,
        op="rms_norm",
        supported=not reasons,
        why_unsupported="; ".join(reasons),
    )
    if chosen == "reference":
        return rms_norm_reference(x, weight, eps, residual=residual)
    import_triton()
    from ._triton import RMSNormFunction

    return RMSNormFunction.apply(x, weight, residual, eps)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """LayerNorm over the last dimension (reference implementation only, no fused kernel).

    ``y = (x − mean(x)) / sqrt(var(x) + eps) ⊙ weight + bias`` with the biased variance, computed in
    float32 for float16/bfloat16 inputs and returned in ``x.dtype``.

    Args:
        x: (..., D) floating tensor.
        weight: (D,) gain or None.
        bias: (D,) shift or None.
        eps: added to the variance, ``>= 0``. Default 1e-5 (``torch.nn.LayerNorm``'s).

    Returns:
        (..., D) tensor in ``x.dtype``.

    Examples:
        >>> import torch
        >>> y = layer_norm(torch.tensor([[1.0, 2.0, 3.0]]), eps=0.0)
        >>> [round(v, 4) for v in y[0].tolist()]
        [-1.2247, 0.0, 1.2247]
    """
    _check_x(x)
    eps = _check_eps(eps)
    _check_vector(weight, "weight", x.shape[-1])
    _check_vector(bias, "bias", x.shape[-1])
    return layer_norm_reference(x, weight, bias, eps)


class RMSNorm(nn.Module):
    """RMSNorm layer over the last dimension, backed by :func:`rms_norm`.

    Its state dict (``weight``) is compatible with ``torch.nn.RMSNorm`` and HF ``LlamaRMSNorm``.

    Args:
        hidden_size: D, the normalised (last) dimension.
        eps: added to the mean square. Default 1e-6.
        elementwise_affine: learn a (D,) gain initialised to ones. Default True.
        impl: passed to :func:`rms_norm`. Default ``"auto"``.
        device, dtype: of the weight.

    Examples:
        >>> import torch
        >>> norm = RMSNorm(8)
        >>> norm(torch.randn(3, 8)).shape
        torch.Size([3, 8])
        >>> y, new_residual = norm(torch.randn(3, 8), residual=torch.randn(3, 8))
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        *,
        impl: Impl = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size: expected an int >= 1, got {hidden_size!r}")
        self.hidden_size = hidden_size
        self.eps = _check_eps(eps)
        self.impl = impl
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Normalise ``x`` (..., D); with ``residual`` return ``(y, x + residual)``."""
        return rms_norm(x, self.weight, self.eps, residual=residual, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}, elementwise_affine={self.weight is not None}"

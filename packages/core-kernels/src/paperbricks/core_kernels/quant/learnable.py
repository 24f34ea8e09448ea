"""``LearnableFakeQuant``: fake-quant with a learned scale (LSQ, Esser et al. 2020, arXiv:1902.08153).

Forward (same value as :func:`fake_quant` with the current scale):
``v = x · (1/s)``, ``q = clamp(round(v) + z, qmin, qmax)``, ``x̂ = (q − z) · s``.

Backward (LSQ, with round treated as the identity):

- ``∂x̂/∂x = 1`` where ``qmin ≤ round(v) + z ≤ qmax``, else 0;
- ``∂x̂/∂s = round(v) − v`` inside the range, ``qmin − z`` below it and ``qmax − z`` above it;
- the scale gradient is multiplied by ``g`` (LSQ's gradient scale, default
  ``1 / sqrt(n · qmax)`` with ``n`` the number of elements sharing one scale).

"Inside the range" means ``qmin ≤ round(v) + z ≤ qmax``, the same mask as :func:`fake_quant` and
``torch.fake_quantize_per_tensor_affine``; the LSQ paper states the condition on ``v`` itself, so
the two differ only for ``v`` within half a code beyond the end codes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .reference import _as_param, _check_float, _grouped, _to_internal, compute_scale_zero
from .spec import QuantSpec, scale_shape

__all__ = ["LearnableFakeQuant"]


class LearnableFakeQuant(nn.Module):
    """Fake quantization with a learnable scale (LSQ) and a fixed zero point.

    Args:
        spec: the quantizer; its granularity fixes the scale shape. Token granularity is not
            allowed (its scale depends on the input, so it cannot be a parameter).
        scale: initial scale, shape ``scale_shape(example.shape, spec)``; stored as a float32
            parameter (float64 if given in float64).
        zero: fixed integer zero point of the same shape (asymmetric specs), default 0.
        grad_scale: multiplier of the scale gradient; None uses LSQ's ``1/sqrt(n·qmax)``.

    Examples:
        >>> w = torch.randn(8, 16)
        >>> fq = LearnableFakeQuant.from_tensor(w, QuantSpec(bits=4, granularity="channel"))
        >>> fq(w).shape, fq.scale.shape
        (torch.Size([8, 16]), torch.Size([8, 1]))
    """

    def __init__(
        self,
        spec: QuantSpec,
        scale: torch.Tensor,
        zero: torch.Tensor | None = None,
        *,
        grad_scale: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, QuantSpec):
            raise TypeError(f"spec: expected a QuantSpec, got {type(spec).__name__}")
        if spec.granularity == "token":
            raise ValueError("spec: granularity='token' has input-dependent scales, not learnable")
        if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
            raise TypeError(f"scale: expected a float tensor, got {scale!r:.80}")
        if grad_scale is not None and not (
            isinstance(grad_scale, (int, float)) and math.isfinite(grad_scale) and grad_scale > 0
        ):
            raise ValueError(f"grad_scale: expected a positive float or None, got {grad_scale!r}")
        dtype = torch.float64 if scale.dtype == torch.float64 else torch.float32
        self.spec = spec
        self.grad_scale = grad_scale
        self.scale = nn.Parameter(scale.detach().to(dtype).clone())
        z = torch.zeros_like(self.scale, dtype=torch.int32) if zero is None else zero.detach()
        if tuple(z.shape) != tuple(self.scale.shape):
            raise ValueError(
                f"zero: expected the scale's shape {tuple(self.scale.shape)}, got {tuple(z.shape)}"
            )
        if spec.symmetric and bool((z != 0).any()):
            raise ValueError("zero: symmetric specs have zero point 0, got a non-zero zero point")
        self.register_buffer("zero", z.to(torch.int32).clone())

    @classmethod
    def from_tensor(
        cls, x: torch.Tensor, spec: QuantSpec, *, grad_scale: float | None = None
    ) -> LearnableFakeQuant:
        """Initialise the scale (and zero point) with the min/max observer on ``x``."""
        s, z = compute_scale_zero(x, spec)
        return cls(spec, s, z, grad_scale=grad_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (any float dtype, shape whose scale shape equals ``self.scale``)."""
        _check_float(x, "x")
        spec = self.spec
        target = scale_shape(x.shape, spec)
        if tuple(self.scale.shape) != target:
            raise ValueError(
                f"x: shape {tuple(x.shape)} gives scale shape {target}, but this quantizer's scale "
                f"has shape {tuple(self.scale.shape)}"
            )
        cd = self.scale.dtype
        n = x.numel() // max(1, math.prod(target))
        g = self.grad_scale if self.grad_scale is not None else 1.0 / math.sqrt(n * spec.qmax)
        s0 = self.scale
        s = s0.detach() + (s0 - s0.detach()) * g  # value s, gradient scaled by g
        s = _to_internal(s, spec)
        z = _to_internal(_as_param(self.zero, x, spec, "zero", cd), spec)
        xv = _grouped(x, spec).to(cd)
        v = xv * (1.0 / s)
        code = torch.round(v.detach()) + z
        inside = (code >= spec.qmin) & (code <= spec.qmax)
        # Inside: round with an identity gradient. Outside: the constant end code. (An explicit
        # mask, since clamp's gradient at exactly the bound is not part of its contract.)
        q = torch.where(inside, code + (v - v.detach()), code.clamp(spec.qmin, spec.qmax))
        return ((q - z) * s).reshape(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"spec={self.spec}, grad_scale={self.grad_scale}"

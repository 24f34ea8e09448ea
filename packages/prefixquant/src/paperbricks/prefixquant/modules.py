"""Fake-quant modules of the PrefixQuant pipeline: ``QuantLinear`` and ``QuantRMSNorm`` (arXiv:2410.05265 §3).

Quantizer sites (spec §2.4): the q/k/v and gate/up inputs are quantized once, as the OUTPUT of the
RMSNorm that feeds them (:class:`QuantRMSNorm`), so the three (two) projections share one static
scale; o_proj and down_proj quantize their own input (:class:`QuantLinear` ``.input_quantizer``),
down_proj after its online Hadamard (R4) when the rotated linear carries one. Weights are
fake-quantized per output channel. With every quantizer disabled both modules compute exactly
what the float modules they replace compute (same ops in the same order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import ActQuantizer, WeightQuantizer

__all__ = ["QuantLinear", "QuantRMSNorm"]


class QuantLinear(nn.Linear):
    """``nn.Linear`` with an optional input quantizer, a weight quantizer and an online Hadamard.

    ``y = F.linear(Q_a(H(x)), Q_w(W), b)`` where ``H`` is ``online_hadamard`` (if present),
    ``Q_a`` the ``input_quantizer`` (if present and enabled) and ``Q_w`` the
    ``weight_quantizer`` (if present and enabled).

    Attributes:
        weight: ``(out, in)`` Parameter (float). After fine-tuning it holds the fake-quantized
            weight and ``weight_quantizer.enabled`` is False (``weight_quantizer.codes(weight)``
            gives the integer codes exactly).
        bias: ``(out,)`` Parameter or None.
        input_quantizer: :class:`ActQuantizer` or None.
        weight_quantizer: :class:`WeightQuantizer` or None (float weights).
        online_hadamard: a module applied to the input first, or absent.

    Examples:
        >>> lin = QuantLinear.from_linear(nn.Linear(8, 4), w_bits=4)
        >>> lin(torch.randn(2, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.input_quantizer: ActQuantizer | None = None
        self.weight_quantizer: WeightQuantizer | None = None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        w_bits: int | None = None,
        input_quantizer: ActQuantizer | None = None,
    ) -> QuantLinear:
        """Wrap ``linear`` (sharing its weight and bias Parameters).

        Args:
            linear: an ``nn.Linear`` (or subclass, e.g. a rotated linear with ``online_hadamard``).
            w_bits: weight bits (per-channel symmetric); None or 16 keeps float weights.
            input_quantizer: the activation quantizer of the input, or None.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = w
        new.bias = linear.bias
        new.input_quantizer = input_quantizer
        new.weight_quantizer = (
            WeightQuantizer(w.detach(), w_bits).to(w.device)
            if w_bits is not None and w_bits < 16
            else None
        )
        had = getattr(linear, "online_hadamard", None)
        if isinstance(had, nn.Module):
            new.online_hadamard = had
        return new

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward uses (fake-quantized when the weight quantizer is enabled)."""
        if self.weight_quantizer is None:
            return self.weight
        return self.weight_quantizer(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        had = getattr(self, "online_hadamard", None)
        if had is not None:
            x = had(x)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.quantized_weight().to(x.dtype)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantRMSNorm(nn.Module):
    """RMSNorm whose output is fake-quantized (the shared input quantizer of q/k/v or gate/up).

    Computes exactly HF's ``LlamaRMSNorm`` (also Mistral/Qwen2):
    ``w · (x_f32 · rsqrt(mean(x_f32²) + eps)).to(x.dtype)``, then ``output_quantizer``.
    A norm without a weight (e.g. the plain RMSN left by rotation) is kept weightless.

    Attributes:
        weight: ``(D,)`` Parameter or None.
        eps: the epsilon added to the mean square (also as ``variance_epsilon``).
        output_quantizer: :class:`ActQuantizer` or None.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, *, weight: bool = True) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(torch.ones(hidden_size)) if weight else None
        self.eps = float(eps)
        self.output_quantizer: ActQuantizer | None = None

    @property
    def variance_epsilon(self) -> float:
        """HF's name for ``eps``."""
        return self.eps

    @classmethod
    def from_norm(
        cls, norm: nn.Module, output_quantizer: ActQuantizer | None = None
    ) -> QuantRMSNorm:
        """Wrap an HF RMSNorm (shares its weight Parameter)."""
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if eps is None:
            raise TypeError(
                f"norm: expected an RMSNorm with `variance_epsilon` or `eps`, got {type(norm).__name__}"
            )
        w = getattr(norm, "weight", None)
        if w is not None and not isinstance(w, torch.Tensor):
            raise TypeError(f"norm.weight: expected a tensor or None, got {type(w).__name__}")
        size = int(w.shape[-1]) if w is not None else int(getattr(norm, "hidden_size", 0) or 0)
        new = cls(size, float(eps), weight=False)
        if w is not None:
            new.weight = w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)
        new.output_quantizer = output_quantizer
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        h = x.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.eps)
        out = h.to(input_dtype)
        if self.weight is not None:
            out = self.weight * out
        if self.output_quantizer is not None:
            out = self.output_quantizer(out)
        return out

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"

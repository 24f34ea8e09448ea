"""Normalisation layers: RMSNorm (reference and fused Triton, with residual add) and LayerNorm.

RMSNorm (Zhang & Sennrich, 2019), per row of the last dimension D:

    y = x / sqrt(mean(x²) + eps) ⊙ w

and, fused with the pre-norm residual add, ``h = x + residual; y = RMSNorm(h)`` returning
``(y, h)``. LayerNorm: ``y = (x − mean(x)) / sqrt(var(x) + eps) ⊙ w + b`` (reference only).

- :func:`rms_norm`: the functional op, ``impl="auto"|"reference"|"triton"``; forward and backward.
- :class:`RMSNorm`: ``nn.Module`` wrapper (state dict compatible with ``torch.nn.RMSNorm``).
- :func:`layer_norm`: LayerNorm reference helper.
- :func:`rms_norm_reference`, :func:`layer_norm_reference`: the plain-PyTorch twins.

Statistics accumulate in float32 for float16/bfloat16 inputs and outputs come back in the input
dtype, rounded once (HF ``LlamaRMSNorm`` rounds before the gain: one rounding more). Importing this
module imports no triton; the kernels in ``_triton.py`` load on first use.
"""

from .ops import RMSNorm, layer_norm, rms_norm
from .reference import layer_norm_reference, rms_norm_reference

__all__ = [
    "RMSNorm",
    "layer_norm",
    "layer_norm_reference",
    "rms_norm",
    "rms_norm_reference",
]

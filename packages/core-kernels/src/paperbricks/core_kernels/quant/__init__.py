"""Integer quantization: quantize/dequantize, fake-quant with STE, LSQ, int4 packing, int8 GEMM.

Affine quantization with round-half-to-even (``torch.round``)::

    q  = clamp(round(x · (1/s)) + z, qmin, qmax)      (quantize)
    x̂ = (q − z) · s                                   (dequantize)

Symmetric specs use signed codes in ``[-2^(b-1), 2^(b-1) - 1]`` (``int8``) with ``z = 0`` and
``s = clip · max|x| / (2^(b-1) - 1)``; asymmetric specs use unsigned codes in ``[0, 2^b - 1]``
(``uint8``) with ``s = clip · (max(x, 0) − min(x, 0)) / (2^b − 1)`` and an integer zero point.
Scales are per tensor, channel, group, token or head (:class:`QuantSpec`), dynamic (computed
from each input) or static (calibrated, :func:`calibrate_scale_zero`).

- :class:`QuantSpec`, :func:`scale_shape`: the frozen quantizer config and its scale shape.
- :func:`compute_scale_zero`, :func:`calibrate_scale_zero`, :func:`quantize`,
  :func:`dequantize`, :func:`fake_quant` (straight-through estimator, gradient masked where
  clipped), :class:`LearnableFakeQuant` (LSQ learned scale).
- :func:`pack_int4` / :func:`unpack_int4`: two codes per byte, even element in the low nibble.
- :func:`int_matmul`: exact int8 x int8 -> int32 GEMM via ``torch._int_mm`` or an exact fallback;
  :func:`w8a8_matmul`: the int8 GEMM with per-token/per-channel scales applied in the epilogue
  (Triton on CUDA).
- :func:`mse_clip_search`, :func:`search_clip_ratio`: grid search of the clip ratio.
- :func:`quantize_kv`: static per-head K/V-cache quantization (Triton on CUDA).
- :func:`rms_norm_quant`: RMSNorm fused with static per-tensor int8 quantization (Triton on CUDA,
  same codes as the float32 reference).
"""

from .learnable import LearnableFakeQuant
from .ops import (
    INT_MATMUL_MAX_K,
    int_matmul,
    int_mm_supported,
    quantize_kv,
    rms_norm_quant,
    w8a8_matmul,
)
from .reference import (
    DEFAULT_CLIP_GRID,
    ClipSearchResult,
    calibrate_scale_zero,
    compute_scale_zero,
    dequantize,
    fake_quant,
    int_matmul_reference,
    mse_clip_search,
    pack_int4,
    quantize,
    rms_norm_quant_reference,
    search_clip_ratio,
    unpack_int4,
)
from .spec import GRANULARITIES, QuantSpec, scale_shape

__all__ = [
    "DEFAULT_CLIP_GRID",
    "GRANULARITIES",
    "INT_MATMUL_MAX_K",
    "ClipSearchResult",
    "LearnableFakeQuant",
    "QuantSpec",
    "calibrate_scale_zero",
    "compute_scale_zero",
    "dequantize",
    "fake_quant",
    "int_matmul",
    "int_matmul_reference",
    "int_mm_supported",
    "mse_clip_search",
    "pack_int4",
    "quantize",
    "quantize_kv",
    "rms_norm_quant",
    "rms_norm_quant_reference",
    "scale_shape",
    "search_clip_ratio",
    "unpack_int4",
    "w8a8_matmul",
]

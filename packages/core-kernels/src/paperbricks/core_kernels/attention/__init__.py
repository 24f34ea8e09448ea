"""Attention: a readable reference, an SDPA wrapper and FlashAttention-2-style Triton kernels.

For query head h (reading key/value head h // (H / Hkv), grouped-query attention):

    s_ij = scale · q_i · k_j,   lse_i = log Σ_j exp(s_ij),   o_i = Σ_j exp(s_ij − lse_i) v_j

over the keys j that query i may see: all of them, or with ``causal`` those with
``j <= i + S − T`` (bottom-right alignment, as flash-attn; SDPA's ``is_causal`` is top-left and
differs when T ≠ S), and with ``cu_seqlens`` only those of its own packed segment.

- :func:`attention`: the public op; q (B, H, T, D), k (B, Hkv, S, D), v (B, Hkv, S, Dv);
  ``impl="auto"`` runs the Triton FA2 kernels (forward and backward, online softmax, P recomputed
  from the saved LSE, no T×S matrix in memory) for CUDA tensors, else the SDPA wrapper.
- :func:`varlen_attention`: the same with ``cu_seqlens`` required (packed, B == 1, head-major).
- :func:`attention_reference`: the einsum-level specification with a float32 softmax.
- :func:`sdpa_attention`: ``torch.nn.functional.scaled_dot_product_attention`` plus GQA, Dv ≠ D,
  bottom-right causality and per-segment packing.
- ``triton_blocks``: public ``@triton.jit`` helpers (masked tiles, causal/segment masks, the
  online-softmax update). That submodule imports triton: import it only inside functions.

Importing this package imports neither triton nor CUDA.
"""

from .ops import attention, varlen_attention
from .reference import attention_reference, sdpa_attention, segment_ids, visibility_mask

__all__ = [
    "attention",
    "attention_reference",
    "sdpa_attention",
    "segment_ids",
    "varlen_attention",
    "visibility_mask",
]

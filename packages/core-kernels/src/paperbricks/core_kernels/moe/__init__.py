"""Mixture-of-experts building blocks: routing, dispatch, grouped GEMM, aux losses, a layer.

- :func:`topk_route`: ``softmax → top-k → renormalise`` (= softmax over the top-k logits) or
  ``top-k → softmax``, in float32.
- :func:`permute` / :func:`unpermute`: stable sort of token copies by expert with on-device
  counts and int32 offsets; the weighted scatter-add inverse ``out_t = Σ_j g_{t,j} y_{t,j}``.
- :func:`grouped_mm` (``y_e = x_e W_e`` per expert block) and :func:`grouped_swiglu`
  (``silu(x_e W1_e[:, :I]) ⊙ x_e W1_e[:, I:]``): reference loop, ``torch.nn.functional.grouped_mm``
  and Triton backends, forward and backward.
- :func:`moe_ffn` (sorted path) and :func:`moe_decode` (gather + einsum for a few tokens).
- :func:`load_balancing_loss` ``c·E/(N·k)·Σ_e P̄_e n_e``, :func:`z_loss`
  ``c_z·mean_t(logsumexp_e z)²``, :class:`AuxLossAutoScaler`.
- :class:`MoELayer` / :class:`MoEConfig`: routed SwiGLU experts with stacked weights
  ``w1 (E, D, 2I)``, ``w2 (E, I, D)`` and optional shared experts.

Importing this module never imports triton nor initialises CUDA.
"""

from .dispatch import Permuted, expert_counts, permute, unpermute
from .experts import moe_decode, moe_ffn
from .grouped_gemm import (
    grouped_mm,
    grouped_swiglu,
    resolve_grouped_impl,
    swiglu,
    torch_grouped_mm_unsupported_reason,
)
from .layer import MoEConfig, MoELayer
from .losses import AuxLossAutoScaler, load_balancing_loss, z_loss
from .routing import topk_route

__all__ = [
    "AuxLossAutoScaler",
    "MoEConfig",
    "MoELayer",
    "Permuted",
    "expert_counts",
    "grouped_mm",
    "grouped_swiglu",
    "load_balancing_loss",
    "moe_decode",
    "moe_ffn",
    "permute",
    "resolve_grouped_impl",
    "swiglu",
    "topk_route",
    "torch_grouped_mm_unsupported_reason",
    "unpermute",
    "z_loss",
]

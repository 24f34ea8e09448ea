"""The ``paperbricks_prefixquant`` attention function: online Q/K Hadamard (R3) + K-cache fake quant.

PrefixQuant (arXiv:2410.05265 §3, following QuaRot) rotates queries and keys **after RoPE** by an
online Hadamard ``H_D`` (R3): ``(q H)(k H)ᵀ = q kᵀ``, so attention is unchanged in full precision
while the keys that go to the (quantized) K cache lose their channel outliers. The official code
monkey-patches ``apply_rotary_pos_emb``; here the transform lives in an attention function
registered with transformers' ``AttentionInterface`` (and ``sdpa``'s mask function), so no model
code is patched. For every attention module it:

1. applies ``module.qk_hadamard`` (an ``OnlineHadamard(head_dim)``), when present, to Q and K
   (``(B, H, T, D)`` and ``(B, Hkv, S, D)``; K includes the cached positions);
2. applies ``module.k_quantizer`` (a per-head fake quantizer), when present, to the key positions
   ``>= module.pq_num_prefix`` only: the prefix keys stay in full precision;
3. calls transformers' ``sdpa_attention_forward`` (mask, GQA, scaling and dropout semantics kept).

The cache stores K after RoPE and before the Hadamard, so both transforms are re-applied to the
whole key sequence at every step (exact for the fp transform, deterministic for static fake quant).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

__all__ = [
    "ATTN_IMPLEMENTATION",
    "prefixquant_attention_forward",
    "register_attention",
    "use_prefixquant_attention",
]

logger = logging.getLogger(__name__)

#: Name under which the attention function (and its mask function) is registered.
ATTN_IMPLEMENTATION = "paperbricks_prefixquant"


def prefixquant_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention with the online Q/K Hadamard and the prefix-aware K fake quant.

    Args:
        module: the attention module (optional attributes ``qk_hadamard``, ``k_quantizer``,
            ``pq_num_prefix``; ``num_key_value_groups`` and ``is_causal`` as transformers sets).
        query: (B, H, T, D) after RoPE.
        key: (B, Hkv, S, D) after RoPE, cache included (the prefix occupies positions [0, P)).
        value: (B, Hkv, S, Dv).
        attention_mask: as built by transformers' sdpa mask function (or None).
        **kwargs: forwarded to ``sdpa_attention_forward`` (``scaling``, ``dropout``, ...).

    Returns:
        ``(attn_output (B, T, H, Dv), None)`` exactly as ``sdpa_attention_forward``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    had = getattr(module, "qk_hadamard", None)
    if had is not None:
        query = had(query)  # (B, H, T, D)
        key = had(key)  # (B, Hkv, S, D)
    kq = getattr(module, "k_quantizer", None)
    if kq is not None:
        p = int(getattr(module, "pq_num_prefix", 0) or 0)
        key = torch.cat([key[:, :, :p], kq(key[:, :, p:])], dim=2) if p > 0 else kq(key)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_attention() -> str:
    """Register the attention function and its (sdpa) mask function with transformers; idempotent.

    Returns:
        The implementation name, :data:`ATTN_IMPLEMENTATION`.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, prefixquant_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return ATTN_IMPLEMENTATION


def use_prefixquant_attention(model: nn.Module) -> None:
    """Switch an HF model (and its sub-models) to the ``paperbricks_prefixquant`` attention.

    Args:
        model: a transformers ``PreTrainedModel`` with ``set_attn_implementation``.

    Raises:
        TypeError: the model has no ``set_attn_implementation`` (not a transformers model).
    """
    register_attention()
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        raise TypeError(
            f"model: expected a transformers PreTrainedModel with set_attn_implementation, "
            f"got {type(model).__name__}"
        )
    if getattr(model.config, "_attn_implementation", None) != ATTN_IMPLEMENTATION:
        setter(ATTN_IMPLEMENTATION)
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        raise TypeError(
            f"model: {type(model).__name__} refused attn_implementation={ATTN_IMPLEMENTATION!r} "
            f"(kept {model.config._attn_implementation!r}); it must use transformers' AttentionInterface"
        )

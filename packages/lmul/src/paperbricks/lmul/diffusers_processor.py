"""L-Mul attention processor for diffusers (arXiv 2410.00907, §3.3; optional extra ``diffusers``).

:class:`LMulAttnProcessor` plugs into ``diffusers.models.attention_processor.Attention`` through
``attn.set_processor(...)`` (or ``model.set_attn_processor(...)`` / :func:`paperbricks.lmul.apply_lmul_`
for a whole UNet or transformer). It follows the contract of diffusers' ``AttnProcessor2_0`` step
for step (spatial norm, 4-D feature maps, ``prepare_attention_mask``, group norm, ``norm_cross``,
``norm_q``/``norm_k``, output projection and dropout, residual connection, ``rescale_output_factor``)
for self- and cross-attention, and replaces only the SDPA call by
:func:`paperbricks.lmul.modules.lmul_attention`: QKᵀ and PV through L-Matmul, exact float32
softmax, the scale an ordinary multiply unless ``config.lmul_scale``.

What differs from ``AttnProcessor2_0``: the products of the two matmuls; the scores and the
softmax are in float32; the score scale is ``attn.scale`` (what the classic ``AttnProcessor``
uses; ``AttnProcessor2_0`` lets SDPA use ``1/√head_dim``, the same value unless the module was
built with ``scale_qk=False`` or a custom ``scale``); key/value heads may be fewer than query
heads (``kv_heads``), read by grouped-query attention. Modules with added key/value projections
(``added_kv_proj_dim``, ``AttnAddedKVProcessor``'s job) are rejected. diffusers is imported only
when a processor is built, with an ImportError naming the extra if it is missing.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .config import LMulConfig
from .modules import lmul_attention

__all__ = ["LMulAttnProcessor"]

logger = logging.getLogger(__name__)


def _require_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "LMulAttnProcessor needs diffusers, the optional extra of this package: "
            "pip install 'paperbricks-lmul[diffusers]'"
        ) from err


class LMulAttnProcessor:
    """diffusers attention processor with QKᵀ and PV through L-Mul.

    Args:
        config: :class:`LMulConfig` (default ``LMulConfig()``: 3 mantissa bits, "bits",
            truncation, float32 accumulation); ``targets`` plays no role.

    Raises:
        ImportError: diffusers is not installed (``pip install 'paperbricks-lmul[diffusers]'``).
        TypeError: ``config`` is not an :class:`LMulConfig`.

    Examples:
        >>> import torch
        >>> from diffusers.models.attention_processor import Attention
        >>> from paperbricks.lmul.config import LMulConfig
        >>> attn = Attention(query_dim=16, heads=2, dim_head=8)
        >>> attn.set_processor(LMulAttnProcessor(LMulConfig(mantissa_bits=4)))
        >>> attn(torch.randn(1, 5, 16)).shape
        torch.Size([1, 5, 16])
    """

    def __init__(self, config: LMulConfig | None = None) -> None:
        _require_diffusers()
        config = LMulConfig() if config is None else config
        if not isinstance(config, LMulConfig):
            raise TypeError(f"config: expected an LMulConfig, got {type(config).__name__}")
        self.config = config

    def __repr__(self) -> str:
        return f"LMulAttnProcessor({self.config})"

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """One attention call (``AttnProcessor2_0`` contract).

        Args:
            attn: the diffusers ``Attention`` module.
            hidden_states: (B, N, C) tokens or (B, C, H, W) feature maps (the queries).
            encoder_hidden_states: (B, S, C_cross) for cross-attention; ``None`` = self.
            attention_mask: diffusers' mask ((B, S), (B, 1, S) or (B, N, S); additive float or
                boolean), prepared by ``attn.prepare_attention_mask``.
            temb: the time embedding for ``spatial_norm`` modules.

        Returns:
            The same shape as ``hidden_states``.
        """
        if args or kwargs.get("scale") is not None:
            logger.warning("LMulAttnProcessor: the deprecated `scale` argument is ignored")
        if getattr(attn, "added_kv_proj_dim", None) is not None:
            raise ValueError(
                "attn: has added key/value projections (added_kv_proj_dim); LMulAttnProcessor "
                "follows AttnProcessor2_0, which does not use them"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )  # (B·heads, 1|N, S)
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )  # (B, H, 1|N, S)

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (B, N, H·D)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)  # (B, S, Hkv·D)
        value = attn.to_v(encoder_hidden_states)  # (B, S, Hkv·Dv)

        head_dim = query.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, N, D)
        key = key.view(batch_size, -1, key.shape[-1] // head_dim, head_dim).transpose(1, 2)
        value = value.view(batch_size, key.shape[2], key.shape[1], -1).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out, _ = lmul_attention(
            query, key, value, config=self.config, scale=attn.scale, attn_mask=attention_mask
        )  # (B, H, N, Dv)
        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, out.shape[1] * out.shape[-1])
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

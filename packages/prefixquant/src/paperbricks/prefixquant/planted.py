"""A tiny Llama with planted token-wise massive activations (spec §6(b); used by tests and reproduce).

Real LLMs show "massive activations" in the down_proj inputs at a few tokens (the first token,
early delimiters) that act as attention sinks. A randomly initialised model has none, so this
module plants them with a documented construction (no training, CPU milliseconds):

1. ``LlamaForCausalLM`` from a random config: 4 layers, hidden 128, intermediate 344
   (= 344·1, a non-power-of-two width that exercises ``H_344`` in the online R4 Hadamard),
   4 heads / 2 KV heads, the vocabulary of core-kernels' ``tiny_tokenizer`` (66 ids).
2. One residual channel ``c`` (drawn from the seed) is reserved: every embedding row has
   ``E[:, c] = 0``, except the planted ids (BOS and the delimiter ids, default ``"."``) whose
   embedding is nearly one-hot, ``E[id] = ε·noise + 1·e_c``.
3. In every layer a few intermediate channels ``J`` (4, drawn from the seed) get
   ``gate_proj.W[J, c] = up_proj.W[J, c] = g`` (g = 3): at a planted token the normalised input is
   ≈ √hidden·e_c, so ``silu(gate)·up ≈ (√128·g)² ≈ 1150`` on J, versus O(0.1) elsewhere — a
   massive down_proj input (ratio to the median token ≫ η = 64). ``down_proj.W[:, J]`` writes only
   into channel c (``δ = 0.01``), so the residual stream at planted tokens stays aligned with e_c
   and every layer repeats the pattern. Nothing else writes channel c (``o_proj.W[c, :] = 0``,
   ``down_proj.W[c, ¬J] = 0``), so ordinary tokens never drift into the massive path.
4. Channel outliers: a few γ channels of every RMSNorm (3, drawn from the seed) are scaled by 20,
   so the un-rotated norm outputs have channel-wise outliers that the rotation removes.

Two variants (``delimiter_ids``):

- ``delimiter_ids=()`` (**BOS only**): the massive activations occur only at BOS. Sequences that
  start with BOS (as evaluation with a BOS token does) then carry the outlier only at position 0,
  where real LLMs have their first-token attention sink; replacing that BOS by the fp16 prefix
  cache removes the only outlier from the quantized tokens, which is the mechanism PrefixQuant
  relies on. What it still does not emulate: in a real model the first position is a sink
  whatever its token; here massiveness follows the BOS *identity*, so a window that does not
  start with BOS has no outlier at all (``select_prefix`` would then raise "no outlier tokens").
- ``delimiter_ids=(".",)`` (default, **identity-tied delimiters**): BOS and every "." are
  massive, wherever they are. "." also occurs inside the evaluated text, so moving the outlier
  ids into the prefix cannot remove the in-text "." outliers (in real models only the *first*
  delimiters are sinks); static per-tensor scales stay set by them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["planted_llama"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def planted_llama(
    seed: int = 0,
    delimiter_ids: Sequence[int | str] = (".",),
    *,
    num_layers: int = 4,
    hidden_size: int = 128,
    intermediate_size: int = 344,
    gain: float = 3.0,
    num_massive_channels: int = 4,
    gamma_outliers: int = 3,
    gamma_scale: float = 20.0,
    num_texts: int = 400,
) -> tuple[Any, Any, dict[str, Any]]:
    """Build the planted-outlier tiny Llama, its tokenizer and what was planted.

    Args:
        seed: seeds the parameter init (a private ``torch.Generator``; no global RNG) and the
            choice of channels; the texts use ``synthetic_text(seed=seed)``.
        delimiter_ids: extra planted tokens besides BOS, as ids or token strings (default ``"."``);
            empty for BOS only.
        num_layers, hidden_size, intermediate_size: model size (defaults 4, 128, 344).
        gain: g, the gate/up weight on the massive channel (default 3.0).
        num_massive_channels: |J| per layer (default 4).
        gamma_outliers: RMSNorm γ channels scaled per norm (default 3); 0 disables.
        gamma_scale: their scale (default 20.0).
        num_texts: synthetic sentences returned for calibration/evaluation (default 400).

    Returns:
        ``(model, tokenizer, info)``: an fp32 ``LlamaForCausalLM`` in eval mode, the
        ``tiny_tokenizer``, and ``info`` with ``bos_id``, ``delimiter_ids``, ``planted_ids``,
        ``channel``, ``massive_channels`` (per layer), ``gamma_channels``, ``calibration_texts``
        and ``eval_texts`` (disjoint seeds).

    Examples:
        >>> model, tok, info = planted_llama(seed=0)
        >>> info["planted_ids"] == [tok.bos_token_id, tok.convert_tokens_to_ids(".")]
        True
    """
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing.factories import (
        synthetic_text,
        tiny_llama_config,
        tiny_tokenizer,
    )

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    tok = tiny_tokenizer()
    delims: list[int] = []
    for d in delimiter_ids:
        i = tok.convert_tokens_to_ids(d) if isinstance(d, str) else int(d)
        if i is None or i == tok.unk_token_id or not 0 <= i < len(tok):
            raise ValueError(f"delimiter_ids: {d!r} is not a token of the tiny tokenizer")
        delims.append(int(i))
    cfg = tiny_llama_config(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    g = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():  # re-init from the private generator
        if p.ndim == 2:
            p.copy_(torch.randn(p.shape, generator=g) * cfg.initializer_range)
        else:
            p.fill_(1.0)
    c = int(torch.randint(0, hidden_size, (1,), generator=g))
    planted = [tok.bos_token_id, *delims]
    emb = model.model.embed_tokens.weight  # (V, hidden)
    emb[:, c] = 0.0
    for i in planted:
        emb[i] = 0.01 * torch.randn(hidden_size, generator=g)
        emb[i, c] = 1.0
    massive: list[list[int]] = []
    gamma_ch: list[int] = torch.randperm(hidden_size, generator=g)[: gamma_outliers + 1].tolist()
    gamma_ch = [ch for ch in gamma_ch if ch != c][:gamma_outliers]
    for layer in model.model.layers:
        j = torch.randperm(intermediate_size, generator=g)[:num_massive_channels]
        massive.append(sorted(j.tolist()))
        mlp = layer.mlp
        mlp.gate_proj.weight[j, c] = gain
        mlp.up_proj.weight[j, c] = gain
        mlp.down_proj.weight[:, j] = 0.0
        mlp.down_proj.weight[c, :] = 0.0
        mlp.down_proj.weight[c, j] = 0.01
        layer.self_attn.o_proj.weight[c, :] = 0.0  # only the massive path writes channel c
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight[gamma_ch] = gamma_scale
    info = {
        "bos_id": tok.bos_token_id,
        "delimiter_ids": delims,
        "planted_ids": planted,
        "channel": c,
        "massive_channels": massive,
        "gamma_channels": gamma_ch,
        "calibration_texts": synthetic_text(num_texts, seed=seed),
        "eval_texts": synthetic_text(num_texts, seed=seed + 10_000),
    }
    logger.info(
        "planted llama: channel %d, planted ids %s, gamma channels %s", c, planted, gamma_ch
    )
    return model, tok, info

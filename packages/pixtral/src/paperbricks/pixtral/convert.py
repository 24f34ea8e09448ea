"""Weight-layout converters between the official mistral-inference Pixtral-ViT and HF/our layout.

mistral-inference (``vision_encoder.py``) applies RoPE-2D to **interleaved** pairs
``(x_{2b}, x_{2b+1})`` (complex multiplication); HF and our
:class:`~paperbricks.pixtral.models.PixtralVisionModel` rotate **half** pairs ``(x_b, x_{b+D/2})``
with the same [height | width] per-pair angles. Converting permutes the rows of Wq and Wk inside
every head (core-kernels ``permute_rope_rows``: HF row b ← official row 2b, row b + D/2 ← row
2b+1); Wv, Wo, the FFN and norms are copied. Names (per layer ``i``):

==========================================  ============================================
official (mistral-inference)                 HF / ours
==========================================  ============================================
``patch_conv.weight``                        ``patch_conv.weight``
``ln_pre.weight``                            ``ln_pre.weight``
``transformer.layers.i.attention.wq``        ``transformer.layers.i.attention.q_proj`` (permuted)
``transformer.layers.i.attention.wk``        ``transformer.layers.i.attention.k_proj`` (permuted)
``transformer.layers.i.attention.wv|wo``     ``transformer.layers.i.attention.v_proj|o_proj``
``transformer.layers.i.feed_forward.w1``     ``transformer.layers.i.feed_forward.gate_proj``
``transformer.layers.i.feed_forward.w3``     ``transformer.layers.i.feed_forward.up_proj``
``transformer.layers.i.feed_forward.w2``     ``transformer.layers.i.feed_forward.down_proj``
``transformer.layers.i.attention_norm``      same; ``ffn_norm`` same
==========================================  ============================================

(all with a ``.weight`` suffix). In a consolidated mistral checkpoint the encoder sits under
``vision_encoder.``; pass it as ``src_prefix``. Keys outside ``src_prefix`` are left out of the
result (the adapter and decoder are converted elsewhere); unknown keys inside it raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from paperbricks.core_kernels.rope import permute_rope_rows

from .models.configuration_pixtral import PixtralVisionConfig

__all__ = ["hf_to_mistral", "mistral_to_hf"]

_GLOBAL = {"patch_conv.weight": "patch_conv.weight", "ln_pre.weight": "ln_pre.weight"}
_LAYER = {  # official suffix -> HF suffix
    "attention.wq.weight": "attention.q_proj.weight",
    "attention.wk.weight": "attention.k_proj.weight",
    "attention.wv.weight": "attention.v_proj.weight",
    "attention.wo.weight": "attention.o_proj.weight",
    "feed_forward.w1.weight": "feed_forward.gate_proj.weight",
    "feed_forward.w2.weight": "feed_forward.down_proj.weight",
    "feed_forward.w3.weight": "feed_forward.up_proj.weight",
    "attention_norm.weight": "attention_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_ROPE_HF = ("attention.q_proj.weight", "attention.k_proj.weight")
_LAYER_RE = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    config: PixtralVisionConfig,
    src_prefix: str,
    dst_prefix: str,
    names: dict[str, str],
    to: str,
) -> dict[str, torch.Tensor]:
    if not isinstance(config, PixtralVisionConfig):
        raise TypeError(f"config: expected a PixtralVisionConfig, got {type(config).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    for name, pre in (("src_prefix", src_prefix), ("dst_prefix", dst_prefix)):
        if not isinstance(pre, str):
            raise TypeError(f"{name}: expected a str, got {type(pre).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(src_prefix):
            continue
        rest = key[len(src_prefix) :]
        glob = _GLOBAL.get(rest)
        m = _LAYER_RE.match(rest)
        if glob is not None:
            new, suffix = glob, None
        elif m is not None and m.group(2) in names and int(m.group(1)) < config.num_hidden_layers:
            suffix = m.group(2)
            new = f"transformer.layers.{m.group(1)}.{names[suffix]}"
        else:
            raise ValueError(f"state_dict: unexpected key {key!r} for a Pixtral vision encoder")
        hf_suffix = suffix if to == "interleaved" else names.get(suffix)
        if hf_suffix in _ROPE_HF:
            value = permute_rope_rows(value, config.num_attention_heads, config.head_dim, to=to)
        out[dst_prefix + new] = value
    expected = set(_GLOBAL.values()) | {
        f"transformer.layers.{i}.{v}"
        for i in range(config.num_hidden_layers)
        for v in names.values()
    }
    missing = sorted(expected - {k[len(dst_prefix) :] for k in out})
    if missing:
        raise ValueError(
            f"state_dict: {len(missing)} encoder weights missing under prefix {src_prefix!r}, "
            f"e.g. {missing[:3]}"
        )
    return out


def mistral_to_hf(
    state_dict: Mapping[str, torch.Tensor],
    config: PixtralVisionConfig,
    *,
    src_prefix: str = "",
    dst_prefix: str = "",
) -> dict[str, torch.Tensor]:
    """Official mistral-inference encoder weights -> HF/our names, Wq/Wk rows to rotate-half.

    Args:
        state_dict: official weights (name -> tensor); only keys under ``src_prefix`` are read.
        config: the encoder's :class:`PixtralVisionConfig` (heads, head_dim, layer count).
        src_prefix: prefix of the encoder keys in ``state_dict``, e.g. ``"vision_encoder."`` for
            a consolidated checkpoint. Default ``""``.
        dst_prefix: prefix put before every output key (e.g. ``"vision_tower."``). Default ``""``.

    Returns:
        A new dict loadable (with ``dst_prefix=""``) by ``PixtralVisionModel.load_state_dict``.

    Raises:
        ValueError: an unknown key under ``src_prefix``, a layer index >= num_hidden_layers, a
            missing weight, or a Wq/Wk whose row count is not heads·head_dim.

    Examples:
        >>> from paperbricks.pixtral.models import PixtralVisionConfig, PixtralVisionModel
        >>> cfg = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                           num_attention_heads=2, patch_size=4)
        >>> official = hf_to_mistral(PixtralVisionModel(cfg).state_dict(), cfg)
        >>> sorted(official)[:2]
        ['ln_pre.weight', 'patch_conv.weight']
        >>> _ = PixtralVisionModel(cfg).load_state_dict(mistral_to_hf(official, cfg))
    """
    return _convert(state_dict, config, src_prefix, dst_prefix, _LAYER, "half")


def hf_to_mistral(
    state_dict: Mapping[str, torch.Tensor],
    config: PixtralVisionConfig,
    *,
    src_prefix: str = "",
    dst_prefix: str = "",
) -> dict[str, torch.Tensor]:
    """HF/our encoder weights -> official mistral-inference names and interleaved Wq/Wk rows.

    The exact inverse of :func:`mistral_to_hf` (bit-identical round trip). Arguments, return
    value and errors as there, with the roles of the layouts swapped.
    """
    inverse = {v: k for k, v in _LAYER.items()}
    return _convert(state_dict, config, src_prefix, dst_prefix, inverse, "interleaved")

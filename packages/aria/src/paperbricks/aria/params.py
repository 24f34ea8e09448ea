"""Analytic parameter accounting for Aria (arXiv 2410.05993, §2 and Table 1's "activated params").

Counts come from the configuration alone (no model is built), split into the language model
(embedding, decoder, head), the vision encoder and the projector. With ``activated=True`` the
decoder's routed experts are counted at ``moe_topk`` of ``moe_num_experts`` (what one token runs
through); everything else in the decoder (attention, router, shared experts, norms) is always
active.

The published configuration (:func:`aria_published_config`) gives, per decoder layer,
attention 26,214,400 + norms 5,120 + router 163,840 + 64 routed experts 817,889,280 + shared
experts 25,559,040 = 869,831,680; LM total 24,869,091,840 (untied embedding and head). Activated
per text token excluding embedding and head: 3,601,349,120 ≈ 3.60B; the paper quotes 3.5B per text
token and 3.9B per visual token (including the ViT), which this accounting does not reproduce
exactly (ours: 3.60B, and 3.60B + ViT + projector ≈ 4.04B per visual token); the paper does not say
what it includes. The ViT sizes (27 layers, width 1152, 16 heads, MLP 4304) are the spec's §9
*unverified* values.

Counting conventions follow HF transformers' module structure (which our models share): the
vision encoder keeps HF's unused ``post_layernorm``; a tied head counts zero (a multimodal model
ties by the top-level ``tie_word_embeddings``, as HF does, a text-only one by its own flag).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ParameterCount", "aria_published_config", "count_parameters"]


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of an Aria configuration.

    Attributes:
        activated: whether routed experts were counted at top-k (True) or all (False).
        embedding: token embedding V·d.
        decoder: decoder layers and final norm (routed experts at top-k when ``activated``).
        lm_head: output projection V·d (0 when tied to the embedding).
        vision: vision encoder (0 for a text-only config).
        projector: cross-attention projector + FFN (0 for a text-only config).
        per_layer: one decoder layer by part: ``attention``, ``norms``, ``router``,
            ``routed_experts``, ``shared_experts``.
    """

    activated: bool
    embedding: int
    decoder: int
    lm_head: int
    vision: int
    projector: int
    per_layer: dict[str, int]

    @property
    def language_model(self) -> int:
        """Embedding + decoder + head."""
        return self.embedding + self.decoder + self.lm_head

    @property
    def total(self) -> int:
        """Language model + vision encoder + projector."""
        return self.language_model + self.vision + self.projector

    @property
    def per_visual_token(self) -> int:
        """Decoder + ViT + projector: what one image token passes through (no embedding/head)."""
        return self.decoder + self.vision + self.projector

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            language_model=self.language_model,
            total=self.total,
            per_visual_token=self.per_visual_token,
        )
        return out


def _get(cfg: Any, name: str, default: Any = ...) -> Any:
    value = cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)
    if value is ...:
        raise ValueError(f"config: field {name!r} is missing")
    return value


def _pos_int(cfg: Any, name: str, default: Any = ...) -> int:
    v = _get(cfg, name, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"config.{name}: expected an int >= 0, got {v!r}")
    return v


def _text_counts(
    tc: Any, activated: bool, tied: bool | None = None
) -> tuple[int, int, int, dict[str, int]]:
    v, d = _pos_int(tc, "vocab_size"), _pos_int(tc, "hidden_size")
    i, n_layers = _pos_int(tc, "intermediate_size"), _pos_int(tc, "num_hidden_layers")
    h = _pos_int(tc, "num_attention_heads")
    hkv = _get(tc, "num_key_value_heads", None) or h
    hd = _get(tc, "head_dim", None) or d // h
    e, k = _pos_int(tc, "moe_num_experts"), _pos_int(tc, "moe_topk")
    n_shared = _pos_int(tc, "moe_num_shared_experts")
    if k > e:
        raise ValueError(f"config.moe_topk: expected <= moe_num_experts={e}, got {k}")
    attn_bias = bool(_get(tc, "attention_bias", False))
    mlp_bias = bool(_get(tc, "mlp_bias", False))
    attention = d * h * hd + 2 * d * hkv * hd + h * hd * d
    if attn_bias:
        attention += h * hd + 2 * hkv * hd + d
    i_s = i * n_shared
    shared = 3 * d * i_s + ((2 * i_s + d) if mlp_bias and n_shared else 0)
    per_layer = {
        "attention": attention,
        "norms": 2 * d,
        "router": e * d,
        "routed_experts": 3 * d * i * (k if activated else e),
        "shared_experts": shared,
    }
    decoder = n_layers * sum(per_layer.values()) + d  # + final norm
    embedding = v * d
    if tied is None:
        tied = bool(_get(tc, "tie_word_embeddings", False))
    head = 0 if tied else v * d
    return embedding, decoder, head, per_layer


def _vision_count(vc: Any) -> int:
    h, m = _pos_int(vc, "hidden_size"), _pos_int(vc, "intermediate_size")
    c, p = _pos_int(vc, "num_channels", 3), _pos_int(vc, "patch_size")
    side = _pos_int(vc, "image_size") // p
    n_layers = _pos_int(vc, "num_hidden_layers")
    embeddings = c * p * p * h + h + side * side * h
    layer = 4 * (h * h + h) + 4 * h + (h * m + m) + (m * h + h)
    return embeddings + n_layers * layer + 2 * h  # + post_layernorm (kept by HF, unused)


def _projector_count(cfg: Any, vc: Any, tc: Any) -> int:
    h, d = _pos_int(vc, "hidden_size"), _pos_int(tc, "hidden_size")
    table = _get(cfg, "projector_patch_to_query_dict")
    n_q = max(int(x) for x in dict(table).values())
    query = n_q * h
    cross = 3 * h * h + (3 * h * h + 3 * h) + (h * h + h) + (h * h + h) + 2 * h + 2 * h
    ffn = 2 * h + h * d + d * d  # layer_norm, linear_in (no bias), linear_out (no bias)
    return query + cross + ffn


def count_parameters(config: Any, activated: bool = False) -> ParameterCount:
    """Count the parameters of an Aria model from its configuration, without building it.

    Args:
        config: our ``AriaConfig`` / ``AriaTextConfig``, HF's ``AriaConfig`` / ``AriaTextConfig``,
            or a plain dict with the same fields (``text_config``/``vision_config`` sub-dicts for
            a multimodal config). A config without ``text_config`` is taken as text-only.
        activated: count routed experts at ``moe_topk`` (what one token uses) instead of all
            ``moe_num_experts``. Default False.

    Returns:
        A :class:`ParameterCount` (``.language_model``, ``.total``, ``.per_visual_token`` ...).

    Raises:
        ValueError: a needed field is missing or not a non-negative int, or top-k > experts.

    Examples:
        >>> count_parameters(aria_published_config()).language_model
        24869091840
        >>> round(count_parameters(aria_published_config(), activated=True).decoder / 1e9, 2)
        3.6
    """
    if not isinstance(activated, bool):
        raise TypeError(f"activated: expected a bool, got {type(activated).__name__}")
    tc = _get(config, "text_config", None)
    if tc is None:
        emb, dec, head, per_layer = _text_counts(config, activated)
        return ParameterCount(activated, emb, dec, head, 0, 0, per_layer)
    vc = _get(config, "vision_config")
    # HF ties a multimodal model's head by the top-level flag, not the text config's
    tied = bool(_get(config, "tie_word_embeddings", False))
    emb, dec, head, per_layer = _text_counts(tc, activated, tied)
    return ParameterCount(
        activated, emb, dec, head, _vision_count(vc), _projector_count(config, vc, tc), per_layer
    )


def aria_published_config(**overrides: Any):
    """Our ``AriaConfig`` with the published Aria sizes set explicitly (spec §2, §9).

    Decoder: 28 layers, d 2560, 20 heads x 128 (no GQA), vocab 100,352, 64 routed experts of
    width 1664, top-6, 2 shared experts, RoPE base 5e6, untied head. ViT (unverified, spec §9):
    27 layers, width 1152, 16 heads, MLP 4304, patch 14, 980 px. Projector queries
    {1225: 128, 4900: 256}. ``overrides`` are passed to ``AriaConfig`` (e.g. ``text_config=...``).
    """
    from .models.configuration_aria import AriaConfig

    kwargs: dict[str, Any] = dict(
        vision_config=dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            num_channels=3,
            image_size=980,
            patch_size=14,
        ),
        text_config=dict(
            vocab_size=100352,
            hidden_size=2560,
            intermediate_size=1664,
            num_hidden_layers=28,
            num_attention_heads=20,
            num_key_value_heads=20,
            head_dim=128,
            moe_num_experts=64,
            moe_topk=6,
            moe_num_shared_experts=2,
            max_position_embeddings=65536,
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0},
            tie_word_embeddings=False,
        ),
        projector_patch_to_query_dict={1225: 128, 4900: 256},
        image_token_index=9,
    )
    kwargs.update(overrides)
    return AriaConfig(**kwargs)

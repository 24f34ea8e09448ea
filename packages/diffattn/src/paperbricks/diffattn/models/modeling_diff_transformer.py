"""Differential Transformer LM (arXiv 2410.05258) and its parameter-matched baseline, HF-style.

Both models are Llama-shaped decoders: token embedding, N × [pre-RMSNorm -> attention -> residual,
pre-RMSNorm -> SwiGLU -> residual], a final RMSNorm and an LM head. They differ only in the
attention layer:

- :class:`DiffTransformerForCausalLM`: :class:`~paperbricks.diffattn.modules.MultiheadDiffAttn`
  (h diff-heads of width 2d, learned λ per layer, per-head RMSNorm, (1 − λ_init) scale);
- :class:`BaselineTransformerForCausalLM`: ordinary causal attention with 2h heads of width d
  (core-kernels ``attention``), the paper's parameter-matched control.

Identical to HF ``LlamaForCausalLM`` except: RMSNorm and RoPE come from core-kernels (cos/sin are
computed in float64 and rounded once; HF rounds the angle to float32 first: a ~1e-7 relative
difference), the attention layers above, and ``output_attentions`` returning the differential map
A1 − λ·A2 for DIFF. With ``layout="hf"``, ``rope_layout="half"``, ``norm_affine=False`` and
``head_norm_eps = rms_norm_eps`` a DIFF model computes exactly what HF ``DiffLlamaForCausalLM``
computes (see :func:`paperbricks.diffattn.convert.load_hf_diffllama`).

Both are ``PreTrainedModel`` + ``GenerationMixin``: ``save_pretrained``/``from_pretrained``
(safetensors), ``generate()`` with a ``DynamicCache``, and registered with ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM`` on importing :mod:`paperbricks.diffattn.models`.
Weight initialisation follows HF (normal(0, initializer_range) for linear and embedding weights,
ones for norm gains, N(0, lambda_std²) for the λ vectors) and so uses torch's global RNG: seed it
(``torch.manual_seed``) before building a model for reproducible weights.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from paperbricks.core_kernels.attention import attention
from paperbricks.core_kernels.hf_compat import make_output, output_cache
from paperbricks.core_kernels.norm import RMSNorm
from paperbricks.core_kernels.rope import apply_rope, repeat_kv

from ..modules import (
    DiffLambda,
    MultiheadDiffAttn,
    _key_padding,
    default_position_ids,
    rope_cos_sin,
)
from .configuration_diff_transformer import BaselineTransformerConfig, DiffTransformerConfig

__all__ = [
    "BaselineTransformerForCausalLM",
    "BaselineTransformerModel",
    "BaselineTransformerPreTrainedModel",
    "DiffTransformerForCausalLM",
    "DiffTransformerModel",
    "DiffTransformerPreTrainedModel",
]

logger = logging.getLogger(__name__)


class SwiGLU(nn.Module):
    """The Llama FFN: ``down(silu(gate(x)) ⊙ up(x))`` (no biases)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _causal_maps(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale·qkᵀ) with bottom-right causality, float32 (float64 for float64): (B, H, T, S).

    q (B, H, T, D), k (B, H, S, D) (KV already repeated). Only for ``output_attentions``.
    """
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    t, s = q.shape[2], k.shape[2]
    scores = torch.einsum("bhtd,bhsd->bhts", q.to(cdt), k.to(cdt)) * scale  # (B, H, T, S)
    keep = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    return scores.masked_fill(~keep, float("-inf")).softmax(dim=-1).nan_to_num(0.0)


class BaselineAttention(nn.Module):
    """Ordinary causal multi-head attention with RoPE, GQA and a transformers KV cache.

    Same forward contract as :class:`~paperbricks.diffattn.modules.MultiheadDiffAttn`; the maps
    returned with ``output_attentions`` are softmax(QKᵀ/√d) (B, H, T, S) in float32.
    """

    def __init__(self, config: BaselineTransformerConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.attention_head_dim
        self.rope_layout = config.rope_layout
        self.rope_theta = float(config.rope_theta)
        self.impl = "auto" if config.attn_impl == "sdpa" else config.attn_impl
        self.scaling = self.head_dim**-0.5
        e, d = config.hidden_size, self.head_dim
        self.q_proj = nn.Linear(e, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(e, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(e, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, e, bias=False)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, maps: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        o = attention(q, k, v, causal=True, scale=self.scaling, impl=self.impl)
        a = None
        if maps:
            n_rep = self.num_heads // self.num_kv_heads
            a = _causal_maps(q, repeat_kv(k, n_rep), self.scaling)
        return o, a

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, _ = hidden_states.shape
        h, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(hidden_states).view(b, t, h, d).transpose(1, 2)  # (B, H, T, d)
        k = self.k_proj(hidden_states).view(b, t, hkv, d).transpose(1, 2)  # (B, Hkv, T, d)
        v = self.v_proj(hidden_states).view(b, t, hkv, d).transpose(1, 2)
        past = 0 if past_key_values is None else past_key_values.get_seq_length(self.layer_idx)
        keep = _key_padding(attention_mask, b, past + t)
        if position_embeddings is None:
            if position_ids is None:
                position_ids = default_position_ids(b, t, past, keep, hidden_states.device)
            position_embeddings = rope_cos_sin(position_ids, d, self.rope_theta, q.dtype)
        cos, sin = position_embeddings
        rimpl = self.impl if self.impl in ("reference", "triton") else "auto"
        q = apply_rope(q, cos, sin, self.rope_layout, impl=rimpl)
        k = apply_rope(k, cos, sin, self.rope_layout, impl=rimpl)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        if keep is None:
            o, maps = self._attend(q, k, v, output_attentions)
        else:  # padded rows: one sequence at a time over its real tokens (exact)
            s = k.shape[2]
            o = q.new_zeros(b, h, t, d)
            maps = q.new_zeros(b, h, t, s, dtype=torch.float32) if output_attentions else None
            for i in range(b):
                kidx = keep[i].nonzero().squeeze(-1)
                qidx = keep[i, s - t :].nonzero().squeeze(-1)
                if qidx.numel() == 0:
                    continue
                oi, ai = self._attend(
                    q[i : i + 1, :, qidx], k[i : i + 1, :, kidx], v[i : i + 1, :, kidx],
                    output_attentions,
                )  # fmt: skip
                o[i][:, qidx] = oi[0]
                if maps is not None:
                    maps[i][:, qidx[:, None], kidx[None, :]] = ai[0].to(maps.dtype)
        o = o.transpose(1, 2).reshape(b, t, h * d)
        return self.o_proj(o), maps


class DecoderLayer(nn.Module):
    """Pre-norm block: ``h += attn(norm(h)); h += mlp(norm(h))`` (Llama's)."""

    def __init__(self, config: Any, attn: nn.Module) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = attn
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Any,
        attention_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, maps = self.self_attn(
            self.input_layernorm(hidden_states),
            past_key_values=cache,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            position_embeddings=position_embeddings,
        )
        hidden_states = hidden_states + a
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, maps


def _rope_dim(config: Any) -> int:
    if isinstance(config, DiffTransformerConfig):
        return config.component_head_dim
    return config.attention_head_dim


class _BackboneMixin:
    """Shared forward of the two backbones (embeddings -> layers -> final norm)."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Hidden states of the last layer (B, T, E), the cache, and optionally per-layer outputs.

        Args:
            input_ids: (B, T) token ids; exactly one of ``input_ids`` / ``inputs_embeds``.
            attention_mask: (B, S) padding mask over cached + new tokens (1 = token), or None.
            position_ids: (B, T) or (1, T) positions; default from the cache length (and the
                padding mask, as ``generate`` does).
            cache: a transformers ``Cache``; ``past_key_values`` is accepted as an alias.
            inputs_embeds: (B, T, E) instead of ``input_ids``.
            use_cache: create a ``DynamicCache`` when none is given. Default ``config.use_cache``.
            output_attentions: return per-layer attention maps (DIFF: A1 − λ·A2).
            output_hidden_states: return the embeddings and every layer's output.
        """
        cfg = self.config
        if past_key_values is not None:
            if cache is not None:
                raise ValueError("past_key_values: pass the cache once, as cache= (preferred)")
            cache = past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids, inputs_embeds: expected exactly one of them")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids: expected (B, T), got shape {tuple(input_ids.shape)}")
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = cfg.use_cache if use_cache is None else use_cache
        output_attentions = bool(output_attentions)
        if use_cache and cache is None:
            cache = DynamicCache(config=cfg)
        b, t, _ = inputs_embeds.shape
        past = 0 if cache is None else cache.get_seq_length()
        keep = _key_padding(attention_mask, b, past + t)
        if position_ids is None:
            position_ids = default_position_ids(b, t, past, keep, inputs_embeds.device)
        elif position_ids.dim() == 1:
            position_ids = position_ids[None]
        pos_emb = rope_cos_sin(position_ids, _rope_dim(cfg), cfg.rope_theta, inputs_embeds.dtype)
        hidden = inputs_embeds
        all_hidden: list[torch.Tensor] = []
        all_maps: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden, maps = layer(hidden, pos_emb, cache, attention_mask, output_attentions)
            if output_attentions:
                all_maps.append(maps)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return make_output(
            BaseModelOutputWithPast,
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_maps) if output_attentions else None,
        )


class _CausalLMMixin:
    """Shared LM head forward: logits, shifted cross-entropy loss, cache passthrough."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Next-token logits (B, T, V) and, with ``labels`` (B, T), the mean shifted cross-entropy.

        Arguments as the backbone's forward, plus ``labels`` (-100 = ignored) and
        ``logits_to_keep`` (compute logits for the last n positions only; 0 = all). The cache
        comes back as ``output.cache`` (``output.past_key_values`` is transformers' deprecated
        alias); with ``output_attentions`` ``output.attentions`` holds one map per layer.

        Examples:
            >>> import torch
            >>> from paperbricks.diffattn.models import (
            ...     DiffTransformerConfig, DiffTransformerForCausalLM)
            >>> cfg = DiffTransformerConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
            ...                             num_hidden_layers=2, num_attention_heads=2)
            >>> model = DiffTransformerForCausalLM(cfg).eval()
            >>> ids = torch.randint(0, 64, (1, 8))
            >>> out = model(ids, labels=ids, output_attentions=True)
            >>> out.logits.shape, out.attentions[0].shape
            (torch.Size([1, 8, 64]), torch.Size([1, 2, 8, 8]))
            >>> model.generate(ids, max_new_tokens=4, do_sample=False).shape
            torch.Size([1, 12])
        """
        for key in kwargs:
            if key not in ("return_dict", "cache_position"):
                logger.debug("ignoring unused forward argument %r", key)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            past_key_values=past_key_values,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        return make_output(
            CausalLMOutputWithPast,
            loss=loss,
            logits=logits,
            cache=output_cache(out),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


# ----------------------------------------------------------------------------------------------
# Differential Transformer


class DiffTransformerPreTrainedModel(PreTrainedModel):
    """Base class: config class, weight init (HF scheme plus the λ vectors and γ)."""

    config: DiffTransformerConfig
    config_class = DiffTransformerConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["DecoderLayer"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DiffLambda):
            for p in (module.lambda_q1, module.lambda_k1, module.lambda_q2, module.lambda_k2):
                init.normal_(p, 0.0, self.config.lambda_std)
        elif isinstance(module, MultiheadDiffAttn) and module.subln is not None:
            init.ones_(module.subln.weight)


class DiffTransformerModel(_BackboneMixin, DiffTransformerPreTrainedModel):
    """The DIFF decoder without the LM head (``model`` inside :class:`DiffTransformerForCausalLM`)."""

    def __init__(self, config: DiffTransformerConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            DecoderLayer(
                config,
                MultiheadDiffAttn(
                    config.hidden_size,
                    depth,
                    config.num_attention_heads,
                    config.num_key_value_heads,
                    layout=config.layout,
                    rope_layout=config.rope_layout,
                    norm_affine=config.norm_affine,
                    lambda_init=config.lambda_init,
                    rope_theta=config.rope_theta,
                    impl=config.attn_impl,
                    head_dim=config.head_dim,
                    lambda_std=config.lambda_std,
                    norm_eps=config.head_norm_eps,
                    head_norm=config.head_norm,
                    lambda_scale=config.lambda_scale,
                ),
            )
            for depth in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()


class DiffTransformerForCausalLM(_CausalLMMixin, DiffTransformerPreTrainedModel, GenerationMixin):
    """Differential Transformer language model (pre-RMSNorm, SwiGLU, RoPE, differential attention).

    Args:
        config: a :class:`DiffTransformerConfig`.

    See :meth:`forward` for inputs and outputs; ``generate()`` works with the default
    ``DynamicCache``.
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DiffTransformerConfig) -> None:
        super().__init__(config)
        self.model = DiffTransformerModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


# ----------------------------------------------------------------------------------------------
# Baseline Transformer


class BaselineTransformerPreTrainedModel(PreTrainedModel):
    """Base class of the ordinary-attention control."""

    config: BaselineTransformerConfig
    config_class = BaselineTransformerConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["DecoderLayer"]
    supports_gradient_checkpointing = False


class BaselineTransformerModel(_BackboneMixin, BaselineTransformerPreTrainedModel):
    """The baseline decoder without the LM head."""

    def __init__(self, config: BaselineTransformerConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            DecoderLayer(config, BaselineAttention(config, i))
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()


class BaselineTransformerForCausalLM(
    _CausalLMMixin, BaselineTransformerPreTrainedModel, GenerationMixin
):
    """The parameter-matched Transformer control (ordinary attention, 2h heads of dim d).

    Args:
        config: a :class:`BaselineTransformerConfig`, usually
            ``BaselineTransformerConfig.from_diff_config(diff_config)``.
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: BaselineTransformerConfig) -> None:
        super().__init__(config)
        self.model = BaselineTransformerModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

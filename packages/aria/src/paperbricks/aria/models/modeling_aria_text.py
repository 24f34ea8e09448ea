"""Aria's MoE text decoder (arXiv 2410.05993, §2): Llama-style attention + fine-grained MoE FFN.

Each decoder layer is pre-norm Llama (RMSNorm, rotate-half RoPE with the config's base, GQA) whose
FFN is Aria's mixture of experts::

    z = x W_rᵀ                               router logits (T, E), no bias, float32
    (i_1..i_k) = top-k of z;  w = softmax(z[i_1..i_k])    (≡ full softmax then renormalise)
    y = Σ_j w_j · E_{i_j}(x) + Shared(x)
    E_e(x) = (silu(x G_e) ⊙ x U_e) D_e       with gate_up_proj[e] = [G_e | U_e]  (d, 2I), used as x @ W
    Shared(x) = down(silu(gate(x)) ⊙ up(x))  one SwiGLU of width I · n_shared (config.hidden_act)

What differs from HF transformers' ``AriaTextForCausalLM`` (the parity oracle; we neither wrap nor
subclass its modules):

- experts run through core-kernels' MoE dispatch: ``experts_backend="grouped"`` = ``permute`` →
  ``grouped_swiglu`` (fused SwiGLU) → ``grouped_mm`` → ``unpermute``, offsets kept on the device
  (``torch._grouped_mm``/Triton on CUDA, torch's CPU grouped GEMM or the reference loop on CPU,
  chosen by ``resolve_grouped_impl``); ``"loop"`` = the per-expert loop of HF 4.57 and the official
  ``USE_GROUPED_GEMM=0`` path (one host sync per expert, the baseline);
- the router computes its logits in float32 (HF: in the model dtype; identical in float32);
- the outputs carry the training terms HF lacks: per-layer ``router_logits``, the Switch
  load-balancing loss ``aux_loss`` and the router ``z_loss`` (summed over layers, padding
  excluded; see :mod:`paperbricks.aria.losses`), used per ``config.aux_loss_mode``:
  ``"autoscaler"`` (official: attached to the final hidden states through ``AuxLossAutoScaler``
  in training, gradient only, the returned ``loss`` is the LM loss), ``"explicit"`` (added to the
  returned ``loss``) or ``"none"`` (reported, never trained on);
- attention is core-kernels' ``attention`` (FlashAttention-2 Triton kernels on CUDA, SDPA on the
  CPU) when there is no padding mask; with an ``attention_mask`` a dense additive mask goes to
  torch SDPA (core-kernels' attention takes no arbitrary masks).

Parameter names equal HF 5.x's (``model.layers.N.mlp.router.weight``,
``mlp.experts.gate_up_proj`` (E, d, 2I), ``mlp.experts.down_proj`` (E, I, d),
``mlp.shared_experts.{gate,up,down}_proj.weight``, ``self_attn.{q,k,v,o}_proj``), and the on-disk
names HF ``save_pretrained`` writes (``mlp.experts.fc1.weight`` / ``fc2.weight``) are renamed on load
and back on save, so an HF ``aria_text`` directory loads with no missing or unexpected keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast

from paperbricks.core_kernels.attention import attention
from paperbricks.core_kernels.moe import moe_decode, moe_ffn, swiglu, topk_route
from paperbricks.core_kernels.norm import RMSNorm
from paperbricks.core_kernels.rope import apply_rope, rope_angles

from ..losses import attach_aux_loss, router_aux_losses
from .configuration_aria import AriaTextConfig

__all__ = [
    "AriaCausalLMOutput",
    "AriaExperts",
    "AriaMoELayer",
    "AriaSharedExperts",
    "AriaTextAttention",
    "AriaTextDecoderLayer",
    "AriaTextForCausalLM",
    "AriaTextModel",
    "AriaTextModelOutput",
    "AriaTextPreTrainedModel",
    "causal_lm_loss",
    "causal_lm_output",
]

logger = logging.getLogger(__name__)

_EXPERT_BACKENDS = ("grouped", "loop")
_GROUPED_IMPLS = ("auto", "reference", "torch", "triton")


# ---- outputs -------------------------------------------------------------------------------------


@dataclass
class AriaTextModelOutput(MoeModelOutputWithPast):
    """Decoder output: HF's MoE fields (``last_hidden_state``, ``cache``, ``hidden_states``,
    ``attentions``, ``router_logits`` (one (B·T, E) float32 tensor per layer)) plus
    ``aux_loss`` (Switch load balancing, summed over layers, coefficient included) and ``z_loss``
    (router z-loss, summed over layers). Both are None when not computed."""

    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None


@dataclass
class AriaCausalLMOutput(MoeCausalLMOutputWithPast):
    """Causal-LM output: ``loss`` (LM loss, plus ``aux_loss + z_loss`` when
    ``aux_loss_mode="explicit"``), ``aux_loss``, ``z_loss``, ``logits``, ``cache``,
    ``hidden_states``, ``attentions``, ``router_logits``."""

    z_loss: torch.Tensor | None = None


# ---- MoE -----------------------------------------------------------------------------------------


class AriaSharedExperts(nn.Module):
    """Aria's shared experts: one SwiGLU MLP of width ``I · n_shared`` applied to every token.

    Names (``gate_proj``/``up_proj``/``down_proj``) match HF ``AriaSharedExpertsMLP``.
    """

    def __init__(self, config: AriaTextConfig):
        super().__init__()
        width = config.intermediate_size * config.moe_num_shared_experts
        bias = getattr(config, "mlp_bias", False)
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, width, bias=bias)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., d) → (..., d)."""
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class AriaExperts(nn.Module):
    """All routed experts of a layer as two stacked tensors (HF 5.x names and orientation).

    ``gate_up_proj`` (E, d, 2I): columns ``[:I]`` gate (through SiLU), ``[I:]`` up, used as
    ``x @ W`` (HF marks it ``is_transposed=True``); ``down_proj`` (E, I, d). This is exactly the
    core-kernels stacked layout ``w1``/``w2``, so no copy or transpose happens on the hot path.
    The routed experts are always SiLU-gated (HF and the official code), whatever
    ``config.hidden_act`` says.
    """

    def __init__(self, config: AriaTextConfig):
        super().__init__()
        e, d, i = config.moe_num_experts, config.hidden_size, config.intermediate_size
        self.num_experts = e
        self.gate_up_proj = nn.Parameter(torch.empty(e, d, 2 * i))
        self.down_proj = nn.Parameter(torch.empty(e, i, d))

    def forward_grouped(
        self, x: torch.Tensor, expert_idx: torch.Tensor, weights: torch.Tensor, impl: str
    ) -> torch.Tensor:
        """Sorted path (no host sync unless ``impl="reference"``): (T, d) → (T, d)."""
        return moe_ffn(x, expert_idx, weights, self.gate_up_proj, self.down_proj, impl=impl)

    def forward_decode(
        self, x: torch.Tensor, expert_idx: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Few-token path: gather the chosen experts' weights, einsum (no sort)."""
        return moe_decode(x, expert_idx, weights, self.gate_up_proj, self.down_proj)

    def forward_loop(
        self, x: torch.Tensor, expert_idx: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Per-expert loop (HF 4.57 / official ``USE_GROUPED_GEMM=0``): one host sync per expert."""
        acc = torch.promote_types(x.dtype, torch.float32)
        out = torch.zeros(x.shape[0], x.shape[1], dtype=acc, device=x.device)  # (T, d)
        for e in range(self.num_experts):
            tok, slot = torch.where(expert_idx == e)  # (m_e,) each
            if tok.numel() == 0:
                continue
            h = swiglu(x[tok] @ self.gate_up_proj[e]) @ self.down_proj[e]  # (m_e, d)
            out = out.index_add(0, tok, h.to(acc) * weights[tok, slot, None].to(acc))
        return out.to(x.dtype)


class AriaMoELayer(nn.Module):
    """Aria's MoE FFN: top-k router (softmax over the selected logits), routed experts, shared
    experts. ``forward(x)`` returns ``(y, router_logits)``.

    Args:
        config: :class:`AriaTextConfig` (``hidden_size``, ``intermediate_size`` per expert,
            ``moe_num_experts``, ``moe_topk``, ``moe_num_shared_experts``, ``experts_backend``).

    Attributes (settable after construction):
        experts_backend: ``"grouped"`` or ``"loop"`` (from the config).
        impl: grouped-GEMM backend for ``"grouped"``: ``"auto"`` (default), ``"reference"``,
            ``"torch"`` or ``"triton"`` (core-kernels ``resolve_grouped_impl``).
        decode_max_tokens: with ``"grouped"``, at most this many tokens take the gather+einsum
            decode path instead of the sort (default 1: single-token decode).

    Examples:
        >>> from paperbricks.aria.models.configuration_aria import AriaTextConfig
        >>> cfg = AriaTextConfig(vocab_size=32, hidden_size=16, intermediate_size=8,
        ...                      num_hidden_layers=1, num_attention_heads=2, moe_num_experts=4,
        ...                      moe_topk=2, moe_num_shared_experts=1)
        >>> layer = AriaMoELayer(cfg)
        >>> _ = [torch.nn.init.normal_(p, std=0.1) for p in layer.parameters()]
        >>> y, logits = layer(torch.randn(2, 3, 16))
        >>> y.shape, logits.shape
        (torch.Size([2, 3, 16]), torch.Size([6, 4]))
    """

    def __init__(self, config: AriaTextConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.num_experts = config.moe_num_experts
        self.top_k = config.moe_topk
        self.router = nn.Linear(config.hidden_size, config.moe_num_experts, bias=False)
        self.experts = AriaExperts(config)
        if config.moe_num_shared_experts > 0:
            self.shared_experts = AriaSharedExperts(config)
        else:
            self.shared_experts = None
        self.experts_backend = getattr(config, "experts_backend", "grouped")
        self.impl = "auto"
        self.decode_max_tokens = 1

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router on tokens ``x`` (T, d): ``(logits (T, E) float32, expert_idx (T, k) int64,
        weights (T, k) float32)``, weights = softmax over the k selected logits."""
        acc = torch.promote_types(x.dtype, torch.float32)
        logits = x.to(acc) @ self.router.weight.to(acc).T  # (T, E)
        expert_idx, weights = topk_route(logits, self.top_k, mode="topk_softmax")  # (T, k)
        return logits, expert_idx, weights

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (..., d) → ``(y (..., d), router_logits (N, E) float32)``, N = numel / d."""
        if not isinstance(x, torch.Tensor) or x.shape[-1] != self.hidden_size:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(f"x: expected (..., hidden_size={self.hidden_size}), got {got}")
        if self.experts_backend not in _EXPERT_BACKENDS:
            raise ValueError(
                f"experts_backend: expected one of {_EXPERT_BACKENDS}, got {self.experts_backend!r}"
            )
        if self.impl not in _GROUPED_IMPLS:
            raise ValueError(f"impl: expected one of {_GROUPED_IMPLS}, got {self.impl!r}")
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.hidden_size)  # (N, d)
        logits, expert_idx, weights = self.route(xt)
        if self.experts_backend == "loop":
            y = self.experts.forward_loop(xt, expert_idx, weights)
        elif xt.shape[0] <= self.decode_max_tokens:
            y = self.experts.forward_decode(xt, expert_idx, weights)
        else:
            y = self.experts.forward_grouped(xt, expert_idx, weights, self.impl)  # (N, d)
        if self.shared_experts is not None:
            y = y + self.shared_experts(xt)
        return y.reshape(*lead, self.hidden_size), logits


# ---- attention -----------------------------------------------------------------------------------


def _padding_mask(attention_mask: torch.Tensor, t: int, s: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, T, S) mask: query i (absolute position S − T + i) sees key j iff
    j ≤ S − T + i and ``attention_mask[b, j] != 0``; blocked entries get the dtype's minimum
    (finite, so a fully padded query row stays finite, as in HF)."""
    keys_valid = attention_mask[:, -s:].to(torch.bool)  # (B, S)
    q_pos = torch.arange(t, device=attention_mask.device) + (s - t)  # (T,)
    causal = torch.arange(s, device=attention_mask.device)[None, :] <= q_pos[:, None]  # (T, S)
    allowed = causal[None] & keys_valid[:, None, :]  # (B, T, S)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # (B, 1, T, S)


class AriaTextAttention(nn.Module):
    """Llama-style multi-head attention with GQA and rotate-half RoPE (names as HF)."""

    def __init__(self, config: AriaTextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.impl = getattr(config, "attn_impl", "auto")
        d, hd, bias = config.hidden_size, self.head_dim, config.attention_bias
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, T, d); ``cos``/``sin`` (B, 1, T, D/2); ``attention_mask`` (B, S) or None."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B,H,T,D)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin, layout="half", impl=self.impl)
        k = apply_rope(k, cos, sin, layout="half", impl=self.impl)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, Hkv, S, D)
        s = k.shape[2]
        weights = None
        if attention_mask is None and not output_attentions:
            o = attention(q, k, v, causal=True, scale=self.scaling, impl=self.impl)
        else:
            n_rep = self.num_heads // self.num_kv_heads
            kr = k.repeat_interleave(n_rep, dim=1)  # (B, H, S, D)
            vr = v.repeat_interleave(n_rep, dim=1)
            if attention_mask is None:
                attention_mask = torch.ones(b, s, dtype=torch.long, device=x.device)
            mask = _padding_mask(attention_mask, t, s, q.dtype)  # (B, 1, T, S)
            if output_attentions:
                scores = (q @ kr.transpose(-2, -1)) * self.scaling + mask  # (B, H, T, S)
                weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
                o = weights @ vr
            else:
                o = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=self.scaling)
        o = o.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)  # (B, T, H·D)
        return self.o_proj(o), weights


class AriaTextDecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + Attn(RMSNorm(x)); y = h + MoE(RMSNorm(h))``."""

    def __init__(self, config: AriaTextConfig, layer_idx: int):
        super().__init__()
        impl = getattr(config, "attn_impl", "auto")
        self.self_attn = AriaTextAttention(config, layer_idx)
        self.mlp = AriaMoELayer(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, impl=impl)
        self.post_attention_layernorm = RMSNorm(
            config.hidden_size, eps=config.rms_norm_eps, impl=impl
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns ``(hidden (B, T, d), router_logits (B·T, E), attention weights or None)``."""
        a, weights = self.self_attn(
            self.input_layernorm(x), cos, sin, attention_mask, cache, output_attentions
        )
        h = x + a
        m, router_logits = self.mlp(self.post_attention_layernorm(h))
        return h + m, router_logits, weights


# ---- models --------------------------------------------------------------------------------------


class AriaTextPreTrainedModel(PreTrainedModel):
    """Wires :class:`AriaTextConfig` into HF ``PreTrainedModel`` (init, save/load)."""

    config_class = AriaTextConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["AriaTextDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AriaExperts):
            std = self.config.initializer_range
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)


def _check_aux_mode(config: AriaTextConfig) -> str:
    mode = getattr(config, "aux_loss_mode", "autoscaler")
    if mode not in ("autoscaler", "explicit", "none"):
        raise ValueError(
            f"aux_loss_mode: expected 'autoscaler', 'explicit' or 'none', got {mode!r}"
        )
    return mode


class AriaTextModel(AriaTextPreTrainedModel):
    """Aria's decoder without the LM head: embeddings, MoE decoder layers, final RMSNorm.

    ``forward`` takes ``input_ids`` (B, T) or ``inputs_embeds`` (B, T, d) (so the multimodal
    model can merge image features first), ``attention_mask`` (B, S) with 1 = token, 0 = padding
    (S = cached + T), ``position_ids`` (B, T) (default: cached length + arange(T)), a transformers
    ``Cache`` (``cache=``, or the deprecated ``past_key_values=``) and ``use_cache``. It returns
    :class:`AriaTextModelOutput` with ``router_logits`` per layer and, when ``compute_aux`` is
    true (default: in training mode), the summed ``aux_loss``/``z_loss`` over non-padding tokens.
    In ``aux_loss_mode="autoscaler"`` during training with gradients on, ``aux_loss + z_loss`` is
    attached to ``last_hidden_state`` through ``AuxLossAutoScaler``.

    Examples:
        >>> from paperbricks.aria.models.configuration_aria import AriaTextConfig
        >>> cfg = AriaTextConfig(vocab_size=32, hidden_size=16, intermediate_size=8,
        ...                      num_hidden_layers=2, num_attention_heads=2, moe_num_experts=4,
        ...                      moe_topk=2)
        >>> out = AriaTextModel(cfg)(torch.tensor([[1, 5, 7]]))
        >>> out.last_hidden_state.shape, len(out.router_logits)
        (torch.Size([1, 3, 16]), 2)
    """

    def __init__(self, config: AriaTextConfig):
        super().__init__(config)
        rp = config.rope_parameters or {}
        if rp.get("rope_type", "default") != "default":
            raise ValueError(
                f"rope_parameters: only rope_type 'default' is supported, got {rp['rope_type']!r}"
            )
        _check_aux_mode(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [AriaTextDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(
            config.hidden_size, eps=config.rms_norm_eps, impl=getattr(config, "attn_impl", "auto")
        )
        self.rope_theta = float(rp.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def set_experts_backend(self, backend: str, impl: str = "auto") -> None:
        """Switch every MoE layer to ``backend`` (``"grouped"|"loop"``) and grouped ``impl``."""
        if backend not in _EXPERT_BACKENDS:
            raise ValueError(f"backend: expected one of {_EXPERT_BACKENDS}, got {backend!r}")
        if impl not in _GROUPED_IMPLS:
            raise ValueError(f"impl: expected one of {_GROUPED_IMPLS}, got {impl!r}")
        for layer in self.layers:
            layer.mlp.experts_backend = backend
            layer.mlp.impl = impl
        self.config.experts_backend = backend

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        compute_aux: bool | None = None,
        **kwargs: Any,
    ) -> AriaTextModelOutput:
        """See the class docstring. ``compute_aux`` (default ``self.training``) computes the
        aux losses; extra HF keyword arguments (``return_dict``, ``cache_position`` ...) are
        accepted and ignored."""
        if "past_key_values" in kwargs:
            if cache is not None:
                raise ValueError("cache/past_key_values: pass only one of them")
            cache = kwargs.pop("past_key_values")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids/inputs_embeds: pass exactly one of them")
        if inputs_embeds is None:
            if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
                raise ValueError(f"input_ids: expected (B, T) int64, got {input_ids!r:.80}")
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, d)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds: expected (B, T, {self.config.hidden_size}), got "
                f"{tuple(inputs_embeds.shape)}"
            )
        b, t, _ = inputs_embeds.shape
        if use_cache is None:  # no cache while training unless asked for (it only costs memory)
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != b:
                raise ValueError(
                    f"attention_mask: expected (B={b}, S) with S = cached + new tokens "
                    f"({past} + {t}), got {tuple(attention_mask.shape)}"
                )
            if attention_mask.shape[1] < past + t:
                raise ValueError(
                    f"attention_mask: expected at least S = {past + t} columns, got "
                    f"{attention_mask.shape[1]}"
                )
        if position_ids is None:
            position_ids = (torch.arange(t, device=inputs_embeds.device) + past)[None]  # (1, T)
        elif tuple(position_ids.shape) not in ((1, t), (b, t)):
            raise ValueError(
                f"position_ids: expected (B={b} or 1, T={t}), got {tuple(position_ids.shape)}"
            )
        cos, sin = rope_angles(
            position_ids, self.config.head_dim, self.rope_theta, dtype=inputs_embeds.dtype
        )  # (B|1, T, D/2)
        cos, sin = cos[:, None], sin[:, None]  # (B|1, 1, T, D/2)
        output_attentions = bool(output_attentions)
        output_hidden_states = bool(output_hidden_states)
        hidden = inputs_embeds
        all_hidden: list[torch.Tensor] = []
        all_attn: list[torch.Tensor | None] = []
        router_logits: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            hidden, logits, weights = layer(
                hidden, cos, sin, attention_mask, cache, output_attentions
            )
            router_logits.append(logits)
            all_attn.append(weights)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        aux_loss = z = None
        mode = _check_aux_mode(self.config)
        if compute_aux is None:
            compute_aux = self.training
        if compute_aux:
            token_mask = attention_mask[:, -t:] if attention_mask is not None else None
            with torch.set_grad_enabled(torch.is_grad_enabled() and mode != "none"):
                aux_loss, z = router_aux_losses(
                    router_logits,
                    self.config.moe_topk,
                    aux_coef=self.config.router_aux_loss_coef,
                    z_coef=self.config.router_z_loss_coef,
                    attention_mask=token_mask,
                )
            if mode == "autoscaler" and self.training and torch.is_grad_enabled():
                hidden = attach_aux_loss(hidden, aux_loss + z)
        return AriaTextModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
            router_logits=tuple(router_logits),
            aux_loss=aux_loss,
            z_loss=z,
        )


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, mean over the labels that are not -100, in float32.

    ``logits`` (B, T, V) predict ``labels[:, 1:]`` from positions ``:-1`` (HF's shift).
    """
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels: expected shape {tuple(logits.shape[:2])} like the logits' (B, T), got "
            f"{tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (B·(T-1), V)
    shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


class AriaTextForCausalLM(AriaTextPreTrainedModel, GenerationMixin):
    """Aria's text-only causal LM: :class:`AriaTextModel` + untied ``lm_head``, with ``generate``.

    ``forward(input_ids, attention_mask, position_ids, cache, inputs_embeds, labels, use_cache,
    logits_to_keep, output_attentions, output_hidden_states)`` returns
    :class:`AriaCausalLMOutput`. With ``labels`` (B, T) (-100 = ignored) ``loss`` is the shifted
    cross-entropy; with ``aux_loss_mode="explicit"`` it also includes ``aux_loss + z_loss``.
    The aux losses are computed in training mode or whenever ``labels`` are given.

    Examples:
        >>> from paperbricks.aria.models.configuration_aria import AriaTextConfig
        >>> cfg = AriaTextConfig(vocab_size=32, hidden_size=16, intermediate_size=8,
        ...                      num_hidden_layers=1, num_attention_heads=2, moe_num_experts=4,
        ...                      moe_topk=2, aux_loss_mode="explicit")
        >>> model = AriaTextForCausalLM(cfg)
        >>> ids = torch.tensor([[1, 4, 9, 3]])
        >>> out = model(ids, labels=ids)  # explicit: loss = LM loss + aux_loss + z_loss
        >>> lm = causal_lm_loss(out.logits, ids)
        >>> bool(torch.isclose(out.loss, lm + out.aux_loss + out.z_loss))
        True
        >>> model.generate(ids, max_new_tokens=2, do_sample=False).shape
        torch.Size([1, 6])
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: AriaTextConfig):
        super().__init__(config)
        self.model = AriaTextModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> AriaCausalLMOutput:
        """See the class docstring; ``past_key_values=`` is accepted as the old name of
        ``cache``."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            compute_aux=self.training or labels is not None,
            **kwargs,
        )
        return causal_lm_output(
            out, self.lm_head, labels, logits_to_keep, _check_aux_mode(self.config)
        )


def causal_lm_output(
    out: AriaTextModelOutput,
    lm_head: nn.Module,
    labels: torch.LongTensor | None,
    logits_to_keep: int | torch.Tensor,
    aux_loss_mode: str,
) -> AriaCausalLMOutput:
    """The LM head and loss on a decoder output (shared by the text-only and multimodal models).

    ``logits_to_keep``: 0 keeps every position, an int ``n > 0`` the last ``n``, a tensor indexes
    positions. With ``labels``, the loss is the shifted cross-entropy over every position, plus
    ``aux_loss + z_loss`` when ``aux_loss_mode == "explicit"``.
    """
    hidden = out.last_hidden_state  # (B, T, d)
    if isinstance(logits_to_keep, int):
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
    else:
        hidden = hidden[:, logits_to_keep]
    logits = lm_head(hidden)  # (B, T', V)
    loss = None
    if labels is not None:
        if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            raise ValueError("labels: need logits_to_keep=0 (the loss uses every position)")
        loss = causal_lm_loss(logits, labels)
        if aux_loss_mode == "explicit":
            loss = loss + out.aux_loss + out.z_loss
    return AriaCausalLMOutput(
        loss=loss,
        aux_loss=out.aux_loss,
        z_loss=out.z_loss,
        logits=logits,
        cache=out.cache,
        hidden_states=out.hidden_states,
        attentions=out.attentions,
        router_logits=out.router_logits,
    )


def _register() -> None:
    """Register with the Auto classes and rename HF's on-disk expert names on load/save."""
    from transformers import conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    rules = [
        (r"mlp\.experts\.fc1\.weight", "mlp.experts.gate_up_proj"),
        (r"mlp\.experts\.fc2\.weight", "mlp.experts.down_proj"),
    ]
    conversion_mapping.register_checkpoint_conversion_mapping(
        AriaTextConfig.model_type,
        [WeightRenaming(source_patterns=s, target_patterns=d) for s, d in rules],
        overwrite=True,
    )
    AutoModel.register(AriaTextConfig, AriaTextModel, exist_ok=True)
    AutoModelForCausalLM.register(AriaTextConfig, AriaTextForCausalLM, exist_ok=True)


_register()

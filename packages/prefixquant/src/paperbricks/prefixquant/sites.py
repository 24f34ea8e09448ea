"""Where PrefixQuant acts inside a Llama-family decoder: the per-layer module "sites".

PrefixQuant (arXiv:2410.05265 §3) touches the same places in every decoder layer: the two
RMSNorms, q/k/v/o projections, gate/up/down projections, the embeddings, the final norm and the
lm_head. The official code hard-codes Llama/Qwen2/Mistral/InternLM attribute paths; here
:func:`resolve_sites` finds them generically on any Hugging Face causal LM whose decoder layers have
``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, ``input_layernorm`` and
``post_attention_layernorm`` (Llama, Mistral, Qwen2, ...) and raises
:class:`UnsupportedModelError` naming what is missing otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["LayerSites", "ModelSites", "UnsupportedModelError", "resolve_sites"]

logger = logging.getLogger(__name__)

_ATTN_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP_NAMES = ("gate_proj", "up_proj", "down_proj")


class UnsupportedModelError(ValueError):
    """The model is not a Llama-family causal LM (the message names the missing module)."""


@dataclass
class LayerSites:
    """The modules of one decoder layer that PrefixQuant rotates, hooks or quantizes.

    Attributes:
        index: the layer's position in the decoder (0-based).
        layer: the decoder layer module.
        attn: its ``self_attn`` module (carries ``qk_hadamard``/``k_quantizer``/``pq_num_prefix``).
        mlp: its ``mlp`` module.
        input_norm: ``input_layernorm`` (feeds q/k/v).
        post_attention_norm: ``post_attention_layernorm`` (feeds gate/up).
        q_proj, k_proj, v_proj, o_proj: attention projections.
        gate_proj, up_proj, down_proj: MLP projections (down_proj's input is the detection site).
    """

    index: int
    layer: nn.Module
    attn: nn.Module
    mlp: nn.Module
    input_norm: nn.Module
    post_attention_norm: nn.Module
    q_proj: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    o_proj: nn.Module
    gate_proj: nn.Module
    up_proj: nn.Module
    down_proj: nn.Module


@dataclass
class ModelSites:
    """The model-level sites plus every layer's :class:`LayerSites`.

    Attributes:
        embed_tokens: the input embedding (``nn.Embedding``).
        layers: one :class:`LayerSites` per decoder layer, in order.
        final_norm: the norm before the lm_head.
        lm_head: the output projection (``nn.Linear``).
        config: the model's HF config.
        family: ``config.model_type`` (``"llama"``, ``"mistral"``, ``"qwen2"``, ...).
        decoder: the inner decoder module (``model.model`` for a ``*ForCausalLM``).
    """

    embed_tokens: nn.Module
    layers: list[LayerSites]
    final_norm: nn.Module
    lm_head: nn.Module
    config: Any
    family: str
    decoder: nn.Module

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _need(obj: Any, name: str, where: str, model: nn.Module) -> Any:
    mod = getattr(obj, name, None)
    if mod is None:
        raise UnsupportedModelError(
            f"model: {type(model).__name__} is not a supported Llama-family causal LM: "
            f"{where} has no '{name}' (expected decoder layers with self_attn.{{q,k,v,o}}_proj, "
            "mlp.{gate,up,down}_proj, input_layernorm and post_attention_layernorm)"
        )
    return mod


def resolve_sites(model: nn.Module) -> ModelSites:
    """Locate every PrefixQuant site of a Hugging Face Llama-family causal LM.

    Args:
        model: a ``*ForCausalLM`` (``model.model.layers`` + ``model.lm_head``), e.g.
            ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``.

    Returns:
        :class:`ModelSites`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        UnsupportedModelError: a required module is missing (the message names it).

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing.factories import tiny_llama_config
        >>> sites = resolve_sites(LlamaForCausalLM(tiny_llama_config()))
        >>> sites.family, len(sites.layers), type(sites.layers[0].down_proj).__name__
        ('llama', 2, 'Linear')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(
            f"model: {type(model).__name__} has no HF 'config'; expected a transformers causal LM"
        )
    decoder = _need(model, "model", "the causal LM", model)
    layers_mod = _need(decoder, "layers", "model.model", model)
    embed = _need(decoder, "embed_tokens", "model.model", model)
    final_norm = _need(decoder, "norm", "model.model", model)
    lm_head = _need(model, "lm_head", "the causal LM", model)
    if not isinstance(lm_head, nn.Linear):
        raise UnsupportedModelError(
            f"model: lm_head must be an nn.Linear, got {type(lm_head).__name__}"
        )
    layers: list[LayerSites] = []
    for i, layer in enumerate(layers_mod):
        where = f"model.model.layers[{i}]"
        attn = _need(layer, "self_attn", where, model)
        mlp = _need(layer, "mlp", where, model)
        mods = {n: _need(attn, n, f"{where}.self_attn", model) for n in _ATTN_NAMES}
        mods |= {n: _need(mlp, n, f"{where}.mlp", model) for n in _MLP_NAMES}
        layers.append(
            LayerSites(
                index=i,
                layer=layer,
                attn=attn,
                mlp=mlp,
                input_norm=_need(layer, "input_layernorm", where, model),
                post_attention_norm=_need(layer, "post_attention_layernorm", where, model),
                **mods,
            )
        )
    if not layers:
        raise UnsupportedModelError("model: the decoder has no layers")
    family = str(getattr(config, "model_type", "") or type(model).__name__)
    return ModelSites(
        embed_tokens=embed,
        layers=layers,
        final_norm=final_norm,
        lm_head=lm_head,
        config=config,
        family=family,
        decoder=decoder,
    )

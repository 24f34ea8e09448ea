"""L-Mul attention for transformers: ``attn_implementation="lmul"`` (arXiv 2410.00907, §3.3).

:func:`register_lmul_attention` adds an attention function to transformers' global
``AttentionInterface`` (and the matching mask builder to ``AttentionMaskInterface``), so that every
model that supports pluggable attention (``_supports_attention_backend``: Llama, Mistral, Qwen2,
Gemma, ...) runs with ``from_pretrained(DIR, attn_implementation="lmul")`` or
``model.set_attn_implementation("lmul")``, ``generate()`` and its KV cache included. Inside,
:func:`paperbricks.lmul.modules.lmul_attention` computes ``QKᵀ`` and ``PV`` through L-Matmul with an
exact float32 softmax; the 1/√d scaling is an ordinary multiply unless ``config.lmul_scale``.

**Which config a model uses.** Each registered name carries a default :class:`LMulConfig`
(``register_lmul_attention(LMulConfig(mantissa_bits=4), name="lmul:4")`` gives several settings
side by side). A model can carry its own: :func:`set_lmul_attention` stores the config as a JSON
dict in ``model.config.lmul_config`` (saved by ``save_pretrained``, read back by
``from_pretrained``), and that per-model config wins over the name's default.

**Masks.** Registered names build their masks like ``"eager"`` (an additive float mask, always
materialised for causal layers, sliding windows and padding included); the function also accepts
boolean masks and, with no mask, applies ``is_causal`` itself.

What differs from eager attention: only the products of the two matmuls. The scores are upcast to
float32 after the first L-Matmul (eager adds the mask in the model dtype), and the probabilities
are cast to the model dtype before the second, as eager does. Importing this module does not
import transformers; registering does.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

import torch

from paperbricks.core_kernels.float_bits import FloatFormat

from .config import LMulConfig
from .modules import lmul_attention

__all__ = [
    "LMUL_CONFIG_ATTR",
    "lmul_config_from_dict",
    "lmul_config_to_dict",
    "register_lmul_attention",
    "set_lmul_attention",
]

logger = logging.getLogger(__name__)

#: The attribute of a transformers ``PretrainedConfig`` holding a per-model L-Mul config (a dict).
LMUL_CONFIG_ATTR = "lmul_config"

#: name -> the default LMulConfig of that registered attention function.
_REGISTERED: dict[str, LMulConfig] = {}

_RESERVED_SUBSTRINGS = ("sdpa", "flash", "flex_attention", "paged", "eager")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --- config <-> dict -------------------------------------------------------------------------------


def lmul_config_to_dict(config: LMulConfig) -> dict[str, Any]:
    """A JSON-serialisable dict of ``config`` (for ``model.config.lmul_config``).

    ``accumulate`` becomes ``"float32"``/``"float64"`` or a dict of the ``FloatFormat`` fields.

    Examples:
        >>> from paperbricks.lmul.config import LMulConfig
        >>> lmul_config_to_dict(LMulConfig(mantissa_bits=4))["accumulate"]
        'float32'
    """
    if not isinstance(config, LMulConfig):
        raise TypeError(f"config: expected an LMulConfig, got {type(config).__name__}")
    acc = config.accumulate
    if isinstance(acc, FloatFormat):
        accumulate: Any = {
            "exp_bits": acc.exp_bits,
            "man_bits": acc.man_bits,
            "bias": acc.bias,
            "finite": acc.finite,
            "name": acc.name,
        }
    else:
        accumulate = str(acc).removeprefix("torch.")
    return {
        "mantissa_bits": config.mantissa_bits,
        "semantics": config.semantics,
        "operand_rounding": config.operand_rounding,
        "accumulate": accumulate,
        "backward": config.backward,
        "targets": list(config.targets),
        "lmul_scale": config.lmul_scale,
        "impl": config.impl,
        "chunk_size": config.chunk_size,
        "version": config.version,
    }


def lmul_config_from_dict(data: dict[str, Any]) -> LMulConfig:
    """The :class:`LMulConfig` of a dict written by :func:`lmul_config_to_dict`.

    Missing keys take the dataclass defaults; unknown keys raise.

    Raises:
        TypeError: ``data`` is not a dict.
        ValueError: unknown keys, an unknown ``accumulate`` or invalid field values.
    """
    if not isinstance(data, dict):
        raise TypeError(f"lmul_config: expected a dict, got {type(data).__name__}")
    fields = set(LMulConfig.__dataclass_fields__)
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"lmul_config: unknown keys {unknown} (known: {sorted(fields)})")
    kwargs = dict(data)
    acc = kwargs.get("accumulate")
    if isinstance(acc, str):
        if acc not in _DTYPES:
            raise ValueError(
                f"lmul_config['accumulate']: expected {sorted(_DTYPES)} or a FloatFormat dict, "
                f"got {acc!r}"
            )
        kwargs["accumulate"] = _DTYPES[acc]
    elif isinstance(acc, dict):
        kwargs["accumulate"] = FloatFormat(**acc)
    if "targets" in kwargs and isinstance(kwargs["targets"], list):
        kwargs["targets"] = tuple(kwargs["targets"])
    return LMulConfig(**kwargs)


@lru_cache(maxsize=64)
def _config_from_json(text: str) -> LMulConfig:
    return lmul_config_from_dict(json.loads(text))


def _model_config(module: torch.nn.Module) -> LMulConfig | None:
    """The per-model config stored on the attention module's transformers config, if any."""
    hf_config = getattr(module, "config", None)
    data = getattr(hf_config, LMUL_CONFIG_ATTR, None) if hf_config is not None else None
    if data is None:
        return None
    if isinstance(data, LMulConfig):
        return data
    if not isinstance(data, dict):
        raise TypeError(
            f"config.{LMUL_CONFIG_ATTR}: expected a dict (lmul_config_to_dict), got "
            f"{type(data).__name__}"
        )
    return _config_from_json(json.dumps(data, sort_keys=True))


# --- the attention function --------------------------------------------------------------------------


def _make_attention_fn(name: str):
    """The transformers attention function for registered ``name``."""

    def lmul_attention_forward(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers contract: query (B, H, T, D), key/value (B, Hkv, S, D|Dv), mask
        (B, 1|H, T, ≥S) -> (out (B, T, H, Dv), weights (B, H, T, S))."""
        for unsupported in ("s_aux", "sinks", "position_bias"):
            if kwargs.get(unsupported) is not None:
                raise NotImplementedError(
                    f"attn_implementation={name!r}: {unsupported!r} (attention sinks / position "
                    "bias) is not supported by the L-Mul attention function"
                )
        config = _model_config(module) or _REGISTERED[name]
        s = key.shape[-2]
        if attention_mask is not None and attention_mask.shape[-1] != s:
            attention_mask = attention_mask[..., :s]  # static caches may hand a longer mask
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", False)
        out, probs = lmul_attention(
            query,
            key,
            value,
            config=config,
            scale=scaling,
            attn_mask=attention_mask,
            is_causal=bool(is_causal) and query.shape[-2] > 1,
            softcap=kwargs.get("softcap"),
            dropout_p=float(dropout) if module.training else 0.0,
        )
        return out.transpose(1, 2).contiguous(), probs.to(query.dtype)  # (B, T, H, Dv)

    lmul_attention_forward.__name__ = f"lmul_attention_forward[{name}]"
    return lmul_attention_forward


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty str, got {name!r}")
    bad = [sub for sub in _RESERVED_SUBSTRINGS if sub in name]
    if bad or "/" in name or any(c.isspace() for c in name):
        raise ValueError(
            f"name: {name!r} would be read by transformers as a built-in or hub-kernel "
            f"implementation (no '/', whitespace or {list(_RESERVED_SUBSTRINGS)} allowed); "
            "use e.g. 'lmul' or 'lmul:4'"
        )
    return name


def register_lmul_attention(config: LMulConfig | None = None, name: str = "lmul") -> str:
    """Register L-Mul attention with transformers under ``name``.

    After this, ``AutoModelForCausalLM.from_pretrained(DIR, attn_implementation=name)`` or
    ``model.set_attn_implementation(name)`` runs every attention layer with QKᵀ and PV through
    L-Matmul. Registering an existing name again replaces its config. The function follows the
    transformers 5 contract ``fn(module, query, key, value, attention_mask, scaling=None,
    dropout=0.0, **kwargs) -> (attn_output (B, T, H, Dv), attn_weights)``: GQA by grouping the
    query heads of each key/value head, the eager-style additive mask (boolean masks and
    ``is_causal`` are honoured too), ``softcap`` (Gemma 2), dropout in training mode. Attention
    sinks (``s_aux``) and position biases are rejected with ``NotImplementedError``.

    Args:
        config: the default :class:`LMulConfig` for this name (default ``LMulConfig()``: 3
            mantissa bits, "bits", truncation). A model's own ``config.lmul_config`` (see
            :func:`set_lmul_attention`) takes precedence.
        name: the ``attn_implementation`` string (default ``"lmul"``); must not contain ``/``
            (hub kernels) nor ``sdpa``/``flash``/``flex_attention``/``paged``/``eager``.

    Returns:
        ``name``.

    Raises:
        TypeError: ``config`` is not an :class:`LMulConfig`, ``name`` not a non-empty str.
        ValueError: ``name`` collides with transformers' own naming.

    Examples:
        >>> from paperbricks.lmul.config import LMulConfig
        >>> register_lmul_attention(LMulConfig(mantissa_bits=4), name="lmul:4")
        'lmul:4'
    """
    config = LMulConfig() if config is None else config
    if not isinstance(config, LMulConfig):
        raise TypeError(f"config: expected an LMulConfig, got {type(config).__name__}")
    name = _check_name(name)
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    _REGISTERED[name] = config
    AttentionInterface.register(name, _make_attention_fn(name))
    AttentionMaskInterface.register(name, eager_mask)
    logger.info("registered attn_implementation=%r with %s", name, config)
    return name


def set_lmul_attention(
    model: torch.nn.Module, config: LMulConfig | None = None, *, name: str = "lmul"
) -> torch.nn.Module:
    """Switch a loaded transformers model to L-Mul attention, optionally with its own config.

    With ``config``, it is stored as ``model.config.lmul_config`` (a JSON dict, so it is saved
    by ``save_pretrained`` and read back by ``from_pretrained``) and used by this model whatever
    the registered default of ``name``; ``config=None`` keeps what the model has (or the name's
    default). ``name`` is registered (with ``config`` or ``LMulConfig()``) if it is not yet.

    Args:
        model: a transformers ``PreTrainedModel`` whose class supports pluggable attention.
        config: :class:`LMulConfig` or ``None``.
        name: the registered ``attn_implementation`` (default ``"lmul"``).

    Returns:
        ``model`` (modified in place).

    Raises:
        TypeError: ``model`` has no ``config``/``set_attn_implementation`` (not a transformers
            model) or ``config`` is not an :class:`LMulConfig`.

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing import tiny_llama_config
        >>> from paperbricks.lmul.config import LMulConfig
        >>> model = set_lmul_attention(LlamaForCausalLM(tiny_llama_config()), LMulConfig(mantissa_bits=7))
        >>> model.config._attn_implementation, model.config.lmul_config["mantissa_bits"]
        ('lmul', 7)
    """
    if not (hasattr(model, "config") and hasattr(model, "set_attn_implementation")):
        raise TypeError(
            f"model: expected a transformers PreTrainedModel, got {type(model).__name__}"
        )
    if config is not None and not isinstance(config, LMulConfig):
        raise TypeError(f"config: expected an LMulConfig or None, got {type(config).__name__}")
    name = _check_name(name)
    if name not in _REGISTERED:
        register_lmul_attention(config, name=name)
    if config is not None:
        data = lmul_config_to_dict(config)
        setattr(model.config, LMUL_CONFIG_ATTR, data)
        # Composite models (e.g. vision-language) hand their attention layers the text config.
        get_text = getattr(model.config, "get_text_config", None)
        text_config = get_text() if callable(get_text) else None
        if text_config is not None and text_config is not model.config:
            setattr(text_config, LMUL_CONFIG_ATTR, dict(data))
    model.set_attn_implementation(name)
    return model

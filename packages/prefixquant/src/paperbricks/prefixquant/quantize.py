"""``quantize_``: the PrefixQuant pipeline in one in-place verb (arXiv:2410.05265 §3–4).

Order (spec §2): rotate (R1–R4) → select the outlier-token prefix on the rotated float model →
build its float KV cache → insert quantizers → static calibration (prefix excluded) → MSE clip
initialisation → optional block-wise fine-tuning. Differences from the official code: sites are
resolved generically (any Llama-family decoder), the K quantizer works with or without rotation
(the ``paperbricks_prefixquant`` attention function is always selected), the prefix is a
transformers ``DynamicCache`` and everything runs on CPU as well as CUDA.

Quantizer sites (:func:`insert_quantizers_`):

- ``input_layernorm`` / ``post_attention_layernorm`` → :class:`QuantRMSNorm` whose
  ``output_quantizer`` quantizes the q/k/v (gate/up) input once;
- q/k/v/o/gate/up/down → :class:`QuantLinear` with per-channel weight quantizers; o_proj and
  down_proj also get an ``input_quantizer`` (down_proj's after its online Hadamard);
- ``attn.k_quantizer``: per-KV-head static K quantizer (after RoPE + online Hadamard, non-prefix
  keys only; applied by the attention function);
- ``attn.v_quantizer``: per-group static quantizer of the v_proj output (a forward hook on v_proj).

Not quantized: Q, the attention matmuls, lm_head, the final norm, the embeddings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .calibrate import activation_quantizers, calibrate_, weight_quantizers
from .config import PrefixQuantConfig
from .evaluate import eval_perplexity
from .modules import QuantLinear, QuantRMSNorm
from .quantizers import ActQuantizer, KVQuantizer

__all__ = [
    "QuantizedModelInfo",
    "eval_perplexity",
    "insert_quantizers_",
    "prepare_calibration_ids",
    "quantize_",
]

logger = logging.getLogger(__name__)

DYNAMIC_CLIP_INIT = 0.95  # spec §2.6: the dynamic mode's learnable clip bound starts at 0.95


@dataclass
class QuantizedModelInfo:
    """What :func:`quantize_` did.

    Attributes:
        config: the config used.
        prefix: the ``PrefixSpec`` (None when no prefix is used).
        rotation: the ``RotationState`` (None without rotation).
        prefixed: a ``PrefixedCausalLM`` wrapping the quantized model (None without prefix); use
            it (not the bare model) for evaluation and generation.
        scales: ``{quantizer name: scale list}`` of every static activation / KV quantizer.
        mse_init: per-block statistics of the MSE initialisation (empty when skipped).
        finetune: per-block ``{"before": mse, "after": mse}`` of fine-tuning (empty when skipped).
        seconds: wall time per stage.
    """

    config: PrefixQuantConfig
    prefix: Any = None
    rotation: Any = None
    prefixed: Any = None
    scales: dict[str, list[float]] = field(default_factory=dict)
    mse_init: list[dict[str, Any]] = field(default_factory=list)
    finetune: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _head_dims(cfg: Any, hidden: int) -> tuple[int, int, int]:
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    return heads, kv_heads, head_dim


def attach_v_quantizer_hook(attn: nn.Module) -> Any:
    """Fake-quantize ``attn.v_proj``'s output with ``attn.v_quantizer`` (when set) via a forward
    hook; returns the hook handle. Used by :func:`insert_quantizers_` and by ``load_quantized``."""

    def hook(_mod: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        vq = getattr(attn, "v_quantizer", None)
        return out if vq is None else vq(out)

    return attn.v_proj.register_forward_hook(hook)


def insert_quantizers_(model: nn.Module, config: PrefixQuantConfig) -> Any:
    """Replace the norms and linears of every decoder layer by their fake-quant versions.

    Quantizers are created uncalibrated (run :func:`~.calibrate.calibrate_` next). Selects the
    ``paperbricks_prefixquant`` attention function, which applies ``attn.k_quantizer`` (and the
    online Q/K Hadamard when the model is rotated). Idempotence is refused: a model that already
    carries quantizers raises ``ValueError``.

    Args:
        model: HF Llama-family causal LM (modified in place).
        config: the quantization settings.

    Returns:
        the resolved ``ModelSites`` of the model after insertion.

    Raises:
        UnsupportedModelError: not a Llama-family model.
        ValueError: quantizers already present.
    """
    from .attention import use_prefixquant_attention
    from .sites import resolve_sites

    if not isinstance(config, PrefixQuantConfig):
        raise TypeError(f"config: expected a PrefixQuantConfig, got {type(config).__name__}")
    sites = resolve_sites(model)
    if any(isinstance(m, (QuantLinear, QuantRMSNorm)) for m in model.modules()):
        raise ValueError("model: already carries PrefixQuant quantizers (quantize_ ran before)")
    hidden = sites.embed_tokens.weight.shape[1]
    _, kv_heads, head_dim = _head_dims(sites.config, hidden)
    w_bits = config.w_bits if config.quantize_weights else None

    def act() -> ActQuantizer | None:
        if not config.quantize_activations:
            return None
        if config.a_mode == "dynamic":
            return ActQuantizer(
                config.a_bits, mode="dynamic", granularity="per_token", clip_init=DYNAMIC_CLIP_INIT
            )
        return ActQuantizer(config.a_bits, stat=config.stat, percentile=config.percentile)

    for ls in sites.layers:
        dev = ls.q_proj.weight.device
        layer, attn, mlp = ls.layer, ls.attn, ls.mlp
        layer.input_layernorm = QuantRMSNorm.from_norm(ls.input_norm, act())
        layer.post_attention_layernorm = QuantRMSNorm.from_norm(ls.post_attention_norm, act())
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(attn, name, QuantLinear.from_linear(getattr(ls, name), w_bits=w_bits))
        attn.o_proj = QuantLinear.from_linear(ls.o_proj, w_bits=w_bits, input_quantizer=act())
        mlp.gate_proj = QuantLinear.from_linear(ls.gate_proj, w_bits=w_bits)
        mlp.up_proj = QuantLinear.from_linear(ls.up_proj, w_bits=w_bits)
        mlp.down_proj = QuantLinear.from_linear(ls.down_proj, w_bits=w_bits, input_quantizer=act())
        if config.quantize_kv:
            kw = {"stat": config.stat, "percentile": config.percentile}
            attn.k_quantizer = KVQuantizer.for_keys(config.kv_bits, kv_heads, **kw)
            attn.v_quantizer = KVQuantizer.for_values(
                config.kv_bits, kv_heads, head_dim, config.v_group, **kw
            )
            attach_v_quantizer_hook(attn)
        layer.to(dev)
    use_prefixquant_attention(model)
    return resolve_sites(model)


def prepare_calibration_ids(
    calibration_texts: list[str] | None,
    tokenizer: Any,
    calibration_ids: torch.Tensor | None,
    nsamples: int,
    seqlen: int,
    seed: int,
) -> torch.Tensor:
    """``(nsamples, seqlen)`` calibration windows: given ids, or random windows of the joined texts.

    Windows are taken at random offsets inside the concatenated token stream (no BOS), as the
    official code samples them inside documents.
    """
    if calibration_ids is not None:
        if not isinstance(calibration_ids, torch.Tensor) or calibration_ids.dim() != 2:
            raise ValueError(
                f"calibration_ids: expected an integer tensor (N, T), got {calibration_ids!r:.80}"
            )
        if calibration_ids.is_floating_point() or calibration_ids.numel() == 0:
            raise ValueError(
                f"calibration_ids: expected a non-empty integer tensor, got {calibration_ids.dtype} "
                f"{tuple(calibration_ids.shape)}"
            )
        return calibration_ids.long()
    if not calibration_texts:
        raise ValueError(
            "calibration_texts: expected a non-empty list of strings (or calibration_ids), got "
            f"{calibration_texts!r}; PrefixQuant needs calibration data for its static scales"
        )
    if tokenizer is None:
        raise ValueError(
            "tokenizer: required to tokenize calibration_texts (or pass calibration_ids)"
        )
    if isinstance(calibration_texts, str) or not all(isinstance(t, str) for t in calibration_texts):
        raise TypeError("calibration_texts: expected a list of strings")
    stream: list[int] = []
    for t in calibration_texts:
        stream.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
    if len(stream) < seqlen:
        raise ValueError(
            f"calibration_texts: {len(stream)} tokens in total, fewer than seqlen={seqlen}"
        )
    ids = torch.tensor(stream, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seqlen + 1, (nsamples,), generator=g)
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])


def _select_prefix(
    model: nn.Module, tokenizer: Any, config: PrefixQuantConfig, ids: torch.Tensor, progress: bool
) -> Any:
    from .prefix import select_prefix

    return select_prefix(
        model,
        tokenizer,
        eta=config.eta,
        calibration_ids=ids,
        count_mode=config.count_mode,
        seed=config.seed,
        progress=progress,
    )


def quantize_(
    model: nn.Module,
    config: PrefixQuantConfig | str,
    calibration_texts: list[str] | None = None,
    *,
    tokenizer: Any = None,
    calibration_ids: torch.Tensor | None = None,
    prefix: Any = None,
    nsamples: int = 64,
    seqlen: int = 512,
    batch_size: int = 1,
    mse_samples: int = 8,
    train_samples: int | None = None,
    progress: bool = True,
) -> QuantizedModelInfo:
    """Quantize ``model`` in place with PrefixQuant (fake quant; see ``real.to_real_`` for int kernels).

    Args:
        model: HF Llama-family causal LM (Llama, Mistral, Qwen2, ...), float, on CPU or CUDA.
        config: a :class:`PrefixQuantConfig` or a preset name (``"W4A4KV4"``, ``"W4A8KV4"``,
            ``"W8A8KV8"``).
        calibration_texts: calibration documents (tokenized with ``tokenizer``; random windows of
            ``seqlen`` tokens are drawn with ``config.seed``).
        tokenizer: the model's tokenizer (needed for texts and for automatic prefix selection).
        calibration_ids: ``(N, T)`` token ids used as calibration windows instead of texts.
        prefix: None (select the prefix automatically when a tokenizer is given, else no prefix),
            ``"none"`` (no prefix), or a ``PrefixSpec`` selected beforehand.
        nsamples, seqlen: number and length of calibration windows drawn from the texts.
        batch_size: windows per calibration forward.
        mse_samples: windows used by the MSE initialisation (official 8).
        train_samples: windows used by fine-tuning (default all).
        progress: tqdm progress bars.

    Returns:
        :class:`QuantizedModelInfo`; also attaches ``model.prefixquant_config`` and
        ``model.prefixquant_prefix``.

    Raises:
        ValueError: unknown preset, missing calibration data, bad arguments.
        UnsupportedModelError: not a Llama-family model.

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing import tiny_llama_config
        >>> model = LlamaForCausalLM(tiny_llama_config()).eval()
        >>> ids = torch.randint(3, 60, (4, 16), generator=torch.Generator().manual_seed(0))
        >>> info = quantize_(model, "W8A8KV8", calibration_ids=ids, prefix="none", progress=False)
        >>> model(ids[:1]).logits.shape
        torch.Size([1, 16, 66])
    """
    from .sites import resolve_sites

    if isinstance(config, str):
        config = PrefixQuantConfig.from_preset(config)
    if not isinstance(config, PrefixQuantConfig):
        raise TypeError(
            f"config: expected a PrefixQuantConfig or a preset name, got {type(config).__name__}"
        )
    for name, v in (
        ("nsamples", nsamples),
        ("seqlen", seqlen),
        ("batch_size", batch_size),
        ("mse_samples", mse_samples),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    resolve_sites(model)  # UnsupportedModelError before any work
    ids = prepare_calibration_ids(
        calibration_texts, tokenizer, calibration_ids, nsamples, seqlen, config.seed
    )
    info = QuantizedModelInfo(config=config)
    t0 = time.perf_counter()
    if config.rotate:
        from .rotation import is_rotated, rotate_model_

        if is_rotated(model):
            info.rotation = getattr(model, "pq_rotation_state", None)
        else:
            info.rotation = rotate_model_(
                model, seed=config.seed, online_qk=config.online_qk, online_down=config.online_down
            )
    info.seconds["rotate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    spec = None
    if isinstance(prefix, str):
        if prefix != "none":
            raise ValueError(f"prefix: expected None, 'none' or a PrefixSpec, got {prefix!r}")
    elif prefix is None:
        if tokenizer is not None:
            spec = _select_prefix(model, tokenizer, config, ids, progress)
        else:
            logger.warning(
                "quantize_: no tokenizer and no prefix given; quantizing without a prefix"
            )
    else:
        from .prefix import PrefixSpec

        if not isinstance(prefix, PrefixSpec):
            raise TypeError(
                f"prefix: expected None, 'none' or a PrefixSpec, got {type(prefix).__name__}"
            )
        spec = prefix
    prefixed = None
    if spec is not None and len(spec.ids) > 0:
        from .prefix import PrefixedCausalLM

        prefixed = PrefixedCausalLM(model, spec)  # fp prefix cache, before any quantizer
    info.prefix, info.prefixed = spec, prefixed
    info.seconds["prefix"] = time.perf_counter() - t0

    insert_quantizers_(model, config)
    if prefixed is not None:
        n = len(spec.ids)
        for m in model.modules():
            if hasattr(m, "k_quantizer"):
                m.pq_num_prefix = n

    t0 = time.perf_counter()
    calibrate_(model, ids, prefix=prefixed, batch_size=batch_size, progress=progress)
    info.seconds["calibrate"] = time.perf_counter() - t0

    if config.mse_init:
        from .mse_init import mse_init_

        t0 = time.perf_counter()
        info.mse_init = mse_init_(
            model,
            ids[:mse_samples],
            config,
            prefix=prefixed,
            batch_size=batch_size,
            progress=progress,
        )
        info.seconds["mse_init"] = time.perf_counter() - t0
    if config.epochs > 0:
        from .finetune import finetune_

        t0 = time.perf_counter()
        train = ids if train_samples is None else ids[:train_samples]
        info.finetune = finetune_(model, train, config, prefix=prefixed, progress=progress)
        info.seconds["finetune"] = time.perf_counter() - t0

    info.scales = {
        name: q.scale.detach().float().reshape(-1).tolist()
        for name, q in activation_quantizers(model)
        if q.mode == "static"
    }
    n_w = sum(1 for _ in weight_quantizers(model))
    logger.info(
        "quantize_: %d activation/KV quantizers, %d quantized linears", len(info.scales), n_w
    )
    model.prefixquant_config = config
    model.prefixquant_prefix = spec
    return info

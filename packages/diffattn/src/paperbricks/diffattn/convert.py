"""Weight converters: official (unilm) ↔ HF DiffLlama layouts, DiffLlama -> ours, Llama -> DIFF.

Differential attention (arXiv 2410.05258) has two weight layouts that compute the same thing
(:mod:`paperbricks.diffattn.modules`):

=====================  ============================================  =====================================
                       official ``microsoft/unilm`` (``"unilm"``)     HF ``DiffLlama`` (``"hf"``)
=====================  ============================================  =====================================
component heads        interleaved: diff-head i = (2i, 2i+1)          halves: diff-head i = (i, i + h)
W^V rows               Hkv value heads of width 2d                   2·Hkv heads of width d; diff-KV-head g
                                                                     reads ``cat(v_g, v_{g+Hkv})``
RoPE                   interleaved (GPT-J)                           half (``rotate_half``)
head-norm gain γ       yes, (2d,)                                    none
=====================  ============================================  =====================================

- :func:`unilm_to_hf` / :func:`hf_to_unilm`: permute the rows of W^Q, W^K (component heads, then
  the RoPE row permutation inside each head via core-kernels ``rope.permute_rope_rows``) and W^V;
  W^O and λ are unchanged. γ is kept (our ``layout="hf"`` models may have one), filled with ones,
  or dropped by folding it into W^O's columns (exact: γ multiplies each head's normalised output
  before W^O). Pure permutations are bit-exact and inverse to each other.
- :func:`load_hf_diffllama`: a ``transformers`` ``DiffLlamaForCausalLM`` (object or local
  directory) -> :class:`~paperbricks.diffattn.models.DiffTransformerForCausalLM` with identical
  outputs (``layout="hf"``, half RoPE, no γ, head-norm eps = ``rms_norm_eps``).
- :func:`convert_llama_to_diff`: start a DIFF model from a pretrained HF Llama, after axolotl's
  ``diff-transformer`` (modes ``"split_heads"`` and ``"double_proj"``), dropping the (1 − λ_init)
  factor by default (``keep_lambda_scale=False``) so that the converted model can start from the
  original's function. What holds exactly at conversion time is listed in its docstring.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch

from paperbricks.core_kernels.rope import permute_rope_rows

from .models.configuration_diff_transformer import DiffTransformerConfig
from .models.modeling_diff_transformer import DiffTransformerForCausalLM

__all__ = [
    "convert_llama_to_diff",
    "hf_to_unilm",
    "load_hf_diffllama",
    "unilm_to_hf",
]

logger = logging.getLogger(__name__)

_ROPE_LAYOUTS = ("interleaved", "half")
_LAMBDA_KEYS = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")


def _replace_config(config: DiffTransformerConfig, **changes: Any) -> DiffTransformerConfig:
    """A validated copy of ``config`` with some fields changed."""
    fields = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        fields.pop(key, None)
    fields.update(changes)
    return DiffTransformerConfig(**fields)


def _attn_prefixes(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The key prefixes of every differential-attention module in ``state_dict``."""
    suffix = "diff_lambda.lambda_q1"
    prefixes = sorted(k[: -len(suffix)] for k in state_dict if k.endswith(suffix))
    if not prefixes:
        raise ValueError(
            "state_dict: found no differential-attention weights (no key ending in "
            f"{suffix!r}); expected the state dict of a DiffTransformerForCausalLM, "
            "DiffTransformerModel or MultiheadDiffAttn"
        )
    for p in prefixes:
        for name in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"):
            if p + name not in state_dict:
                raise ValueError(f"state_dict: missing {p + name!r}")
    return prefixes


def _check_config(config: object, layout: str) -> DiffTransformerConfig:
    if not isinstance(config, DiffTransformerConfig):
        raise TypeError(f"config: expected a DiffTransformerConfig, got {type(config).__name__}")
    if config.layout != layout:
        raise ValueError(f"config: expected layout={layout!r} (the source), got {config.layout!r}")
    return config


def _check_rope_target(rope_layout: str | None) -> None:
    if rope_layout is not None and rope_layout not in _ROPE_LAYOUTS:
        raise ValueError(
            f"rope_layout: expected None or one of {_ROPE_LAYOUTS}, got {rope_layout!r}"
        )


def _regroup(w: torch.Tensor, n: int, d: int, to: str) -> torch.Tensor:
    """Reorder the 2n component heads (rows of width d) of a projection between the layouts.

    To ``"hf"``: (n, 2, d, E) interleaved pairs -> (2, n, d, E) halves; to ``"unilm"``: back.
    """
    first, second = (n, 2) if to == "hf" else (2, n)
    return w.reshape(first, second, d, -1).transpose(0, 1).reshape(w.shape).contiguous()


def _convert(
    state_dict: dict[str, torch.Tensor],
    config: DiffTransformerConfig,
    to: str,
    rope_layout: str | None,
    norm_affine: bool | None,
) -> tuple[dict[str, torch.Tensor], DiffTransformerConfig]:
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict: expected a dict of tensors, got {type(state_dict).__name__}")
    _check_rope_target(rope_layout)
    if norm_affine is not None and not isinstance(norm_affine, bool):
        raise TypeError(f"norm_affine: expected None or a bool, got {type(norm_affine).__name__}")
    rope_to = config.rope_layout if rope_layout is None else rope_layout
    affine_to = config.norm_affine if norm_affine is None else norm_affine
    if affine_to and not config.head_norm:
        raise ValueError("norm_affine: a γ needs head_norm=True in config")
    h, hkv, d = config.num_attention_heads, config.num_key_value_heads, config.component_head_dim
    out = dict(state_dict)
    for p in _attn_prefixes(state_dict):
        wq, wk, wv = (state_dict[p + f"{n}_proj.weight"] for n in "qkv")
        if wq.shape[0] != 2 * h * d or wk.shape[0] != 2 * hkv * d or wv.shape[0] != 2 * hkv * d:
            raise ValueError(
                f"state_dict: {p}q/k/v_proj rows {wq.shape[0]}/{wk.shape[0]}/{wv.shape[0]} do "
                f"not match config (2hd={2 * h * d}, 2·Hkv·d={2 * hkv * d})"
            )
        wq, wk, wv = (_regroup(w, n, d, to) for w, n in ((wq, h), (wk, hkv), (wv, hkv)))
        if rope_to != config.rope_layout:
            wq = permute_rope_rows(wq, 2 * h, d, to=rope_to)
            wk = permute_rope_rows(wk, 2 * hkv, d, to=rope_to)
        out[p + "q_proj.weight"] = wq.contiguous()
        out[p + "k_proj.weight"] = wk.contiguous()
        out[p + "v_proj.weight"] = wv
        gamma = state_dict.get(p + "subln.weight")
        if gamma is not None and not affine_to:  # fold γ into W^O's columns: exact, not bitwise
            wo = state_dict[p + "o_proj.weight"]  # (E, h·2d)
            folded = wo.reshape(wo.shape[0], -1, gamma.shape[0]) * gamma.to(wo.dtype)
            out[p + "o_proj.weight"] = folded.reshape(wo.shape)
            del out[p + "subln.weight"]
        elif gamma is None and affine_to:
            out[p + "subln.weight"] = torch.ones(2 * d, dtype=wq.dtype, device=wq.device)
    new_config = _replace_config(config, layout=to, rope_layout=rope_to, norm_affine=affine_to)
    return out, new_config


def unilm_to_hf(
    state_dict: dict[str, torch.Tensor],
    config: DiffTransformerConfig,
    *,
    rope_layout: str | None = "half",
    norm_affine: bool | None = None,
) -> tuple[dict[str, torch.Tensor], DiffTransformerConfig]:
    """Convert official-layout (``layout="unilm"``) weights to HF DiffLlama's layout.

    Component head 2i+c (c = 0, 1) of W^Q/W^K moves to head i + c·n (n = h for W^Q, Hkv for
    W^K); W^V's value head g of width 2d splits into component heads g and g + Hkv; each
    component head's rows are then permuted for the target RoPE layout. W^O and λ are unchanged.

    Args:
        state_dict: of a :class:`DiffTransformerForCausalLM`, ``DiffTransformerModel`` or
            :class:`~paperbricks.diffattn.modules.MultiheadDiffAttn` built from ``config``
            (every module whose keys end in ``diff_lambda.lambda_q1`` is converted; all other
            entries are passed through).
        config: the source :class:`DiffTransformerConfig` (``layout="unilm"``).
        rope_layout: RoPE layout of the result: ``"half"`` (default, HF's), ``"interleaved"``,
            or None to keep ``config.rope_layout``.
        norm_affine: γ of the result: None (default) keeps the source's; False folds γ into
            W^O (exact in real arithmetic; W^O changes by rounding) and drops it, as DiffLlama
            has no γ; True fills γ = 1 when the source has none.

    Returns:
        ``(new_state_dict, new_config)``: a new dict (the input is not modified) and the config
        with ``layout="hf"`` and the chosen ``rope_layout``/``norm_affine``.

    Examples:
        >>> from paperbricks.diffattn.models import DiffTransformerConfig, DiffTransformerForCausalLM
        >>> cfg = DiffTransformerConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...                             num_hidden_layers=1, num_attention_heads=2)
        >>> sd, hf_cfg = unilm_to_hf(DiffTransformerForCausalLM(cfg).state_dict(), cfg)
        >>> hf_cfg.layout, hf_cfg.rope_layout
        ('hf', 'half')
        >>> back, _ = hf_to_unilm(sd, hf_cfg)
    """
    _check_config(config, "unilm")
    return _convert(state_dict, config, "hf", rope_layout, norm_affine)


def hf_to_unilm(
    state_dict: dict[str, torch.Tensor],
    config: DiffTransformerConfig,
    *,
    rope_layout: str | None = "interleaved",
    norm_affine: bool | None = None,
) -> tuple[dict[str, torch.Tensor], DiffTransformerConfig]:
    """Convert HF-layout (``layout="hf"``) weights to the official layout; inverse of
    :func:`unilm_to_hf` (bit-exact when γ is kept or absent on both sides).

    Args:
        state_dict: as in :func:`unilm_to_hf`, built from ``config``.
        config: the source :class:`DiffTransformerConfig` (``layout="hf"``).
        rope_layout: RoPE layout of the result: ``"interleaved"`` (default, the official one),
            ``"half"``, or None to keep ``config.rope_layout``.
        norm_affine: γ of the result: None (default) keeps the source's; True fills γ = 1 when
            the source has none (the official layout always has one); False folds it into W^O.

    Returns:
        ``(new_state_dict, new_config)`` with ``layout="unilm"``.
    """
    _check_config(config, "hf")
    return _convert(state_dict, config, "unilm", rope_layout, norm_affine)


# ----------------------------------------------------------------------------------------------
# HF DiffLlama


def _rope_theta(hf_config: Any) -> float:
    params = getattr(hf_config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(
            f"model: only default RoPE is supported, got rope_type={rope_type!r} "
            "(scaled RoPE variants are not implemented here)"
        )
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if theta is None:
        raise ValueError("model: its config has no rope_theta")
    return float(theta)


def _check_llama_like(hf_config: Any, what: str) -> None:
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(
            f"{what}: expected hidden_act='silu' (SwiGLU), got {hf_config.hidden_act!r}"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf_config, flag, False):
            raise ValueError(f"{what}: {flag}=True is not supported (our projections have no bias)")


def _load_hf(path_or_model: Any, cls_name: str) -> Any:
    import transformers

    cls = getattr(transformers, cls_name)
    if isinstance(path_or_model, (str, os.PathLike)):
        if not os.path.isdir(path_or_model):
            raise ValueError(
                f"path_or_model: expected a local checkpoint directory, got {str(path_or_model)!r}"
            )
        return cls.from_pretrained(path_or_model)  # local files only (nothing downloads)
    if not isinstance(path_or_model, cls):
        raise TypeError(
            f"path_or_model: expected a directory or a transformers {cls_name}, got "
            f"{type(path_or_model).__name__}"
        )
    return path_or_model


def load_hf_diffllama(path_or_model: Any, *, attn_impl: str = "auto") -> DiffTransformerForCausalLM:
    """Load an HF ``DiffLlamaForCausalLM`` into :class:`DiffTransformerForCausalLM`.

    DiffLlama (transformers ``models/diffllama``) is our ``layout="hf"`` with half RoPE, no γ and
    the head-norm epsilon equal to ``rms_norm_eps``; its ``num_attention_heads`` counts component
    heads (2h) and its ``head_dim`` is d. Its two-call attention (V split into the two KV-head
    halves, output heads chunked into halves) pairs component heads (i, i + h) and reads KV head
    ``i // n_rep`` for both components, which is exactly our GQA. The weights are copied as they
    are (λ vectors renamed to ``diff_lambda.*``), so the logits agree to rounding.

    Args:
        path_or_model: a local directory saved by ``DiffLlamaForCausalLM.save_pretrained`` (read
            with ``from_pretrained``; nothing is downloaded) or the model object.
        attn_impl: our ``attn_impl`` (``"auto"``, ``"reference"``, ``"sdpa"``, ``"triton"``).

    Returns:
        The model in eval mode, with the source's dtype.

    Raises:
        ValueError: non-default RoPE scaling, attention/MLP biases, an activation other than
            SiLU, an odd number of KV heads.

    Examples:
        >>> import torch
        >>> from transformers import DiffLlamaConfig, DiffLlamaForCausalLM
        >>> src = DiffLlamaForCausalLM(DiffLlamaConfig(
        ...     vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...     num_attention_heads=4, num_key_value_heads=2)).eval()
        >>> ours = load_hf_diffllama(src)
        >>> ids = torch.randint(0, 64, (1, 6))
        >>> bool(torch.allclose(ours(ids).logits, src(ids).logits, atol=1e-5))
        True
    """
    src = _load_hf(path_or_model, "DiffLlamaForCausalLM")
    c = src.config
    _check_llama_like(c, "path_or_model")
    if c.num_attention_heads % 2 or c.num_key_value_heads % 2:
        raise ValueError(
            "path_or_model: DiffLlama needs even num_attention_heads and num_key_value_heads "
            f"(component heads), got {c.num_attention_heads} and {c.num_key_value_heads}"
        )
    h = c.num_attention_heads // 2
    d = c.head_dim
    config = DiffTransformerConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=h,
        num_key_value_heads=c.num_key_value_heads // 2,
        head_dim=None if c.hidden_size == 2 * h * d else d,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        head_norm_eps=c.rms_norm_eps,
        rope_theta=_rope_theta(c),
        rope_layout="half",
        layout="hf",
        norm_affine=False,
        lambda_init=None,
        lambda_std=float(c.lambda_std_dev if c.lambda_std_dev is not None else 0.1),
        initializer_range=c.initializer_range,
        tie_word_embeddings=bool(c.tie_word_embeddings),
        attn_impl=attn_impl,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
    )
    sd = {}
    for key, value in src.state_dict().items():
        for name in _LAMBDA_KEYS:
            if key.endswith("self_attn." + name):
                key = key[: -len(name)] + "diff_lambda." + name
        sd[key] = value
    ref = next(iter(sd.values()))
    model = DiffTransformerForCausalLM(config).to(dtype=ref.dtype, device=ref.device)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Llama -> DIFF


def _pin_lambda_to_zero(lam: Any, d: int) -> None:
    """Set the λ vectors so that λ = exp(s1) − exp(s2) + λ_init = 0 (to rounding) at conversion.

    λ_q1 = λ_k1 = √(s1/d)·1 with s1 = 0.01 (not zero: zero vectors would get zero gradients
    forever), and λ_q2 = λ_k2 = √(s2/d)·1 with s2 = ln(exp(s1) + λ_init).
    """
    s1 = 0.01
    s2 = math.log(math.exp(s1) + lam.lambda_init)
    with torch.no_grad():
        lam.lambda_q1.fill_(math.sqrt(s1 / d))
        lam.lambda_k1.fill_(math.sqrt(s1 / d))
        lam.lambda_q2.fill_(math.sqrt(s2 / d))
        lam.lambda_k2.fill_(math.sqrt(s2 / d))


def convert_llama_to_diff(
    model: Any,
    mode: str = "split_heads",
    keep_lambda_scale: bool = False,
    *,
    head_norm: bool = False,
    zero_lambda: bool = True,
    attn_impl: str = "auto",
) -> DiffTransformerForCausalLM:
    """Start a DIFF model from a pretrained HF Llama (axolotl ``diff-transformer`` style).

    The result uses ``layout="hf"`` and half RoPE (HF Llama's) and copies embeddings, norms,
    MLPs and the LM head. Llama has H heads of dim d and Hkv KV heads.

    - ``mode="split_heads"``: h = H/2 diff-heads of the same total width. Diff-head a takes
      Llama heads a (first component) and a + H/2 (second), diff-KV-head g takes KV heads g and
      g + Hkv/2 (so GQA stays consistent; H and Hkv must be even), its value is
      ``cat(v_g, v_{g+Hkv/2})`` and W^O's columns are regrouped accordingly.
    - ``mode="double_proj"``: h = H diff-heads with component dim d (``head_dim=d``, twice the
      width). Both components start as copies of the Llama head ("mirrored"); the value is
      ``cat(v_g, 0)`` and W^O reads only the first half.

    What holds at conversion time (tested):

    - ``double_proj`` with ``zero_lambda=True``, ``head_norm=False`` and
      ``keep_lambda_scale=False`` (the defaults): the logits equal the Llama's (λ is 0 to
      float rounding, so each diff-head outputs ``[A·v_g, 0]``).
    - ``split_heads`` with the same settings: diff-head a outputs ``A_a·[v_g, v_{g+Hkv/2}]``;
      the first half is Llama head a exactly, the second half uses head a's attention map where
      Llama head a + H/2 used its own. The logits are equal only when the paired heads attend
      identically; in general the converted model is a warm start that needs training.
    - ``keep_lambda_scale=True`` multiplies every head by (1 − λ_init) (the paper's model) and
      ``head_norm=True`` normalises every head: neither reproduces the Llama.
    - ``zero_lambda=False`` keeps HF's random λ-vector init (λ ≈ λ_init): nothing exact.

    Args:
        model: a transformers ``LlamaForCausalLM`` (default RoPE, SiLU, no biases).
        mode: ``"split_heads"`` (default) or ``"double_proj"``.
        keep_lambda_scale: keep the paper's (1 − λ_init) factor. Default False (axolotl drops
            it so the converted model can reproduce the original).
        head_norm: apply the per-head RMSNorm (with γ = 1). Default False.
        zero_lambda: pin λ to 0 at conversion through the λ vectors (see
            ``_pin_lambda_to_zero``); training then moves λ freely. Default True.
        attn_impl: the converted model's ``attn_impl``. Default ``"auto"``.

    Returns:
        A :class:`DiffTransformerForCausalLM` in eval mode with the Llama's dtype and device.

    Examples:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> llama = LlamaForCausalLM(LlamaConfig(
        ...     vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...     num_attention_heads=4, num_key_value_heads=2)).eval()
        >>> diff = convert_llama_to_diff(llama, mode="double_proj")
        >>> ids = torch.randint(0, 64, (1, 6))
        >>> bool(torch.allclose(diff(ids).logits, llama(ids).logits, atol=1e-5))
        True
    """
    src = _load_hf(model, "LlamaForCausalLM")
    if mode not in ("split_heads", "double_proj"):
        raise ValueError(f"mode: expected 'split_heads' or 'double_proj', got {mode!r}")
    for name, flag in (
        ("keep_lambda_scale", keep_lambda_scale),
        ("head_norm", head_norm),
        ("zero_lambda", zero_lambda),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    c = src.config
    _check_llama_like(c, "model")
    big_h, big_hkv, e = c.num_attention_heads, c.num_key_value_heads, c.hidden_size
    d = getattr(c, "head_dim", None) or e // big_h
    if mode == "split_heads":
        if big_h % 2 or big_hkv % 2:
            raise ValueError(
                "model: split_heads needs even num_attention_heads and num_key_value_heads, got "
                f"{big_h} and {big_hkv}"
            )
        h, hkv = big_h // 2, big_hkv // 2
    else:
        h, hkv = big_h, big_hkv
    config = DiffTransformerConfig(
        vocab_size=c.vocab_size,
        hidden_size=e,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=h,
        num_key_value_heads=hkv,
        head_dim=None if e == 2 * h * d else d,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        head_norm_eps=c.rms_norm_eps,
        rope_theta=_rope_theta(c),
        rope_layout="half",
        layout="hf",
        norm_affine=head_norm,
        head_norm=head_norm,
        lambda_scale=keep_lambda_scale,
        initializer_range=c.initializer_range,
        tie_word_embeddings=bool(c.tie_word_embeddings),
        attn_impl=attn_impl,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
    )
    sd = src.state_dict()
    ref = sd["model.embed_tokens.weight"]
    diff = DiffTransformerForCausalLM(config).to(dtype=ref.dtype, device=ref.device)
    new = diff.state_dict()
    for key in new:
        if ".self_attn." not in key:
            new[key] = sd[key]
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}.self_attn."
        wq, wk, wv, wo = (sd[p + f"{n}_proj.weight"] for n in "qkvo")
        if mode == "split_heads":
            # rows already hold component heads in DiffLlama's halves order
            new[p + "q_proj.weight"], new[p + "k_proj.weight"] = wq, wk
            new[p + "v_proj.weight"] = wv
            # diff-head a's 2d columns: [Llama head a | Llama head a + h]
            new[p + "o_proj.weight"] = wo.reshape(e, 2, h, d).transpose(1, 2).reshape(e, -1)
        else:
            new[p + "q_proj.weight"] = torch.cat([wq, wq], dim=0)  # mirrored components
            new[p + "k_proj.weight"] = torch.cat([wk, wk], dim=0)
            new[p + "v_proj.weight"] = torch.cat([wv, torch.zeros_like(wv)], dim=0)
            wo_h = wo.reshape(e, h, 1, d)
            new[p + "o_proj.weight"] = torch.cat([wo_h, torch.zeros_like(wo_h)], dim=2).reshape(
                e, -1
            )
        if head_norm:
            new[p + "subln.weight"] = torch.ones_like(new[p + "subln.weight"])
    diff.load_state_dict(new, strict=True)
    if zero_lambda:
        for layer in diff.model.layers:
            _pin_lambda_to_zero(layer.self_attn.diff_lambda, d)
    return diff.eval()

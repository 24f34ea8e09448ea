"""Differential attention as ``nn.Module``s: the λ schedule, the learned λ and the attention layer.

Differential Transformer (Ye et al., arXiv 2410.05258), §2.1:

    [Q1; Q2] = X W^Q,  [K1; K2] = X W^K,  V = X W^V                       (component dim d)
    λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init,  λ_init = 0.8 − 0.6·exp(−0.3·depth)     (eq. 2)
    head_i = (softmax(Q1K1ᵀ/√d) − λ·softmax(Q2K2ᵀ/√d)) V                                  (eq. 1)
    MultiHead(X) = Concat_i((1 − λ_init)·RMSNorm_γ(head_i)) W^O                             (eq. 3)

- :func:`lambda_init`: the depth schedule (0-based depth, as the official code and HF DiffLlama).
- :class:`DiffLambda`: the four λ vectors and the re-parameterised λ, one per layer, shared by
  all heads (not one per head: a common re-implementation mistake).
- :class:`MultiheadDiffAttn`: projections, RoPE (core-kernels ``rope``), KV cache (transformers
  ``Cache``), the functional :func:`paperbricks.diffattn.ops.diff_attention` and ``W^O``.

What differs from an ordinary attention layer: h diff-heads of *double* width (2d), each with two
query/key components of width d and one value head of width 2d; the score scale uses the halved d;
the per-head RMSNorm is over 2d with one γ ∈ R^{2d} shared by all heads.

Two weight layouts are supported, differing only in how the component heads sit in the rows of
``W^Q``, ``W^K`` and ``W^V`` (the computation is the same; :mod:`paperbricks.diffattn.convert`
maps one onto the other):

- ``layout="unilm"`` (the official ``microsoft/unilm`` code): component heads interleaved,
  diff-head i = (2i, 2i+1); ``W^V`` holds Hkv value heads of width 2d;
- ``layout="hf"`` (HF transformers ``DiffLlama``): halves, diff-head i = (i, i + h); ``W^V``
  holds 2·Hkv value heads of width d and diff-KV-head g reads ``cat(v_g, v_{g+Hkv})``.

GQA follows the flash semantics everywhere: diff-head i reads diff-KV-head i // (h / Hkv) for
*both* components (the official naive file's ``repeat_kv`` over 2·Hkv component heads pairs the
second query component with the wrong key half; we never do that).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from paperbricks.core_kernels.rope import apply_rope, rope_angles
from paperbricks.core_kernels.validate import check_int

from .ops import diff_attention
from .reference import lambda_from_params

__all__ = ["DiffLambda", "MultiheadDiffAttn", "lambda_init"]

logger = logging.getLogger(__name__)

_LAYOUTS = ("unilm", "hf")
_ROPE_LAYOUTS = ("interleaved", "half")
_IMPLS = ("auto", "reference", "sdpa", "triton")


def _check_float(name: str, value: object, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name}: expected a finite float{bound}, got {value!r}")
    return float(value)


def lambda_init(depth: int) -> float:
    """The λ_init schedule of the paper: ``0.8 − 0.6·exp(−0.3·depth)``, ``depth`` 0-based.

    Args:
        depth: the layer index, counting from 0 (the official code and HF DiffLlama pass the
            0-based layer index; a 1-based index is a known re-implementation mistake).

    Returns:
        λ_init as a Python float: 0.2 at depth 0, rising towards 0.8.

    Examples:
        >>> round(lambda_init(0), 6), round(lambda_init(1), 6), round(lambda_init(5), 6)
        (0.2, 0.355509, 0.666122)
    """
    check_int("depth", depth, 0)
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class DiffLambda(nn.Module):
    """The learned λ of one layer: ``exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`` (eq. 2).

    Four vectors in R^d initialised N(0, std²); λ itself is unconstrained (it may leave [0, 1]).
    One λ per layer, shared by all diff-heads.

    Args:
        head_dim: d, the component head dim (the λ vectors' length).
        depth: 0-based layer index, used for the λ_init schedule.
        std: standard deviation of the vectors' initialisation. Default 0.1 (the paper's).
        init: a constant λ_init overriding the schedule (the paper's ablation uses 0.8 or 0.5);
            None (default) uses :func:`lambda_init` ``(depth)``.
        generator: a ``torch.Generator`` for the initial draw; None uses torch's global RNG (as
            ``nn.Linear`` does).
        device, dtype: of the vectors.

    Attributes:
        lambda_init (float): the λ_init of this layer.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> lam = DiffLambda(head_dim=8, depth=0, std=0.0, generator=g)
        >>> round(float(lam().detach()), 6)  # exp(0) − exp(0) + 0.2
        0.2
    """

    def __init__(
        self,
        head_dim: int,
        depth: int,
        std: float = 0.1,
        init: float | None = None,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("head_dim", head_dim, 1)
        check_int("depth", depth, 0)
        std = _check_float("std", std, minimum=0.0)
        if init is not None:
            init = _check_float("init", init)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        self.head_dim = head_dim
        self.depth = depth
        self.std = std
        self.lambda_init = lambda_init(depth) if init is None else init
        draws = torch.randn(4, head_dim, generator=generator, dtype=torch.float32) * std
        draws = draws.to(device=device, dtype=dtype or torch.get_default_dtype())
        self.lambda_q1 = nn.Parameter(draws[0].clone())
        self.lambda_k1 = nn.Parameter(draws[1].clone())
        self.lambda_q2 = nn.Parameter(draws[2].clone())
        self.lambda_k2 = nn.Parameter(draws[3].clone())

    def forward(self) -> torch.Tensor:
        """λ as a 0-d tensor, float32 (float64 when the vectors are float64), differentiable."""
        return lambda_from_params(
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2, self.lambda_init
        )

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, depth={self.depth}, lambda_init={self.lambda_init:.6f}"


def _rope_impl(impl: str) -> str:
    return impl if impl in ("reference", "triton") else "auto"


def _key_padding(
    attention_mask: torch.Tensor | None, batch: int, kv_len: int
) -> torch.Tensor | None:
    """Validate a 2-D padding mask; return it as bool (B, S), or None when it masks nothing."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(
            f"attention_mask: expected None or a (B, S) tensor, got {type(attention_mask).__name__}"
        )
    if attention_mask.dim() != 2:
        raise ValueError(
            "attention_mask: expected a 2-D (B, S) padding mask (1 = token, 0 = padding; 4-D "
            f"additive masks are not supported), got shape {tuple(attention_mask.shape)}"
        )
    if tuple(attention_mask.shape) != (batch, kv_len):
        raise ValueError(
            f"attention_mask: expected shape (B, S) = ({batch}, {kv_len}) covering the cached and "
            f"new tokens, got {tuple(attention_mask.shape)}"
        )
    keep = attention_mask.bool()
    if bool(keep.all()):  # one host sync; the common unpadded case takes the batched path
        return None
    return keep


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (B or 1, 1, T, d/2) for positions (B or 1, T), broadcasting over heads."""
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    cos, sin = rope_angles(position_ids, head_dim, theta, dtype=cdt)  # (B, T, d/2)
    return cos[:, None], sin[:, None]


class MultiheadDiffAttn(nn.Module):
    """Multi-head differential attention (eqs. 1–3) with RoPE, GQA and a transformers KV cache.

    Widths: ``embed_dim`` = E, h = ``num_heads`` diff-heads, component head dim
    d = ``head_dim`` or E / (2h). W^Q: E -> 2h·d, W^K: E -> 2·Hkv·d, W^V: E -> Hkv·2d,
    W^O: h·2d -> E (no biases, as the official code). With d = E/(2h) the four projections have
    exactly the sizes of an ordinary attention layer with 2h heads of dim d; the extra parameters
    are the λ vectors (4d) and γ (2d, when ``norm_affine``).

    Args:
        embed_dim: E, the model width.
        depth: 0-based layer index (λ_init schedule, and the cache's layer index unless
            ``layer_idx`` is given).
        num_heads: h, the number of diff-heads (half an equal-size Transformer's head count).
        num_kv_heads: Hkv diff-KV-heads (GQA); h must be a multiple. Default None = h.
        layout: ``"unilm"`` (default; official interleaved component heads) or ``"hf"`` (HF
            DiffLlama's halves). See the module docstring.
        rope_layout: ``"interleaved"`` (default; GPT-J style, the official ``rotary.py``) or
            ``"half"`` (``rotate_half``, HF).
        norm_affine: learn the head-norm gain γ ∈ R^{2d} (default True; HF DiffLlama has none).
        lambda_init: a constant λ_init; None (default) uses the depth schedule.
        rope_theta: RoPE base. Default 10000.0.
        impl: passed to :func:`~paperbricks.diffattn.ops.diff_attention` (``"auto"``,
            ``"reference"``, ``"sdpa"`` or ``"triton"``). Default ``"auto"``.
        head_dim: d; default None = E / (2h), which must then divide evenly. Set explicitly only
            for converted models (``convert_llama_to_diff(mode="double_proj")``).
        lambda_std: std of the λ vectors' initialisation. Default 0.1.
        norm_eps: head-norm epsilon. Default 1e-5 (official); HF DiffLlama uses its
            ``rms_norm_eps``.
        head_norm: apply the per-head RMSNorm. Default True (the paper); False only for the
            Llama conversion (axolotl's ``sublayer_norm=False``).
        lambda_scale: multiply the head outputs by (1 − λ_init). Default True (the paper); the
            Llama conversion drops it (``keep_lambda_scale=False``).
        layer_idx: index of this layer in a transformers ``Cache``. Default None = ``depth``.
        generator: ``torch.Generator`` for the initial weights (projections uniform in
            ±1/√fan_in like ``nn.Linear``, λ vectors N(0, lambda_std²)); None = global RNG.
        device, dtype: of the parameters.

    Shapes (forward):
        x (B, T, E) -> (B, T, E); with ``output_attentions`` also A1 − λ·A2 (B, h, T, S) in float32.

    Examples:
        >>> attn = MultiheadDiffAttn(embed_dim=64, depth=1, num_heads=2, num_kv_heads=1)
        >>> y, _ = attn(torch.randn(2, 10, 64))
        >>> y.shape
        torch.Size([2, 10, 64])
        >>> from transformers import DynamicCache
        >>> cache = DynamicCache()
        >>> _ = attn(torch.randn(2, 10, 64), past_key_values=cache)  # prefill
        >>> y, maps = attn(torch.randn(2, 1, 64), past_key_values=cache, output_attentions=True)
        >>> maps.shape  # one new query over 11 keys
        torch.Size([2, 2, 1, 11])
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        layout: str = "unilm",
        rope_layout: str = "interleaved",
        norm_affine: bool = True,
        lambda_init: float | None = None,
        rope_theta: float = 10000.0,
        impl: str = "auto",
        *,
        head_dim: int | None = None,
        lambda_std: float = 0.1,
        norm_eps: float = 1e-5,
        head_norm: bool = True,
        lambda_scale: bool = True,
        layer_idx: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int("embed_dim", embed_dim, 1)
        check_int("depth", depth, 0)
        check_int("num_heads", num_heads, 1)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        check_int("num_kv_heads", num_kv_heads, 1)
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_kv_heads: num_heads={num_heads} must be a multiple of num_kv_heads, got "
                f"{num_kv_heads}"
            )
        if head_dim is None:
            if embed_dim % (2 * num_heads):
                raise ValueError(
                    f"embed_dim: expected a multiple of 2·num_heads = {2 * num_heads} (component "
                    f"head dim d = embed_dim / (2·num_heads)), got {embed_dim}"
                )
            head_dim = embed_dim // (2 * num_heads)
        check_int("head_dim", head_dim, 1)
        if head_dim % 2:
            raise ValueError(f"head_dim: RoPE needs an even component head dim d, got {head_dim}")
        if layout not in _LAYOUTS:
            raise ValueError(f"layout: expected one of {_LAYOUTS}, got {layout!r}")
        if rope_layout not in _ROPE_LAYOUTS:
            raise ValueError(f"rope_layout: expected one of {_ROPE_LAYOUTS}, got {rope_layout!r}")
        if impl not in _IMPLS:
            raise ValueError(f"impl: expected one of {_IMPLS}, got {impl!r}")
        for name, flag in (
            ("norm_affine", norm_affine),
            ("head_norm", head_norm),
            ("lambda_scale", lambda_scale),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
        if norm_affine and not head_norm:
            raise ValueError("norm_affine: a head-norm gain needs head_norm=True")
        self.rope_theta = _check_float("rope_theta", rope_theta, minimum=1e-12)
        self.norm_eps = _check_float("norm_eps", norm_eps, minimum=0.0)
        if layer_idx is not None:
            check_int("layer_idx", layer_idx, 0)
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.layout = layout
        self.rope_layout = rope_layout
        self.head_norm = head_norm
        self.lambda_scale = lambda_scale
        self.impl = impl
        self.layer_idx = depth if layer_idx is None else layer_idx
        self.scaling = head_dim**-0.5  # 1/√d with the halved d, not 1/√(2d)

        kw: dict[str, Any] = {"device": device, "dtype": dtype, "bias": False}
        self.q_proj = nn.Linear(embed_dim, 2 * num_heads * head_dim, **kw)
        self.k_proj = nn.Linear(embed_dim, 2 * num_kv_heads * head_dim, **kw)
        self.v_proj = nn.Linear(embed_dim, 2 * num_kv_heads * head_dim, **kw)
        self.o_proj = nn.Linear(2 * num_heads * head_dim, embed_dim, **kw)
        if generator is not None:
            with torch.no_grad():
                for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
                    bound = lin.in_features**-0.5
                    w = torch.rand(lin.weight.shape, generator=generator) * (2 * bound) - bound
                    lin.weight.copy_(w)
        self.diff_lambda = DiffLambda(
            head_dim, depth, lambda_std, lambda_init, generator, device=device, dtype=dtype
        )
        if norm_affine:
            self.subln = nn.Module()
            self.subln.weight = nn.Parameter(
                torch.ones(2 * head_dim, device=device, dtype=dtype or torch.get_default_dtype())
            )
        else:
            self.subln = None

    @property
    def lambda_init(self) -> float:
        """λ_init of this layer (the schedule value, or the constant given)."""
        return self.diff_lambda.lambda_init

    @property
    def norm_weight(self) -> torch.Tensor | None:
        """γ (2d,) or None."""
        return None if self.subln is None else self.subln.weight

    def _split(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (B, T, E) to q1, q2 (B, h, T, d), k1, k2 (B, Hkv, T, d), v (B, Hkv, T, 2d)."""
        b, t, _ = x.shape
        h, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).view(b, t, 2 * h, d).transpose(1, 2)  # (B, 2h, T, d)
        k = self.k_proj(x).view(b, t, 2 * hkv, d).transpose(1, 2)  # (B, 2Hkv, T, d)
        if self.layout == "unilm":
            q1, q2 = q[:, 0::2], q[:, 1::2]  # component heads (2i, 2i+1)
            k1, k2 = k[:, 0::2], k[:, 1::2]
            v = self.v_proj(x).view(b, t, hkv, 2 * d).transpose(1, 2)  # (B, Hkv, T, 2d)
        else:
            q1, q2 = q[:, :h], q[:, h:]  # component heads (i, i + h)
            k1, k2 = k[:, :hkv], k[:, hkv:]
            vc = self.v_proj(x).view(b, t, 2 * hkv, d).transpose(1, 2)  # (B, 2Hkv, T, d)
            v = torch.cat([vc[:, :hkv], vc[:, hkv:]], dim=-1)  # (B, Hkv, T, 2d)
        return q1, q2, k1, k2, v

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Differential self-attention over ``hidden_states`` (B, T, E), causal.

        Args:
            hidden_states: (B, T, E) float tensor.
            position_ids: (B, T) or (1, T) integer positions for RoPE. Default None = the
                cache's length + arange(T) (or, with a padding ``attention_mask``, the running
                count of real tokens, as ``generate`` computes them).
            past_key_values: a transformers ``Cache`` (e.g. ``DynamicCache``) or None. It is
                updated in place with this layer's keys (stored as the 2·Hkv component heads
                ``[K1; K2]`` of width d) and values (Hkv heads of width 2d) at ``layer_idx``.
            attention_mask: None, or a 2-D (B, S) padding mask over the cached + new tokens
                (1/True = real token, 0/False = padding; any positions, e.g. left padding).
                Padded rows are run one sequence at a time over their real tokens only (exact,
                but a Python loop over the batch); padding queries output zeros. 4-D masks are
                not supported.
            output_attentions: also return the differential map A1 − λ·A2 (B, h, T, S) in
                float32 (the reference path: O(T·S) memory). Default False.
            position_embeddings: precomputed ``(cos, sin)`` each (B or 1, 1, T, d/2) from
                :func:`rope_cos_sin` (the models compute them once for all layers).

        Returns:
            ``(out, maps)``: out (B, T, E) in the input dtype; maps or None.
        """
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 3:
            raise ValueError(
                "hidden_states: expected a (B, T, E) tensor, got "
                f"{getattr(hidden_states, 'shape', type(hidden_states).__name__)}"
            )
        b, t, e = hidden_states.shape
        if e != self.embed_dim:
            raise ValueError(f"hidden_states: expected E={self.embed_dim}, got shape {(b, t, e)}")
        q1, q2, k1, k2, v = self._split(hidden_states)
        past = 0 if past_key_values is None else past_key_values.get_seq_length(self.layer_idx)
        keep = _key_padding(attention_mask, b, past + t)
        if position_embeddings is None:
            if position_ids is None:
                position_ids = default_position_ids(b, t, past, keep, hidden_states.device)
            cos, sin = rope_cos_sin(position_ids, self.head_dim, self.rope_theta, q1.dtype)
        else:
            cos, sin = position_embeddings
        rimpl = _rope_impl(self.impl)
        q1 = apply_rope(q1, cos, sin, self.rope_layout, impl=rimpl)
        q2 = apply_rope(q2, cos, sin, self.rope_layout, impl=rimpl)
        k1 = apply_rope(k1, cos, sin, self.rope_layout, impl=rimpl)
        k2 = apply_rope(k2, cos, sin, self.rope_layout, impl=rimpl)
        if past_key_values is not None:
            kc, v = past_key_values.update(torch.cat([k1, k2], dim=1), v, self.layer_idx)
            k1, k2 = kc.chunk(2, dim=1)  # (B, Hkv, S, d) each
        lam = self.diff_lambda().to(q1.device)
        kwargs: dict[str, Any] = dict(
            causal=True,
            scale=self.scaling,
            normalize=self.head_norm,
            norm_weight=self.norm_weight,
            lambda_init=self.lambda_init if self.lambda_scale else None,
            eps=self.norm_eps,
            return_maps=output_attentions,
            # the maps exist only in the reference path, which "auto" picks when they are asked for
            impl="auto" if output_attentions else self.impl,
        )
        if keep is None:
            res = diff_attention(q1, q2, k1, k2, v, lam, **kwargs)
            y, maps = res if output_attentions else (res, None)
        else:
            y, maps = _per_sequence(q1, q2, k1, k2, v, lam, keep, output_attentions, kwargs)
        y = y.transpose(1, 2).reshape(b, t, 2 * self.num_heads * self.head_dim)  # (B, T, h·2d)
        return self.o_proj(y), maps

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, layout={self.layout!r}, "
            f"rope_layout={self.rope_layout!r}, depth={self.depth}, impl={self.impl!r}"
        )


def default_position_ids(
    batch: int, t: int, past: int, keep: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Positions of the T new tokens: ``past + arange(T)`` (1, T), or with a padding mask ``keep``
    (B, S) the count of real tokens before each one (B, T), as ``generate`` derives them."""
    if keep is None:
        return (torch.arange(t, device=device) + past)[None]  # (1, T)
    pos = keep.long().cumsum(-1) - 1  # (B, S)
    return pos.clamp(min=0)[:, -t:]  # (B, T)


def _per_sequence(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor,
    keep: torch.Tensor,
    output_attentions: bool,
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run each padded sequence over its real tokens only (exact masking without a mask argument).

    The real keys of row b, gathered in order, end with its real new tokens, so bottom-right
    causality over the gathered keys is causality over the original positions.
    """
    b, h, t, _ = q1.shape
    s = k1.shape[2]
    y = q1.new_zeros(b, h, t, v.shape[-1])  # (B, h, T, 2d); padding queries stay 0
    maps = None
    if output_attentions:
        mdt = torch.float64 if q1.dtype == torch.float64 else torch.float32
        maps = torch.zeros(b, h, t, s, dtype=mdt, device=q1.device)
    for i in range(b):
        kidx = keep[i].nonzero().squeeze(-1)  # (S_i,)
        qidx = keep[i, s - t :].nonzero().squeeze(-1)  # (T_i,)
        if qidx.numel() == 0:
            continue
        res = diff_attention(
            q1[i : i + 1, :, qidx],
            q2[i : i + 1, :, qidx],
            k1[i : i + 1, :, kidx],
            k2[i : i + 1, :, kidx],
            v[i : i + 1, :, kidx],
            lam,
            **kwargs,
        )
        yi, mi = res if output_attentions else (res, None)
        y[i][:, qidx] = yi[0]  # (h, T_i, 2d) into row i
        if maps is not None:
            maps[i][:, qidx[:, None], kidx[None, :]] = mi[0].to(maps.dtype)
    return y, maps

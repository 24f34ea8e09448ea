"""Differential attention in plain PyTorch: the specification (arXiv 2410.05258, §2.1, eq. 1–3).

For diff-head h reading key/value head g = h // (H / Hkv) (GQA with the *flash* semantics: both
components of diff-head h read the same KV head g):

    A1 = softmax(scale · Q1 K1ᵀ),  A2 = softmax(scale · Q2 K2ᵀ)      (1)  scale = 1/sqrt(D)
    U  = (A1 − λ·A2) · V                                              (2)  V is (S, Dv), Dv = 2D
    Y  = (1 − λ_init) · RMSNorm_γ(U)   (RMSNorm over Dv, γ ∈ R^Dv)    (3)  optional epilogue

with the causal mask applied before each softmax (bottom-right aligned: query i sees key j iff
``j <= i + S − T``, the KV-cache convention of core-kernels' ``attention``) and, for packed
sequences (``cu_seqlens``), block-diagonal visibility. D is the *component* head dim (half the
query/key width of a diff-head), so the default scale is 1/sqrt(D), not 1/sqrt(2D).

λ re-parameterisation (§2.1): ``λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init``
(:func:`lambda_from_params`), one scalar per layer in the paper; the op also accepts one λ per
diff-head.

Three implementations live here, all differentiable by autograd:

- :func:`diff_attention_reference`: explicit float32 (float64 for float64 inputs) softmaxes and
  the (B, H, T, S) maps; it can return the differential map A1 − λ·A2 for analysis.
- :func:`diff_attention_sdpa`: the official ``multihead_flashdiff_1.py`` semantics, two calls of
  core-kernels ``attention`` (SDPA on CPU, its Triton FA2 on CUDA) sharing the full-width V, then
  the RMSNorm epilogue. What differs from the naive file: no (T, S) map is materialised.
- :func:`diff_attention_sdpa4`: ``multihead_flashdiff_2.py``, four calls with V split into halves
  (each softmax computed twice). A test oracle only.

Inputs are not validated here; :func:`paperbricks.diffattn.ops.diff_attention` does that.
"""

from __future__ import annotations

import math

import torch

from paperbricks.core_kernels.attention import attention, visibility_mask
from paperbricks.core_kernels.norm import rms_norm, rms_norm_reference

__all__ = [
    "diff_attention_reference",
    "diff_attention_sdpa",
    "diff_attention_sdpa4",
    "diff_epilogue",
    "lambda_from_params",
]


def lambda_from_params(
    lq1: torch.Tensor,
    lk1: torch.Tensor,
    lq2: torch.Tensor,
    lk2: torch.Tensor,
    lambda_init: float,
) -> torch.Tensor:
    """The re-parameterised λ of §2.1: ``exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init``.

    Args:
        lq1, lk1, lq2, lk2: (..., D) float tensors (the paper: (D,), one set per layer); the dot
            products run over the last dim, so (H, D) vectors give one λ per head.
        lambda_init: the λ_init of the layer (``0.8 − 0.6·exp(−0.3·depth)``, 0-based depth).

    Returns:
        λ of shape ``lq1.shape[:-1]`` (0-d for (D,) vectors), in float32 (float64 for float64
        inputs) so that low-precision parameters do not round it; differentiable.

    Examples:
        >>> import torch
        >>> z = torch.zeros(8)
        >>> round(float(lambda_from_params(z, z, z, z, 0.2)), 6)  # float32 λ
        0.2
    """
    cdt = torch.float64 if lq1.dtype == torch.float64 else torch.float32
    e1 = torch.exp((lq1.to(cdt) * lk1.to(cdt)).sum(-1))
    e2 = torch.exp((lq2.to(cdt) * lk2.to(cdt)).sum(-1))
    return e1 - e2 + lambda_init


def _lam_view(lam: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """λ as a (1, H, 1, 1) or (1, 1, 1, 1) tensor broadcasting over (B, H, T, ·)."""
    return lam.to(dtype).reshape(1, -1, 1, 1)


def diff_epilogue(
    u: torch.Tensor,
    *,
    normalize: bool,
    norm_weight: torch.Tensor | None,
    lambda_init: float | None,
    eps: float,
) -> torch.Tensor:
    """Eq. (3): optional per-head RMSNorm over the last dim (gain ``norm_weight``), then ×(1 − λ_init).

    Args:
        u: (B, H, T, Dv) the differential attention output ``(A1 − λA2)·V``.
        normalize: apply the RMSNorm over Dv (shared across heads; the paper's "GroupNorm").
        norm_weight: (Dv,) gain γ, or None for no gain (HF DiffLlama: ``elementwise_affine=False``).
        lambda_init: multiply by ``1 − lambda_init`` when given.
        eps: RMSNorm epsilon.

    Returns:
        (B, H, T, Dv) in ``u.dtype``.
    """
    y = rms_norm_reference(u, norm_weight, eps) if normalize else u  # (B, H, T, Dv)
    if lambda_init is not None:
        y = y * (1.0 - lambda_init)
    return y


def _softmax(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Row softmax over the visible keys; rows that see no key give all zeros (not NaN)."""
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True).detach()  # (B, H, T, 1), cancels exactly
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    denom = e.sum(dim=-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


def diff_attention_reference(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    normalize: bool = False,
    norm_weight: torch.Tensor | None = None,
    lambda_init: float | None = None,
    eps: float = 1e-5,
    cu_seqlens: torch.Tensor | None = None,
    return_maps: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differential attention with both (T, S) maps materialised (eqs. 1–3), float32 softmaxes.

    Args:
        q1, q2: (B, H, T, D) the two query components of each diff-head.
        k1, k2: (B, Hkv, S, D) the two key components of each KV head.
        v: (B, Hkv, S, Dv) values, shared by both components.
        lam: 0-d or (H,) λ.
        causal: bottom-right causal mask. Default True.
        scale: score scale, default ``1/sqrt(D)``.
        normalize, norm_weight, lambda_init, eps: the epilogue of :func:`diff_epilogue`.
        cu_seqlens: (n_seq + 1,) cumulative lengths of packed sequences (B == 1, T == S).
        return_maps: also return the differential map ``A1 − λ·A2``.

    Returns:
        Y (B, H, T, Dv) in ``q1.dtype``; with ``return_maps`` also the map (B, H, T, S) in float32
        (float64 for float64 inputs), whose rows sum to ``1 − λ`` (0 for a row seeing no key).

    Examples:
        >>> import torch
        >>> q1, q2 = torch.randn(2, 1, 2, 4, 8).unbind(0)
        >>> k1, k2 = torch.randn(2, 1, 2, 4, 8).unbind(0)
        >>> y, maps = diff_attention_reference(
        ...     q1, q2, k1, k2, torch.randn(1, 2, 4, 16), torch.tensor(0.3), return_maps=True)
        >>> y.shape, maps.shape
        (torch.Size([1, 2, 4, 16]), torch.Size([1, 2, 4, 4]))
    """
    h, t, d = q1.shape[1:]
    hkv, s = k1.shape[1], k1.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    cdt = torch.float64 if q1.dtype == torch.float64 else torch.float32
    group = h // hkv
    # Flash semantics: diff-head h reads KV head h // group for BOTH components.
    k1r = k1.to(cdt).repeat_interleave(group, dim=1)  # (B, H, S, D)
    k2r = k2.to(cdt).repeat_interleave(group, dim=1)  # (B, H, S, D)
    vr = v.to(cdt).repeat_interleave(group, dim=1)  # (B, H, S, Dv)

    keep = visibility_mask(t, s, causal, cu_seqlens, q1.device)  # (T, S) or None
    a1 = _softmax(torch.einsum("bhtd,bhsd->bhts", q1.to(cdt), k1r) * scale, keep)  # (B, H, T, S)
    a2 = _softmax(torch.einsum("bhtd,bhsd->bhts", q2.to(cdt), k2r) * scale, keep)  # (B, H, T, S)
    maps = a1 - _lam_view(lam, cdt) * a2  # (B, H, T, S), eq. (2)
    u = torch.einsum("bhts,bhsv->bhtv", maps, vr)  # (B, H, T, Dv)
    y = diff_epilogue(
        u, normalize=normalize, norm_weight=norm_weight, lambda_init=lambda_init, eps=eps
    ).to(q1.dtype)
    return (y, maps) if return_maps else y


def diff_attention_sdpa(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    normalize: bool = False,
    norm_weight: torch.Tensor | None = None,
    lambda_init: float | None = None,
    eps: float = 1e-5,
    cu_seqlens: torch.Tensor | None = None,
    attn_impl: str = "auto",
) -> torch.Tensor:
    """``multihead_flashdiff_1.py`` semantics: two attention calls sharing V, then the epilogue.

    ``O_i = attention(q_i, k_i, v)`` through core-kernels (``attn_impl="auto"``: its Triton FA2 on
    CUDA, SDPA elsewhere; ``"reference"``: always torch SDPA), ``U = O1 − λ·O2`` in the input dtype
    (as the official code), then the RMSNorm (core-kernels ``rms_norm``, float32 statistics) and
    ×(1 − λ_init). Arguments as :func:`diff_attention_reference`.

    Returns:
        Y (B, H, T, Dv) in ``q1.dtype``.
    """
    o1 = attention(q1, k1, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens, impl=attn_impl)
    o2 = attention(q2, k2, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens, impl=attn_impl)
    u = o1 - _lam_view(lam, o2.dtype) * o2  # (B, H, T, Dv)
    y = rms_norm(u, norm_weight, eps, impl=attn_impl) if normalize else u
    if lambda_init is not None:
        y = y * (1.0 - lambda_init)
    return y


def diff_attention_sdpa4(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    normalize: bool = False,
    norm_weight: torch.Tensor | None = None,
    lambda_init: float | None = None,
    eps: float = 1e-5,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """``multihead_flashdiff_2.py`` semantics: four SDPA calls, V split into two halves (oracle).

    Each softmax is computed twice (once per V half) and the halves are concatenated; needs an
    even Dv. Arguments as :func:`diff_attention_reference`; always torch SDPA.

    Returns:
        Y (B, H, T, Dv) in ``q1.dtype``.
    """
    va, vb = v.chunk(2, dim=-1)  # (B, Hkv, S, Dv/2) each

    def attn(q: torch.Tensor, k: torch.Tensor, vv: torch.Tensor) -> torch.Tensor:
        return attention(
            q, k, vv, causal=causal, scale=scale, cu_seqlens=cu_seqlens, impl="reference"
        )

    o1 = torch.cat([attn(q1, k1, va), attn(q1, k1, vb)], dim=-1)  # (B, H, T, Dv)
    o2 = torch.cat([attn(q2, k2, va), attn(q2, k2, vb)], dim=-1)  # (B, H, T, Dv)
    u = o1 - _lam_view(lam, o2.dtype) * o2
    return diff_epilogue(
        u, normalize=normalize, norm_weight=norm_weight, lambda_init=lambda_init, eps=eps
    )

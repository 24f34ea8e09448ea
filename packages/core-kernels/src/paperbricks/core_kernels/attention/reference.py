"""Plain-PyTorch attention: the readable specification and an SDPA wrapper.

Both functions take the head-major layout of torch SDPA and HF transformers:

    q (B, H, T, D),  k (B, Hkv, S, D),  v (B, Hkv, S, Dv),  H % Hkv == 0

and compute, for query head h reading key/value head h // (H / Hkv),

    s_ij = scale · q_i · k_j            (1)  scale defaults to 1/sqrt(D)
    lse_i = log Σ_{j allowed} exp(s_ij) (2)  natural log; −inf for a row that sees no key
    p_ij = exp(s_ij − lse_i)            (3)  0 where j is not allowed
    o_i = Σ_j p_ij v_j                  (4)  0 for a row that sees no key

**Causal alignment is bottom-right** (as in flash-attn ≥ 2.1, not SDPA's top-left ``is_causal``):
query ``i`` may see key ``j`` iff ``j <= i + (S - T)``, so the last query always sees the last key
(the KV-cache decoding convention). With T > S the first ``T - S`` queries see no key at all;
their output is 0 and their LSE is −inf. With T == S both conventions agree.

**Packed sequences** (``cu_seqlens``): B == 1 and T == S == cu_seqlens[-1]; token ``i`` belongs to
segment ``g`` iff ``cu_seqlens[g] <= i < cu_seqlens[g + 1]``, and attention is block-diagonal
(a query sees only keys of its own segment; causal means causal within the segment).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

__all__ = ["attention_reference", "sdpa_attention", "segment_ids"]


def segment_ids(cu_seqlens: torch.Tensor, n: int) -> torch.Tensor:
    """Segment index of each of ``n`` packed tokens, int32 of shape (n,).

    ``cu_seqlens`` (n_seq + 1,) holds cumulative lengths starting at 0; empty segments are allowed.
    """
    positions = torch.arange(n, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens[1:].contiguous(), positions, right=True).to(torch.int32)


def visibility_mask(
    t: int, s: int, causal: bool, cu_seqlens: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean (T, S) visibility pattern from causality and packing, or None when all is visible.

    Causal is bottom-right aligned (query i sees key j iff ``j <= i + S − T``); with
    ``cu_seqlens`` (T == S) only keys of the query's own packed segment are visible. This builds
    the dense mask: for references and tests, not for the fast paths.
    """
    keep = None
    if causal:
        keep = torch.ones(t, s, dtype=torch.bool, device=device).tril(s - t)  # j <= i + (S - T)
    if cu_seqlens is not None:
        seg = segment_ids(cu_seqlens, t)  # T == S when packed
        same = seg[:, None] == seg[None, :]  # (T, S) block-diagonal
        keep = same if keep is None else keep & same
    return keep


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention computed the obvious way, with the softmax upcast to float32 (eqs. 1–4).

    The score matrix (B, H, T, S) is materialised, GQA repeats K/V, and packing builds a
    block-diagonal (T, S) mask: this is the oracle, not a fast path. Inputs are not validated here
    beyond what the tensor ops check; :func:`paperbricks.core_kernels.attention.attention` does that.

    Args:
        q: queries (B, H, T, D), any float dtype.
        k: keys (B, Hkv, S, D), same dtype; H must be a multiple of Hkv.
        v: values (B, Hkv, S, Dv), same dtype.
        causal: bottom-right causal masking (query i sees key j iff j <= i + S - T). Default False.
        scale: score scale; default ``1 / sqrt(D)``.
        mask: optional extra mask broadcastable to (B, H, T, S): boolean (True = may attend) or
            float (added to the scores). Default None.
        cu_seqlens: optional int (n_seq + 1,) cumulative lengths for packed sequences (B == 1,
            T == S == cu_seqlens[-1]). Default None.
        return_lse: also return the natural-log log-sum-exp of the scores. Default False.

    Returns:
        ``o`` (B, H, T, Dv) in ``q.dtype``, and with ``return_lse`` also ``lse`` (B, H, T) in
        float32 (float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
        >>> o, lse = attention_reference(q, k, v, causal=True, return_lse=True)
        >>> o.shape, lse.shape
        (torch.Size([1, 4, 5, 8]), torch.Size([1, 4, 5]))
    """
    h, t, d = q.shape[1:]
    hkv, s = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    group = h // hkv
    k_rep = k.to(compute).repeat_interleave(group, dim=1)  # (B, H, S, D)
    v_rep = v.to(compute).repeat_interleave(group, dim=1)  # (B, H, S, Dv)

    scores = torch.einsum("bhtd,bhsd->bhts", q.to(compute), k_rep) * scale  # (B, H, T, S)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(compute)
    keep = visibility_mask(t, s, causal, cu_seqlens, q.device)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))

    # Softmax with the row max as a detached stabiliser: it cancels exactly, so gradients are
    # those of eqs. (2)-(3), and rows that see no key give p = 0 and lse = -inf instead of NaN.
    row_max = scores.amax(dim=-1, keepdim=True).detach()  # (B, H, T, 1)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    unnorm = torch.exp(scores - row_max)  # (B, H, T, S)
    denom = unnorm.sum(dim=-1, keepdim=True)  # (B, H, T, 1)
    p = unnorm / torch.where(denom > 0, denom, torch.ones_like(denom))
    out = torch.einsum("bhts,bhsv->bhtv", p, v_rep).to(q.dtype)  # (B, H, T, Dv)
    if not return_lse:
        return out
    lse = (row_max + torch.log(denom)).squeeze(-1)  # (B, H, T), -inf where denom == 0
    return out, lse


def _sdpa_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None
) -> torch.Tensor:
    """SDPA on one (B, H, T, D) block with bottom-right causality and GQA."""
    d, dv = q.shape[-1], v.shape[-1]
    if q.device.type == "cpu" and d != dv:
        # PyTorch's fused CPU kernel needs D == Dv and otherwise falls back to its ~3x slower math
        # path. Zero columns change neither the scores (q·k) nor the output, so pad the narrower
        # side and keep the scale of the true D.
        scale = d**-0.5 if scale is None else scale
        if dv > d:
            q, k = F.pad(q, (0, dv - d)), F.pad(k, (0, dv - d))
        else:
            return _sdpa_one(q, k, F.pad(v, (0, d - dv)), causal, scale)[..., :dv]
    t, s = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if not causal:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if t == s:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if t < s:
        keep = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)  # (T, S)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale, enable_gqa=gqa)
    # T > S: the first T - S queries see no key (output 0); the rest are square-causal.
    out = q.new_zeros((*q.shape[:3], v.shape[-1]))  # (B, H, T, Dv)
    out[:, :, t - s :] = F.scaled_dot_product_attention(
        q[:, :, t - s :], k, v, is_causal=True, scale=scale, enable_gqa=gqa
    )
    return out


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention through ``torch.nn.functional.scaled_dot_product_attention``.

    Adds to SDPA what the public op promises: GQA through SDPA's ``enable_gqa`` (no repeated K/V),
    Dv ≠ D, bottom-right causal alignment when T ≠ S (a (T, S) mask, or a square causal call on
    the last S queries when T > S), and packed sequences run one SDPA call per segment — never a
    dense mask over all packed tokens. It returns no LSE; use :func:`attention_reference` for that.

    Args:
        q: queries (B, H, T, D).
        k: keys (B, Hkv, S, D).
        v: values (B, Hkv, S, Dv).
        causal: bottom-right causal masking. Default False.
        scale: score scale; default ``1 / sqrt(D)``.
        cu_seqlens: optional int (n_seq + 1,) cumulative lengths of packed sequences (B == 1,
            T == S == cu_seqlens[-1]). Its values are read on the host (one device sync).

    Returns:
        ``o`` (B, H, T, Dv) in ``q.dtype``.

    Examples:
        >>> import torch
        >>> q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 4)
        >>> cu = torch.tensor([0, 2, 6], dtype=torch.int32)
        >>> sdpa_attention(q, k, v, causal=True, cu_seqlens=cu).shape
        torch.Size([1, 4, 6, 4])
    """
    if cu_seqlens is None:
        return _sdpa_one(q, k, v, causal, scale)
    bounds = cu_seqlens.tolist()
    out = q.new_zeros((*q.shape[:3], v.shape[-1]))  # (1, H, N, Dv)
    for start, end in itertools.pairwise(bounds):
        if end > start:
            out[:, :, start:end] = _sdpa_one(
                q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], causal, scale
            )
    return out

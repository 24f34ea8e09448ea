"""Public attention ops: input validation and ``impl`` dispatch."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch

from ..devices import select_impl
from .reference import attention_reference, sdpa_attention, segment_ids

if TYPE_CHECKING:
    from ..devices import Impl

__all__ = ["attention", "varlen_attention"]

logger = logging.getLogger(__name__)

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Kept in sync with _triton.MAX_HEAD_DIM (that module imports triton, so it is not imported here).
_TRITON_MAX_HEAD_DIM = 128
_MAX_GRID_Y = 65535


def _check_tensor(name: str, x: object, dims: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {dims}, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected 4 dims {dims}, got shape {tuple(x.shape)}")
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float16/bfloat16/float32/float64 tensor, got {x.dtype}"
        )
    return x


def _validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int | None,
) -> None:
    _check_tensor("q", q, "(B, H, T, D)")
    _check_tensor("k", k, "(B, Hkv, S, D)")
    _check_tensor("v", v, "(B, Hkv, S, Dv)")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")
    b, h, t, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(
            f"k, v: expected batch B={b} like q, got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(
            f"v: expected (B, Hkv, S) = {tuple(k.shape[:3])} like k, got {tuple(v.shape[:3])}"
        )
    hkv = k.shape[1]
    if hkv < 1 or h % hkv != 0:
        raise ValueError(f"k: query heads H={h} must be a multiple of key/value heads Hkv={hkv}")
    if k.shape[3] != d:
        raise ValueError(f"k: expected head dim D={d} like q, got {k.shape[3]}")
    if t < 1 or k.shape[2] < 1 or d < 1 or v.shape[3] < 1:
        raise ValueError(
            f"q, k, v: expected T, S, D, Dv >= 1, got T={t}, S={k.shape[2]}, D={d}, Dv={v.shape[3]}"
        )
    if scale is not None and (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(float(scale))
    ):
        raise ValueError(f"scale: expected None or a finite float, got {scale!r}")
    if max_seqlen is not None and (
        isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 1
    ):
        raise ValueError(f"max_seqlen: expected None or an int >= 1, got {max_seqlen!r}")
    if cu_seqlens is None:
        return
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens: expected a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.dim() != 1:
        raise TypeError(
            "cu_seqlens: expected a 1-D int32 (or int64) tensor, got "
            f"{cu_seqlens.dtype} of shape {tuple(cu_seqlens.shape)}"
        )
    if cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens: expected n_seq + 1 >= 2 entries, got {cu_seqlens.numel()}")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens: expected device {q.device} like q, got {cu_seqlens.device}")
    if b != 1:
        raise ValueError(f"cu_seqlens: packed sequences need batch B == 1, got B={b}")
    if k.shape[2] != t:
        raise ValueError(f"cu_seqlens: packed sequences need T == S, got T={t}, S={k.shape[2]}")
    # One host sync: the bounds decide which keys each query may read.
    cu = cu_seqlens.detach().to("cpu", torch.int64)
    lengths = cu[1:] - cu[:-1]
    if int(cu[0]) != 0 or int(cu[-1]) != t or bool((lengths < 0).any()):
        raise ValueError(
            f"cu_seqlens: expected non-decreasing values from 0 to T={t}, got {cu.tolist()}"
        )
    if max_seqlen is not None and max_seqlen < int(lengths.max()):
        raise ValueError(
            f"max_seqlen: {max_seqlen} is smaller than the longest segment ({int(lengths.max())})"
        )


def _triton_support(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[bool, str]:
    if q.dtype not in _TRITON_DTYPES:
        return False, f"dtype {q.dtype} (the kernel takes float16/bfloat16/float32)"
    if q.shape[3] > _TRITON_MAX_HEAD_DIM or v.shape[3] > _TRITON_MAX_HEAD_DIM:
        return False, (
            f"head dims D={q.shape[3]}, Dv={v.shape[3]} (the kernel takes <= {_TRITON_MAX_HEAD_DIM})"
        )
    if q.shape[0] * q.shape[1] > _MAX_GRID_Y:
        return False, f"B*H={q.shape[0] * q.shape[1]} > {_MAX_GRID_Y} (grid limit)"
    return True, ""


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    return_lse: bool = False,
    impl: Impl = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with GQA, Dv ≠ D, packing and LSE; FA2 kernels on CUDA.

    ``o_i = Σ_j softmax_j(scale · q_i·k_j) v_j`` over the keys query ``i`` may see. Layout is
    head-major (that of torch SDPA and HF): packed sequences keep it, with B == 1 and the tokens of
    all sequences along T (see ``cu_seqlens``).

    Args:
        q: queries (B, H, T, D); float16, bfloat16, float32 or float64.
        k: keys (B, Hkv, S, D), same dtype and device; H must be a multiple of Hkv (grouped-query
            attention: query head h reads K/V head h // (H / Hkv); K/V are never repeated in
            memory by the Triton path).
        v: values (B, Hkv, S, Dv); Dv may differ from D.
        causal: causal masking, **bottom-right aligned** (flash-attn's convention): query i sees
            key j iff ``j <= i + S - T``. With T > S the first T - S queries see no key and get
            o = 0, lse = −inf. With ``cu_seqlens``, causal within each segment. Default False.
        scale: score scale; default ``1 / sqrt(D)``.
        cu_seqlens: optional (n_seq + 1,) int32 (int64 accepted) cumulative sequence lengths
            ``[0, n_0, n_0 + n_1, ..., N]``; requires B == 1 and T == S == N. Attention is then
            block-diagonal over the segments (no dense N×N mask is ever built). Its values are
            checked on the host (one device sync). Default None.
        max_seqlen: optional longest segment length, accepted for flash-attn compatibility and
            checked against ``cu_seqlens``; the kernels do not need it. Default None.
        return_lse: also return the natural-log log-sum-exp of the scaled scores, (B, H, T)
            float32 (float64 for float64 inputs); differentiable. Default False.
        impl: ``"auto"`` (Triton for CUDA tensors with supported dtype and D, Dv <= 128, else the
            reference), ``"reference"`` (SDPA wrapper, or the explicit reference when the LSE is
            asked for) or ``"triton"`` (the kernels; on CPU only under ``TRITON_INTERPRET=1``).

    Returns:
        ``o`` (B, H, T, Dv) in the input dtype, or ``(o, lse)`` when ``return_lse``.

    Raises:
        TypeError: non-tensor inputs, non-float or mixed dtypes, a non-integer ``cu_seqlens``.
        ValueError: inconsistent shapes (H % Hkv != 0, mismatched D, batch, S), bad
            ``cu_seqlens`` (B > 1, T != S, wrong bounds), bad ``scale``/``max_seqlen``/``impl``.

    Examples:
        >>> import torch
        >>> q = torch.randn(2, 8, 16, 32)
        >>> k, v = torch.randn(2, 2, 16, 32), torch.randn(2, 2, 16, 48)
        >>> attention(q, k, v, causal=True).shape
        torch.Size([2, 8, 16, 48])
        >>> cu = torch.tensor([0, 5, 16], dtype=torch.int32)  # two packed sequences
        >>> o, lse = attention(q[:1], k[:1], v[:1], cu_seqlens=cu, return_lse=True)
        >>> lse.shape
        torch.Size([1, 8, 16])
    """
    _validate(q, k, v, scale, cu_seqlens, max_seqlen)
    supported, why = _triton_support(q, k, v)
    chosen = select_impl(impl, (q, k, v), op="attention", supported=supported, why_unsupported=why)
    if chosen == "triton":
        from ._triton import flash_attention

        cu = seg = None
        if cu_seqlens is not None:
            cu = cu_seqlens.to(torch.int32).contiguous()
            seg = segment_ids(cu, q.shape[2])
        o, lse = flash_attention(q, k, v, causal=causal, scale=scale, cu_seqlens=cu, seg=seg)
        return (o, lse) if return_lse else o
    if return_lse:
        return attention_reference(
            q, k, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens, return_lse=True
        )
    return sdpa_attention(q, k, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    max_seqlen: int | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    impl: Impl = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over packed variable-length sequences, block-diagonal, never a dense N×N mask.

    The same op as :func:`attention` with ``cu_seqlens`` required, in the same head-major layout:
    q (1, H, N, D), k (1, Hkv, N, D), v (1, Hkv, N, Dv), where the N tokens are the sequences
    laid end to end (not flash-attn's (N, H, D); use ``x.transpose(0, 1).unsqueeze(0)`` to convert).
    Dispatch: the Triton kernel on CUDA (``impl="auto"``), else one SDPA call per segment (or the
    explicit reference when the LSE is asked for). flash-attn and FlexAttention are not used.

    Args:
        q, k, v: packed queries, keys and values as above.
        cu_seqlens: (n_seq + 1,) int32 cumulative lengths ``[0, ..., N]``; empty segments allowed.
        max_seqlen, causal, scale, return_lse, impl: as in :func:`attention`.

    Returns:
        ``o`` (1, H, N, Dv), or ``(o, lse)`` with ``lse`` (1, H, N) when ``return_lse``.

    Examples:
        >>> import torch
        >>> q, k, v = torch.randn(1, 4, 10, 16), torch.randn(1, 4, 10, 16), torch.randn(1, 4, 10, 16)
        >>> cu = torch.tensor([0, 3, 10], dtype=torch.int32)
        >>> varlen_attention(q, k, v, cu, causal=True).shape
        torch.Size([1, 4, 10, 16])
    """
    if cu_seqlens is None:
        raise ValueError("cu_seqlens: varlen_attention needs cumulative lengths, got None")
    return attention(
        q,
        k,
        v,
        causal=causal,
        scale=scale,
        cu_seqlens=cu_seqlens,
        max_seqlen=max_seqlen,
        return_lse=return_lse,
        impl=impl,
    )

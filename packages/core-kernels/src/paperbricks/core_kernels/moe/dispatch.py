"""Dispatch (permute) tokens to experts and combine (unpermute) the expert outputs.

With ``expert_idx`` (N, k) flattened to ``N·k`` slots (slot ``j`` = token ``j // k``'s
``(j mod k)``-th choice), :func:`permute` stable-sorts the slots by expert so that each expert's
tokens are contiguous, and :func:`unpermute` is its weighted inverse::

    x_sorted[i] = x[perm[i] // k]                                        (1)
    out[t]      = Σ_{i : perm[i] // k = t} w_flat[perm[i]] · y_sorted[i]  (2)

Counts come from a scatter-add histogram and offsets from a cumulative sum; both stay on the
device (no ``.item()``, no ``bincount``, whose CUDA path reads the maximum on the host).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Permuted", "expert_counts", "permute", "unpermute"]


class Permuted(NamedTuple):
    """What :func:`permute` returns (all on the device of the inputs)."""

    x_sorted: torch.Tensor  # (N·k, D) tokens grouped by expert, experts in increasing order
    counts: torch.Tensor  # (E,) int64 tokens per expert
    offsets: (
        torch.Tensor
    )  # (E,) int32 cumulative block ends: expert e owns [offsets[e-1], offsets[e])
    perm: torch.Tensor  # (N·k,) int64: sorted row i holds flat slot perm[i] (token perm[i] // k)


def expert_counts(expert_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Tokens routed to each expert, (E,) int64, computed on the device without a host sync.

    Args:
        expert_idx: (N, k) (or any shape) int64 expert indices in ``[0, E)``.
        num_experts: E.
    """
    flat = expert_idx.reshape(-1)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))


def _check_idx(expert_idx: torch.Tensor, num_experts: int, op: str) -> None:
    if not isinstance(expert_idx, torch.Tensor) or expert_idx.dtype != torch.int64:
        got = expert_idx.dtype if isinstance(expert_idx, torch.Tensor) else type(expert_idx)
        raise TypeError(f"{op}: expert_idx must be an int64 tensor (N, k), got {got}")
    if expert_idx.dim() != 2:
        raise ValueError(f"{op}: expert_idx must be (N, k), got shape {tuple(expert_idx.shape)}")
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"{op}: num_experts must be a positive int, got {num_experts!r}")
    # Range check only where it costs no device->host sync.
    if expert_idx.device.type == "cpu" and expert_idx.numel():
        lo, hi = int(expert_idx.min()), int(expert_idx.max())
        if lo < 0 or hi >= num_experts:
            raise ValueError(
                f"{op}: expert_idx values must lie in [0, {num_experts}), got range [{lo}, {hi}]"
            )


def permute(x: torch.Tensor, expert_idx: torch.Tensor, num_experts: int) -> Permuted:
    """Group token copies by expert (stable sort), eq. (1).

    Args:
        x: (N, D) tokens, any dtype.
        expert_idx: (N, k) int64 expert choices (e.g. from :func:`~.topk_route`).
        num_experts: E, the number of experts (the length of ``counts``/``offsets``).

    Returns:
        :class:`Permuted` ``(x_sorted (N·k, D), counts (E,) int64, offsets (E,) int32,
        perm (N·k,) int64)``. Within an expert, token copies keep their original order.

    Examples:
        >>> import torch
        >>> x = torch.arange(3.0)[:, None]
        >>> p = permute(x, torch.tensor([[2], [0], [2]]), num_experts=3)
        >>> p.x_sorted.flatten().tolist(), p.counts.tolist(), p.offsets.tolist()
        ([1.0, 0.0, 2.0], [1, 0, 2], [1, 1, 3])
    """
    _check_idx(expert_idx, num_experts, "permute")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] != expert_idx.shape[0]:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f"permute: x must be (N={expert_idx.shape[0]}, D), got {got}")
    k = expert_idx.shape[1]
    flat = expert_idx.reshape(-1)  # (N·k,)
    perm = torch.argsort(flat, stable=True)  # (N·k,)
    x_sorted = x.index_select(0, perm // k)  # (N·k, D)
    counts = expert_counts(flat, num_experts)  # (E,)
    offsets = counts.cumsum(0).to(torch.int32)  # (E,)
    return Permuted(x_sorted, counts, offsets, perm)


def unpermute(
    y_sorted: torch.Tensor,
    perm: torch.Tensor,
    weights: torch.Tensor | None,
    n_tokens: int,
) -> torch.Tensor:
    """Weighted sum of expert outputs back onto their tokens, eq. (2) (inverse of :func:`permute`).

    Args:
        y_sorted: (N·k, D) expert outputs in the sorted order of :func:`permute`.
        perm: (N·k,) int64 permutation from :func:`permute`.
        weights: (N, k) routing weights, or None for an unweighted sum.
        n_tokens: N.

    Returns:
        (N, D) in ``y_sorted.dtype``; the weighted sum accumulates in float32 (float64 when
        ``y_sorted`` is float64). Differentiable in ``y_sorted`` and ``weights``.

    Examples:
        >>> import torch
        >>> x = torch.randn(4, 3)
        >>> idx = torch.tensor([[0, 1], [1, 0], [1, 1], [0, 0]])
        >>> p = permute(x, idx, num_experts=2)
        >>> w = torch.full((4, 2), 0.5)
        >>> torch.allclose(unpermute(p.x_sorted, p.perm, w, 4), x)
        True
    """
    if not isinstance(y_sorted, torch.Tensor) or y_sorted.dim() != 2:
        got = tuple(y_sorted.shape) if isinstance(y_sorted, torch.Tensor) else type(y_sorted)
        raise ValueError(f"unpermute: y_sorted must be (N·k, D), got {got}")
    if (
        not isinstance(perm, torch.Tensor)
        or perm.dtype != torch.int64
        or perm.shape != (y_sorted.shape[0],)
    ):
        got = (perm.dtype, tuple(perm.shape)) if isinstance(perm, torch.Tensor) else type(perm)
        raise ValueError(
            f"unpermute: perm must be int64 of shape ({y_sorted.shape[0]},), got {got}"
        )
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
        raise ValueError(f"unpermute: n_tokens must be a non-negative int, got {n_tokens!r}")
    if n_tokens == 0:
        if y_sorted.shape[0]:
            raise ValueError(f"unpermute: n_tokens=0 but y_sorted has {y_sorted.shape[0]} rows")
        return y_sorted.new_zeros(0, y_sorted.shape[1])
    if y_sorted.shape[0] % n_tokens:
        raise ValueError(
            f"unpermute: y_sorted rows ({y_sorted.shape[0]}) must be a multiple of n_tokens={n_tokens}"
        )
    k = y_sorted.shape[0] // n_tokens
    out_dtype = y_sorted.dtype
    if weights is not None and weights.shape != (n_tokens, k):
        raise ValueError(
            f"unpermute: weights must be (N={n_tokens}, k={k}), got {tuple(weights.shape)}"
        )
    acc_dtype = torch.promote_types(out_dtype, torch.float32)
    contrib = y_sorted.to(acc_dtype)  # (N·k, D)
    if weights is not None:
        w_sorted = weights.reshape(-1).index_select(0, perm).to(acc_dtype)  # (N·k,)
        contrib = contrib * w_sorted[:, None]
    out = torch.zeros(n_tokens, y_sorted.shape[1], dtype=acc_dtype, device=y_sorted.device)
    out = out.index_add(0, perm // k, contrib)  # (N, D)
    return out.to(out_dtype)

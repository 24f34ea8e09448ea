"""Rank statistics, batched over leading dims, with ties given their average (mid) rank.

- :func:`rankdata`: 1-based average ranks along the last dim (``scipy.stats.rankdata`` "average").
- :func:`roc_auc`: the Mann–Whitney form ``AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with ``R₊`` the sum of
  the positives' midranks, so a tie between a positive and a negative counts ½ (as
  ``sklearn.metrics.roc_auc_score``).
- :func:`spearman`: the Pearson correlation of the average ranks.
"""

from __future__ import annotations

import torch

from ._checks import as_float_tensor, check_binary_labels

__all__ = ["rankdata", "roc_auc", "spearman"]


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, float64) along the last dim; tied values share their mean rank.

    Args:
        x: ``(..., N)`` real tensor without NaN.

    Returns:
        ``(..., N)`` float64 ranks.

    Examples:
        >>> import torch
        >>> rankdata(torch.tensor([10.0, 20.0, 10.0, 5.0])).tolist()
        [2.5, 4.0, 2.5, 1.0]
    """
    as_float_tensor("x", x, min_dim=1)
    if x.is_floating_point() and bool(x.isnan().any()):
        raise ValueError("x: contains NaN, which has no rank")
    n = x.shape[-1]
    v, order = torch.sort(x, dim=-1, stable=True)  # (..., N)
    idx = torch.arange(n, device=x.device).expand_as(v)
    new = v[..., 1:] != v[..., :-1]  # (..., N-1): a new value starts at i+1
    true = torch.ones_like(v[..., :1], dtype=torch.bool)
    is_start = torch.cat([true, new], dim=-1)
    is_end = torch.cat([new, true], dim=-1)
    first = torch.where(is_start, idx, torch.zeros_like(idx)).cummax(dim=-1).values
    last_rev = torch.where(is_end, idx, torch.full_like(idx, n)).flip(-1).cummin(dim=-1).values
    last = last_rev.flip(-1)
    mid = (first + last).to(torch.float64) / 2 + 1  # (..., N) midranks in sorted order
    return torch.empty_like(mid).scatter_(-1, order, mid)


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve, batched, ties counted ½ (Mann–Whitney U / (n₊ n₋)).

    Args:
        scores: ``(..., N)`` real scores, higher meaning "more positive"; no NaN.
        labels: ``(N,)`` or ``(..., N)`` (broadcastable to ``scores``) binary labels, bool or
            0/1 ints/floats. Every row needs at least one positive and one negative.

    Returns:
        float64 tensor of the batch shape ``(...)``.

    Examples:
        >>> import torch
        >>> float(roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])))
        0.75
    """
    as_float_tensor("scores", scores, min_dim=1)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.shape[-1:] != scores.shape[-1:]:
        raise ValueError(
            f"labels: expected last dimension N={scores.shape[-1]} like scores, got shape "
            f"{tuple(labels.shape)}"
        )
    pos = check_binary_labels("labels", labels).to(scores.device)
    try:
        pos = pos.expand_as(scores)
    except RuntimeError as exc:
        raise ValueError(
            f"labels: shape {tuple(labels.shape)} does not broadcast to scores {tuple(scores.shape)}"
        ) from exc
    n_pos = pos.sum(dim=-1).to(torch.float64)
    n_neg = scores.shape[-1] - n_pos
    if bool(((n_pos == 0) | (n_neg == 0)).any()):
        raise ValueError("labels: every row needs at least one positive and one negative label")
    ranks = rankdata(scores)  # (..., N)
    r_pos = torch.where(pos, ranks, torch.zeros_like(ranks)).sum(dim=-1)
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dim, batched, with average ranks for ties.

    Args:
        a, b: ``(..., N)`` real tensors of the same (or broadcastable) shape, ``N >= 2``, no NaN.

    Returns:
        float64 tensor of the batch shape. A row where ``a`` or ``b`` is constant has no
        correlation and gives NaN (as ``scipy.stats.spearmanr``).

    Examples:
        >>> import torch
        >>> float(spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0])))
        0.5
    """
    as_float_tensor("a", a, min_dim=1)
    as_float_tensor("b", b, min_dim=1)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a, b: last dimensions differ, a {tuple(a.shape)} vs b {tuple(b.shape)}")
    if a.shape[-1] < 2:
        raise ValueError(f"a: expected at least 2 samples along the last dim, got {tuple(a.shape)}")
    ra = rankdata(a)
    rb = rankdata(b)
    ra = ra - ra.mean(dim=-1, keepdim=True)
    rb = rb - rb.mean(dim=-1, keepdim=True)
    num = (ra * rb).sum(dim=-1)
    den = (ra.square().sum(dim=-1) * rb.square().sum(dim=-1)).sqrt()
    return num / den  # 0/0 -> NaN for a constant row

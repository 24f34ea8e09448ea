"""Top-k routing of tokens to experts.

Two orderings of the same ingredients, both computed in (at least) float32:

- ``"softmax_topk"`` (Mixtral, Aria, MLP-KAN, Switch): ``p = softmax(z)``, keep the ``k`` largest
  ``p``; with ``renormalize`` divide the kept weights by their sum. Softmax → top-k → renormalise
  equals a softmax over the top-k logits alone, ``softmax(z[topk])``, because the normaliser
  ``Σ_e exp z_e`` cancels.
- ``"topk_softmax"``: keep the ``k`` largest logits, then softmax over them (weights always sum to
  one, so ``renormalize`` changes nothing).

Both pick the same experts (softmax is monotone); they differ only when ``renormalize=False``.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["RoutingMode", "topk_route"]

RoutingMode = Literal["softmax_topk", "topk_softmax"]
_MODES = ("softmax_topk", "topk_softmax")


def topk_route(
    logits: torch.Tensor,
    k: int,
    *,
    mode: str = "softmax_topk",
    renormalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``k`` distinct experts per token and their mixing weights.

    Args:
        logits: (N, E) router logits (any leading shape ``(..., E)`` works); any float dtype.
        k: experts per token, ``1 <= k <= E``.
        mode: ``"softmax_topk"`` (default) or ``"topk_softmax"``; see the module docstring.
        renormalize: with ``"softmax_topk"``, divide the kept probabilities by their sum
            (default True); ignored by ``"topk_softmax"``.

    Returns:
        ``(expert_idx, weights)``: ``expert_idx`` (N, k) int64, sorted by decreasing weight;
        ``weights`` (N, k) in float32 (float64 when the logits are float64), differentiable with
        respect to ``logits``.

    Examples:
        >>> import torch
        >>> idx, w = topk_route(torch.tensor([[0.0, 2.0, 1.0, -1.0]]), k=2)
        >>> idx.tolist()
        [[1, 2]]
        >>> torch.allclose(w, torch.softmax(torch.tensor([[2.0, 1.0]]), -1))
        True
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits: expected a float tensor (..., E), got {type(logits)}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: expected shape (..., E) with E >= 1, got {tuple(logits.shape)}")
    num_experts = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
        raise ValueError(f"k: expected an int in [1, E={num_experts}], got {k!r}")
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (N, E)
    if mode == "softmax_topk":
        probs = torch.softmax(z, dim=-1)  # (N, E)
        weights, expert_idx = probs.topk(k, dim=-1)  # (N, k)
        if renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
    else:
        top, expert_idx = z.topk(k, dim=-1)  # (N, k)
        weights = torch.softmax(top, dim=-1)
    return expert_idx, weights

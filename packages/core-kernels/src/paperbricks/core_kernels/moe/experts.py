"""SwiGLU expert FFNs over stacked weights: the sorted (grouped GEMM) path and the decode path.

Stacked-weight layout (shared by :class:`~.MoELayer`, aria and mlpkan)::

    w1: (E, D, 2I)   fc1 of every expert, (in, out) order; columns [:I] gate, [I:] up
    w2: (E, I, D)    fc2 of every expert, (in, out) order
    expert_e(x) = (silu(x @ w1[e][:, :I]) * (x @ w1[e][:, I:])) @ w2[e]

An ``nn.Linear`` stack ``(E, out, in)`` converts with ``.transpose(-2, -1)``.

- :func:`moe_ffn`: route-sorted path, ``permute → grouped_swiglu → grouped_mm → unpermute``;
  it never reads counts on the host (unless ``impl="reference"``).
- :func:`moe_decode`: for a handful of tokens, gather the chosen experts' weights and contract
  with einsum (no sort, no grouped GEMM): ``y_t = Σ_j w_{t,j} · expert_{idx_{t,j}}(x_t)``.
"""

from __future__ import annotations

import torch

from .dispatch import permute, unpermute
from .grouped_gemm import grouped_mm, grouped_swiglu, swiglu

__all__ = ["moe_decode", "moe_ffn"]


def _check_expert_weights(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, op: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be (N, D), got shape {tuple(x.shape)}")
    d = x.shape[1]
    if w1.dim() != 3 or w1.shape[1] != d or w1.shape[2] % 2:
        raise ValueError(f"{op}: w1 must be (E, D={d}, 2I), got shape {tuple(w1.shape)}")
    e, i = w1.shape[0], w1.shape[2] // 2
    if w2.shape != (e, i, d):
        raise ValueError(f"{op}: w2 must be (E={e}, I={i}, D={d}), got shape {tuple(w2.shape)}")


def moe_ffn(
    x: torch.Tensor,
    expert_idx: torch.Tensor,
    weights: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Routed SwiGLU experts over sorted tokens: ``y_t = Σ_j weights[t, j] · expert_{idx[t, j]}(x_t)``.

    Args:
        x: (N, D) tokens, same dtype as ``w1``/``w2``.
        expert_idx: (N, k) int64 expert choices.
        weights: (N, k) mixing weights (any float dtype; combined in float32).
        w1: (E, D, 2I) stacked fc1 weights (gate | up).
        w2: (E, I, D) stacked fc2 weights.
        impl: grouped-GEMM backend, ``"auto"|"reference"|"torch"|"triton"``.

    Returns:
        (N, D) in ``x.dtype``.

    Examples:
        >>> import torch
        >>> x, w1, w2 = torch.randn(5, 4), torch.randn(3, 4, 6), torch.randn(3, 3, 4)
        >>> idx, wts = torch.tensor([[0], [2], [2], [0], [1]]), torch.ones(5, 1)
        >>> y = moe_ffn(x, idx, wts, w1, w2, impl="reference")
        >>> torch.allclose(y[1], (torch.nn.functional.silu(x[1] @ w1[2][:, :3]) * (x[1] @ w1[2][:, 3:])) @ w2[2], atol=1e-5)
        True
    """
    _check_expert_weights(x, w1, w2, "moe_ffn")
    p = permute(x, expert_idx, w1.shape[0])
    h = grouped_swiglu(p.x_sorted, w1, p.offsets, impl=impl)  # (N·k, I)
    y_sorted = grouped_mm(h, w2, p.offsets, impl=impl)  # (N·k, D)
    return unpermute(y_sorted, p.perm, weights, x.shape[0])  # (N, D)


def moe_decode(
    x: torch.Tensor,
    expert_idx: torch.Tensor,
    weights: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
) -> torch.Tensor:
    """Decode-time experts: gather each token's chosen expert weights, then einsum.

    Reads ``N·k`` weight copies, so it pays off only for a few tokens (single-token decode);
    it equals :func:`moe_ffn`.

    Args:
        x: (N, D) tokens.
        expert_idx: (N, k) int64 expert choices.
        weights: (N, k) mixing weights (combined in float32).
        w1: (E, D, 2I) stacked fc1 weights (gate | up).
        w2: (E, I, D) stacked fc2 weights.

    Returns:
        (N, D) in ``x.dtype``.

    Examples:
        >>> import torch
        >>> x, w1, w2 = torch.randn(1, 4), torch.randn(3, 4, 6), torch.randn(3, 3, 4)
        >>> idx, wts = torch.tensor([[2, 0]]), torch.tensor([[0.7, 0.3]])
        >>> y = moe_decode(x, idx, wts, w1, w2)
        >>> torch.allclose(y, moe_ffn(x, idx, wts, w1, w2, impl="reference"), atol=1e-5)
        True
    """
    _check_expert_weights(x, w1, w2, "moe_decode")
    if expert_idx.shape != weights.shape or expert_idx.shape[0] != x.shape[0]:
        raise ValueError(
            f"moe_decode: expert_idx and weights must both be (N={x.shape[0]}, k), got "
            f"{tuple(expert_idx.shape)} and {tuple(weights.shape)}"
        )
    w1_sel = w1[expert_idx]  # (N, k, D, 2I)
    w2_sel = w2[expert_idx]  # (N, k, I, D)
    h = torch.einsum("nd,nkdf->nkf", x, w1_sel)  # (N, k, 2I)
    y = torch.einsum("nki,nkid->nkd", swiglu(h), w2_sel)  # (N, k, D)
    acc = torch.promote_types(x.dtype, torch.float32)
    out = torch.einsum("nk,nkd->nd", weights.to(acc), y.to(acc))  # (N, D)
    return out.to(x.dtype)

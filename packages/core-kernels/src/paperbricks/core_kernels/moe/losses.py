"""Router auxiliary losses and the autograd trick that attaches them to the main output.

- Switch-style load balancing (Fedus et al. 2021, eq. 4-6, generalised to top-k)::

      LB = c · E / (N·k) · Σ_e P̄_e · n_e,   P̄_e = (1/N) Σ_t p_{t,e},   n_e = #{(t, j) : idx_{t,j} = e}

  ``n_e`` is a histogram count (no gradient); the gradient flows through ``P̄``. Under uniform
  routing (``P̄_e = 1/E``, ``n_e = N·k/E``) LB = c. Relation to transformers' Mixtral
  ``load_balancing_loss_func`` (which returns ``E · Σ_e (n_e / N) · P̄_e``, with the counts
  over all ``k`` slots divided by N only): ``mixtral = k · LB / c``.
- Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): ``Z = c_z · mean_t (logsumexp_e z_{t,e})²``.
- :class:`AuxLossAutoScaler`: identity on the main output in the forward pass; in the backward
  pass it hands the aux loss the gradient ``scale`` (default 1; set it to ``1/grad_accum_steps``,
  or to the loss scale, with :meth:`AuxLossAutoScaler.set_loss_scale`). So
  ``out = AuxLossAutoScaler.apply(out, aux)`` trains on ``main + scale·aux`` while the value
  (and what is logged) is the main output alone.
"""

from __future__ import annotations

import torch

from .dispatch import expert_counts

__all__ = ["AuxLossAutoScaler", "load_balancing_loss", "z_loss"]


def load_balancing_loss(
    scores: torch.Tensor,
    expert_idx: torch.Tensor,
    num_experts: int,
    k: int | None = None,
    coef: float = 1.0,
    *,
    scores_are_probs: bool = False,
) -> torch.Tensor:
    """Switch-style load-balancing loss ``c · E/(N·k) · Σ_e P̄_e · n_e``.

    Args:
        scores: (N, E) router logits (softmaxed here in float32) or, with
            ``scores_are_probs=True``, router probabilities.
        expert_idx: (N, k) int64 chosen experts; counted without gradient.
        num_experts: E.
        k: experts per token; defaults to ``expert_idx.shape[1]`` and must match it.
        coef: the coefficient ``c`` (default 1.0).
        scores_are_probs: whether ``scores`` are already probabilities (default False).

    Returns:
        A scalar in float32 (float64 for float64 scores), differentiable in ``scores``.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(8, 4)  # uniform router
        >>> idx = torch.arange(8)[:, None] % 4  # every expert gets 2 tokens
        >>> round(float(load_balancing_loss(logits, idx, num_experts=4, coef=0.01)), 6)
        0.01
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
        raise ValueError(f"scores: expected router logits or probs (N, E), got {got}")
    if scores.shape[1] != num_experts:
        raise ValueError(
            f"scores: expected E={num_experts} columns, got shape {tuple(scores.shape)}"
        )
    if not isinstance(expert_idx, torch.Tensor) or expert_idx.dim() != 2:
        raise ValueError(f"expert_idx: expected an int64 tensor (N, k), got {expert_idx!r:.80}")
    if expert_idx.shape[0] != scores.shape[0] or expert_idx.dtype != torch.int64:
        raise ValueError(
            f"expert_idx: expected int64 (N={scores.shape[0]}, k), got {expert_idx.dtype} "
            f"{tuple(expert_idx.shape)}"
        )
    if k is None:
        k = expert_idx.shape[1]
    if k != expert_idx.shape[1]:
        raise ValueError(f"k: expected expert_idx.shape[1]={expert_idx.shape[1]}, got {k}")
    n_tokens = scores.shape[0]
    if n_tokens == 0:
        raise ValueError("scores: need at least one token (N >= 1)")
    acc = torch.promote_types(scores.dtype, torch.float32)
    probs = scores.to(acc) if scores_are_probs else torch.softmax(scores.to(acc), dim=-1)  # (N, E)
    p_mean = probs.mean(dim=0)  # (E,)
    counts = expert_counts(expert_idx, num_experts).to(acc)  # (E,), no gradient
    return coef * num_experts / (n_tokens * k) * (p_mean * counts).sum()


def z_loss(logits: torch.Tensor, coef: float = 1.0) -> torch.Tensor:
    """Router z-loss ``c_z · mean_t (logsumexp_e logits_{t,e})²``.

    Args:
        logits: (N, E) router logits (any leading shape ``(..., E)``), computed in float32.
        coef: the coefficient ``c_z`` (default 1.0).

    Returns:
        A scalar in float32 (float64 for float64 logits).

    Examples:
        >>> import torch
        >>> round(float(z_loss(torch.zeros(3, 4))), 6)  # logsumexp = log 4
        1.921812
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: expected a tensor (..., E) with E >= 1, got {logits!r:.80}")
    if logits.numel() == 0:
        raise ValueError(f"logits: need at least one token, got shape {tuple(logits.shape)}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return coef * torch.logsumexp(z, dim=-1).square().mean()


class AuxLossAutoScaler(torch.autograd.Function):
    """Identity on ``output``; its backward also sends gradient ``scale`` into ``aux_loss``.

    Use as ``output = AuxLossAutoScaler.apply(output, aux_loss)``: the forward value is
    ``output`` unchanged, and ``loss(output).backward()`` yields the gradients of
    ``loss + scale · aux_loss``. ``scale`` is a class-level setting (default 1.0); set it to
    ``1 / grad_accum_steps`` (times any loss scale) with :meth:`set_loss_scale`.

    Examples:
        >>> import torch
        >>> w = torch.tensor(2.0, requires_grad=True)
        >>> out = AuxLossAutoScaler.apply(w * 3.0, w**2)
        >>> out.backward()
        >>> float(out.detach()), float(w.grad)  # d(3w + w²)/dw = 3 + 2w
        (6.0, 7.0)
    """

    main_loss_backward_scale: float | torch.Tensor = 1.0

    @staticmethod
    def forward(ctx, output: torch.Tensor, aux_loss: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(aux_loss)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (aux_loss,) = ctx.saved_tensors
        scale = AuxLossAutoScaler.main_loss_backward_scale
        aux_grad = torch.ones_like(aux_loss) * scale
        return grad_output, aux_grad

    @classmethod
    def set_loss_scale(cls, scale: float | torch.Tensor) -> None:
        """Set the gradient handed to the aux loss (e.g. ``1 / grad_accum_steps``)."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.Tensor)):
            raise TypeError(f"scale: expected a float or a scalar tensor, got {type(scale)}")
        if isinstance(scale, torch.Tensor) and scale.numel() != 1:
            raise ValueError(f"scale: expected a scalar tensor, got shape {tuple(scale.shape)}")
        cls.main_loss_backward_scale = scale

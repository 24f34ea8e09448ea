"""Aria's router auxiliary losses (arXiv 2410.05993; the official ``rhymes-ai/Aria`` training code).

Thin wrappers over :mod:`paperbricks.core_kernels.moe` (``load_balancing_loss``, ``z_loss``,
``AuxLossAutoScaler``) that add Aria's conventions:

- the official coefficients: load balancing ``c_aux = 1e-3`` (pre-training; the fine-tune recipe
  ``recipes/config_full.yaml`` uses ``1e-4``), router z-loss ``c_z = 1e-5``;
- Switch load balancing per layer, ``LB = c_aux · E/(T·k) · Σ_e P̄_e · n_e`` with ``P̄_e`` the
  token mean of the **full** softmax over the router logits and ``n_e`` the number of
  (token, slot) assignments to expert ``e`` (a histogram, no gradient). It equals ``c_aux`` at
  uniform routing, and ``k · LB / c_aux`` equals transformers' Mixtral ``load_balancing_loss_func``
  on one layer without mask;
- router z-loss per layer, ``Z = c_z · mean_t (logsumexp_e logits_{t,e})²``;
- **summed over layers**: the official code (Megatron-style) attaches each layer's loss to that
  layer's activations through the auto-scaler, so every layer contributes its own gradient, i.e.
  the total is the sum over layers (not the mean Mixtral's HF loss takes);
- padding excluded: with an ``attention_mask`` only tokens whose mask is 1 enter ``T``, ``P̄`` and
  ``n_e`` (the official code packs sequences and has no padding; HF Mixtral's masked variant does
  the same exclusion). Selecting the valid rows reads the mask on the host (one sync); without a
  mask there is none.

What differs from HF transformers: HF 4.57 and 5.x compute neither loss for Aria, so training with
HF silently drops load balancing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from paperbricks.core_kernels.moe import (
    AuxLossAutoScaler,
    load_balancing_loss,
    topk_route,
    z_loss,
)

__all__ = [
    "ARIA_AUX_LOSS_COEF",
    "ARIA_FINETUNE_AUX_LOSS_COEF",
    "ARIA_Z_LOSS_COEF",
    "AuxLossAutoScaler",
    "attach_aux_loss",
    "router_aux_losses",
    "router_load_balancing_loss",
    "router_z_loss",
    "set_aux_loss_scale",
]

ARIA_AUX_LOSS_COEF = 1e-3  # official pre-training load-balancing coefficient
ARIA_FINETUNE_AUX_LOSS_COEF = 1e-4  # recipes/config_full.yaml
ARIA_Z_LOSS_COEF = 1e-5  # official router z-loss coefficient


def _check_logits(router_logits: object, name: str = "router_logits") -> torch.Tensor:
    if not isinstance(router_logits, torch.Tensor) or not router_logits.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor (T, E), got {type(router_logits)}")
    if router_logits.dim() != 2 or router_logits.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (T, E), got {tuple(router_logits.shape)}")
    return router_logits


def _valid_rows(
    t: torch.Tensor, attention_mask: torch.Tensor | None, name: str = "attention_mask"
) -> torch.Tensor:
    """Rows of ``t`` (T, ...) whose flattened ``attention_mask`` entry is non-zero."""
    if attention_mask is None:
        return t
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor or None, got {type(attention_mask)}")
    if attention_mask.numel() != t.shape[0]:
        raise ValueError(
            f"{name}: expected {t.shape[0]} entries (one per token, e.g. (B, S) flattened), got "
            f"shape {tuple(attention_mask.shape)}"
        )
    keep = attention_mask.reshape(-1).to(device=t.device) != 0  # (T,)
    return t[keep]  # boolean indexing: one host sync


def router_load_balancing_loss(
    router_logits: torch.Tensor,
    top_k: int,
    *,
    expert_idx: torch.Tensor | None = None,
    coef: float = ARIA_AUX_LOSS_COEF,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Switch load-balancing loss of one MoE layer, ``c · E/(T·k) · Σ_e P̄_e · n_e``.

    Args:
        router_logits: (T, E) router logits of one layer (any float dtype; computed in float32,
            float64 for float64).
        top_k: k, experts per token.
        expert_idx: (T, k) int64 chosen experts; default: top-k of ``router_logits`` (Aria's
            router picks on the logits).
        coef: ``c_aux``; default 1e-3 (Aria pre-training).
        attention_mask: optional (T,) or (B, S) with B·S = T; tokens with mask 0 are excluded.

    Returns:
        A float32 (float64) scalar, differentiable in ``router_logits``.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(8, 4)  # uniform probabilities
        >>> idx = torch.tensor([[0, 1], [2, 3]] * 4)  # every expert chosen 4 times
        >>> round(float(router_load_balancing_loss(logits, 2, expert_idx=idx)), 8)
        0.001
    """
    logits = _check_logits(router_logits)
    if expert_idx is None:
        expert_idx, _ = topk_route(logits, top_k, mode="topk_softmax")
    logits = _valid_rows(logits, attention_mask)
    expert_idx = _valid_rows(expert_idx, attention_mask, "attention_mask (for expert_idx)")
    if logits.shape[0] == 0:
        return logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
    return load_balancing_loss(logits, expert_idx, logits.shape[1], k=top_k, coef=coef)


def router_z_loss(
    router_logits: torch.Tensor,
    *,
    coef: float = ARIA_Z_LOSS_COEF,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Router z-loss of one layer, ``c_z · mean_t (logsumexp_e logits_{t,e})²``.

    Args:
        router_logits: (T, E) router logits.
        coef: ``c_z``; default 1e-5 (Aria).
        attention_mask: optional (T,) or (B, S) with B·S = T; tokens with mask 0 are excluded.

    Returns:
        A float32 (float64) scalar.

    Examples:
        >>> import math, torch
        >>> z = router_z_loss(torch.zeros(3, 4), coef=1.0)  # logsumexp = log 4
        >>> abs(float(z) - math.log(4) ** 2) < 1e-6
        True
    """
    logits = _valid_rows(_check_logits(router_logits), attention_mask)
    if logits.shape[0] == 0:
        return logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
    return z_loss(logits, coef=coef)


def router_aux_losses(
    router_logits: Sequence[torch.Tensor],
    top_k: int,
    *,
    aux_coef: float = ARIA_AUX_LOSS_COEF,
    z_coef: float = ARIA_Z_LOSS_COEF,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load-balancing and z-losses of every layer, each **summed over layers** (official).

    Args:
        router_logits: one (T, E) tensor per MoE layer (e.g. ``outputs.router_logits``).
        top_k: k, experts per token.
        aux_coef: ``c_aux`` (default 1e-3); 0 skips the term (returns zero).
        z_coef: ``c_z`` (default 1e-5); 0 skips the term (returns zero).
        attention_mask: optional (B, S) or (T,) mask; padding tokens are excluded per layer.

    Returns:
        ``(load_balancing, z_loss)``, float32 scalars.

    Examples:
        >>> import torch
        >>> lb, z = router_aux_losses([torch.zeros(8, 4)] * 2, top_k=2, z_coef=0.0)
        >>> float(z)
        0.0
    """
    if isinstance(router_logits, torch.Tensor) or not isinstance(router_logits, Sequence):
        raise TypeError(
            f"router_logits: expected a sequence of (T, E) tensors (one per layer), got "
            f"{type(router_logits)}"
        )
    if len(router_logits) == 0:
        raise ValueError("router_logits: expected at least one layer, got an empty sequence")
    for name, c in (("aux_coef", aux_coef), ("z_coef", z_coef)):
        if isinstance(c, bool) or not isinstance(c, (int, float)) or c < 0:
            raise ValueError(f"{name}: expected a float >= 0, got {c!r}")
    first = _check_logits(router_logits[0], "router_logits[0]")
    acc = torch.promote_types(first.dtype, torch.float32)
    lb = first.new_zeros((), dtype=acc)
    z = first.new_zeros((), dtype=acc)
    for i, logits in enumerate(router_logits):
        _check_logits(logits, f"router_logits[{i}]")
        if aux_coef > 0:
            lb = lb + router_load_balancing_loss(
                logits, top_k, coef=aux_coef, attention_mask=attention_mask
            )
        if z_coef > 0:
            z = z + router_z_loss(logits, coef=z_coef, attention_mask=attention_mask)
    return lb, z


def attach_aux_loss(output: torch.Tensor, aux_loss: torch.Tensor) -> torch.Tensor:
    """Return ``output`` unchanged in value, with ``aux_loss``'s gradient attached to it.

    A backward pass through the result gives the gradients of ``main + s · aux_loss`` where
    ``s`` is the auto-scaler's scale (:func:`set_aux_loss_scale`, e.g. ``1/grad_accum``); the
    logged ``main`` loss excludes ``aux_loss``. This is the official ``MoEAuxLossAutoScaler``.

    Args:
        output: any tensor that the main loss depends on (e.g. the final hidden states).
        aux_loss: a scalar tensor.

    Examples:
        >>> import torch
        >>> w = torch.tensor(2.0, requires_grad=True)
        >>> y = attach_aux_loss(3 * w, w**2)
        >>> y.backward()
        >>> float(y), float(w.grad)
        (6.0, 7.0)
    """
    if not isinstance(aux_loss, torch.Tensor) or aux_loss.numel() != 1:
        raise ValueError(f"aux_loss: expected a scalar tensor, got {aux_loss!r:.60}")
    return AuxLossAutoScaler.apply(output, aux_loss)


def set_aux_loss_scale(scale: float | torch.Tensor) -> None:
    """Set the gradient the auto-scaler hands to every attached aux loss (process-wide).

    Use ``1 / grad_accum_steps`` (times any loss scale) so that the aux gradient is averaged
    like the main loss over accumulation steps.
    """
    AuxLossAutoScaler.set_loss_scale(scale)

"""Small input checks shared by the stats functions (errors name the argument)."""

from __future__ import annotations

import torch


def as_float_tensor(name: str, x: object, *, min_dim: int = 0) -> torch.Tensor:
    """Return ``x`` (a real, non-bool tensor) unchanged, raising ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected a real floating or integer tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name}: expected at least {min_dim} dimensions, got shape {tuple(x.shape)}"
        )
    return x


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` when ``x`` holds NaN or Inf."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or Inf")


def check_binary_labels(name: str, labels: torch.Tensor) -> torch.Tensor:
    """Return ``labels`` as a bool tensor, raising ``ValueError`` unless every value is 0 or 1."""
    if labels.dtype == torch.bool:
        return labels
    if labels.is_complex():
        raise TypeError(
            f"{name}: expected bool, integer or float labels in {{0, 1}}, got {labels.dtype}"
        )
    ok = (labels == 0) | (labels == 1)
    if not bool(ok.all()):
        bad = labels[~ok].flatten()[0].item()
        raise ValueError(f"{name}: expected binary labels in {{0, 1}}, found the value {bad!r}")
    return labels == 1

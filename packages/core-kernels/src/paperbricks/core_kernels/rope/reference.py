"""Plain-PyTorch rotary position embeddings (RoPE, Su et al. 2021), 1-D and 2-D, plus GQA helpers.

A head vector of (even) size D is split into D/2 rotation pairs; pair m at position p is rotated by
the angle p·θ_m with θ_m = base^(−2m/D):

    (x₁, x₂) ↦ (x₁ cos φ − x₂ sin φ,  x₂ cos φ + x₁ sin φ)

Where pair m sits in the head vector is the *layout*:

- ``"interleaved"`` (GPT-J, Meta's original Llama, Mistral's reference code): pair m = (2m, 2m+1);
- ``"half"`` (GPT-NeoX, HF transformers ``rotate_half``): pair m = (m, m + D/2).

A model trained in one layout runs in the other once the rows of Wq and Wk are permuted inside each
head (:func:`permute_rope_rows`), which is how HF converts Meta/Mistral checkpoints.

2-D RoPE for image patches, as Pixtral's code defines it (paper and code disagree on the order;
weights need the code's): with θ_m = base^(−2m/D), patch (i, j) rotates pair b < D/4 by i·θ_{2b}
and pair b ≥ D/4 by j·θ_{2(b−D/4)+1}: all height pairs first, then all width pairs.

Angles are computed in float64 and cos/sin rounded once to the requested dtype; HF computes the
angle in float32, which differs by float32 rounding of p·θ (relative 6e-8 of the angle).
"""

from __future__ import annotations

import torch

__all__ = [
    "apply_rope_reference",
    "kv_head_index",
    "permute_rope_rows",
    "repeat_kv",
    "rope_2d_angles",
    "rope_angles",
    "rope_inv_freq",
]

_LAYOUTS = ("interleaved", "half")


def _check_dim(dim: int, multiple: int, name: str = "dim") -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < multiple or dim % multiple:
        raise ValueError(f"{name}: expected a positive int divisible by {multiple}, got {dim!r}")


def _check_base(base: float) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise ValueError(f"base: expected a float > 0, got {base!r}")
    return float(base)


def _as_positions(
    p: torch.Tensor | int, name: str, device: torch.device | str | None
) -> torch.Tensor:
    if isinstance(p, bool):
        raise TypeError(f"{name}: expected an int or a tensor, got bool")
    if isinstance(p, int):
        if p < 0:
            raise ValueError(f"{name}: expected a length >= 0, got {p}")
        return torch.arange(p, device=device)
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name}: expected an int or a tensor, got {type(p).__name__}")
    if p.is_complex() or p.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer or real floating tensor, got dtype {p.dtype}")
    return p


def rope_inv_freq(dim: int, base: float = 10000.0) -> torch.Tensor:
    """θ_m = base^(−2m/dim) for m = 0 … dim/2 − 1, in float64, shape (dim/2,)."""
    _check_dim(dim, 2)
    base = _check_base(base)
    m = torch.arange(dim // 2, dtype=torch.float64)
    return base ** (-2.0 * m / dim)


def rope_angles(
    positions: torch.Tensor | int,
    dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the 1-D RoPE angles p·θ_m, one per rotation pair.

    Args:
        positions: (...) integer or float positions (fractional positions are allowed), or an int
            T meaning ``arange(T)``.
        dim: D, the rotated head dimension (even).
        base: the RoPE base (``rope_theta``). Default 10000.
        dtype: of the returned cos/sin. Default float32.

    Returns:
        ``(cos, sin)``, each (..., D/2) on ``positions``' device; pair m is column m in either
        layout (:func:`apply_rope` places it).

    Examples:
        >>> cos, sin = rope_angles(4, dim=8)
        >>> cos.shape
        torch.Size([4, 4])
        >>> float(cos[0, 0]), float(sin[1, 0])  # angle 0 at p=0, angle 1·θ_0 = 1 rad at p=1
        (1.0, 0.8414709568023682)
    """
    _check_dim(dim, 2)
    base = _check_base(base)
    pos = _as_positions(positions, "positions", None)
    inv = rope_inv_freq(dim, base).to(pos.device)  # (D/2,)
    ang = pos.to(torch.float64)[..., None] * inv  # (..., D/2)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope_2d_angles(
    rows: torch.Tensor | int,
    cols: torch.Tensor | int,
    dim: int,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of Pixtral's 2-D RoPE angles, one per rotation pair, ordered [height | width].

    Pair b < D/4 gets angle i·θ_{2b} (row i), pair b ≥ D/4 gets j·θ_{2(b−D/4)+1} (column j), with
    θ_m = base^(−2m/D). This is the order of the mistral/HF code (not the paper's alternation).

    Args:
        rows: either an int H (with ``cols`` an int W: the H×W grid in row-major order, N = H·W
            patches), or a (...) tensor of row indices i per patch.
        cols: an int W, or a (...) tensor of column indices j with the same shape as ``rows``.
        dim: D, the rotated head dimension (divisible by 4).
        base: the RoPE base. Default 10000.
        dtype: of the returned cos/sin. Default float32.

    Returns:
        ``(cos, sin)``, each (N, D/2) for an int grid, or (..., D/2) for index tensors.

    Examples:
        >>> cos, sin = rope_2d_angles(2, 3, dim=8)  # a 2×3 patch grid
        >>> cos.shape
        torch.Size([6, 4])
    """
    _check_dim(dim, 4)
    base = _check_base(base)
    if isinstance(rows, torch.Tensor) != isinstance(cols, torch.Tensor):
        raise TypeError(
            f"rows, cols: expected two ints (grid size) or two index tensors, got "
            f"{type(rows).__name__} and {type(cols).__name__}"
        )
    if isinstance(rows, torch.Tensor):
        i = _as_positions(rows, "rows", None)
        j = _as_positions(cols, "cols", None)
        if i.shape != j.shape:
            raise ValueError(
                f"rows, cols: expected equal shapes, got {tuple(i.shape)} and {tuple(j.shape)}"
            )
    else:
        ri = _as_positions(rows, "rows", None)
        cj = _as_positions(cols, "cols", None)
        i, j = torch.meshgrid(ri, cj, indexing="ij")  # (H, W) each
        i, j = i.reshape(-1), j.reshape(-1)  # (N,)
    inv = rope_inv_freq(dim, base).to(i.device)  # (D/2,)
    ang_h = i.to(torch.float64)[..., None] * inv[0::2]  # (..., D/4): i·θ_{2b}
    ang_w = j.to(torch.float64)[..., None] * inv[1::2]  # (..., D/4): j·θ_{2b+1}
    ang = torch.cat([ang_h, ang_w], dim=-1)  # (..., D/2), [height | width]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope_reference(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: str = "half",
) -> torch.Tensor:
    """Rotate the pairs of ``x`` (..., D) by the angles whose cos/sin are (..., D/2) (broadcast).

    Computed in float32 (float64 for float64 inputs) and returned in ``x.dtype``.
    """
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    half = x.shape[-1] // 2
    xf = x.to(cdt)
    c = cos.to(cdt)
    s = sin.to(cdt)
    if layout == "half":
        x1, x2 = xf[..., :half], xf[..., half:]  # (..., D/2) each
        out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    else:
        xp = xf.unflatten(-1, (half, 2))  # (..., D/2, 2)
        x1, x2 = xp[..., 0], xp[..., 1]
        out = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)
    return out.to(x.dtype)


def permute_rope_rows(
    W: torch.Tensor,
    n_heads: int,
    head_dim: int,
    to: str = "half",
) -> torch.Tensor:
    """Permute the output rows of Wq/Wk (or a bias) between the interleaved and half layouts.

    Inside each head, interleaved row 2m ↔ half row m and interleaved row 2m+1 ↔ half row m + D/2.
    A model whose projections use ``permute_rope_rows(W, ..., to="half")`` with half-layout RoPE
    computes exactly the same attention scores as the original W with interleaved RoPE (and vice
    versa with ``to="interleaved"``). The two directions are inverses.

    Args:
        W: (n_heads·head_dim, ...) weight (rows = output features) or (n_heads·head_dim,) bias.
        n_heads: number of heads stacked in W's rows (Hkv for Wk under GQA).
        head_dim: D, even.
        to: ``"half"`` (from interleaved) or ``"interleaved"`` (from half). Default ``"half"``.

    Returns:
        A new tensor with W's shape and dtype.

    Examples:
        >>> import torch
        >>> permute_rope_rows(torch.arange(4), n_heads=1, head_dim=4, to="half").tolist()
        [0, 2, 1, 3]
    """
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W: expected a torch.Tensor, got {type(W).__name__}")
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads: expected an int >= 1, got {n_heads!r}")
    _check_dim(head_dim, 2, "head_dim")
    if to not in _LAYOUTS:
        raise ValueError(f"to: expected one of {_LAYOUTS}, got {to!r}")
    if W.dim() < 1 or W.shape[0] != n_heads * head_dim:
        raise ValueError(
            f"W: expected n_heads·head_dim = {n_heads * head_dim} rows, got shape {tuple(W.shape)}"
        )
    half = head_dim // 2
    w = W.reshape(n_heads, head_dim, *W.shape[1:])  # (H, D, ...)
    if to == "half":
        w = w.unflatten(1, (half, 2)).transpose(1, 2)  # (H, 2, D/2, ...): evens then odds
    else:
        w = w.unflatten(1, (2, half)).transpose(1, 2)  # (H, D/2, 2, ...): re-interleave
    return w.reshape(W.shape).clone()


def kv_head_index(h: torch.Tensor | int, n_rep: int) -> torch.Tensor | int:
    """The KV head that query head ``h`` reads under GQA: ``h // n_rep`` (HF ``repeat_kv`` order).

    Args:
        h: query head index (int or integer tensor, >= 0).
        n_rep: query heads per KV head, H / Hkv (>= 1).

    Examples:
        >>> kv_head_index(5, n_rep=2)
        2
    """
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep: expected an int >= 1, got {n_rep!r}")
    if isinstance(h, torch.Tensor):
        if h.is_floating_point() or h.is_complex() or h.dtype == torch.bool:
            raise TypeError(f"h: expected an integer tensor, got dtype {h.dtype}")
        if h.numel() and int(h.min()) < 0:
            raise ValueError(f"h: expected head indices >= 0, got min {int(h.min())}")
        return torch.div(h, n_rep, rounding_mode="floor")
    if isinstance(h, bool) or not isinstance(h, int) or h < 0:
        raise ValueError(f"h: expected an int >= 0 or an integer tensor, got {h!r}")
    return h // n_rep


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat KV heads for GQA: (B, Hkv, S, D) -> (B, Hkv·n_rep, S, D), head h reading h // n_rep.

    Same semantics as HF transformers' ``repeat_kv`` (``repeat_interleave`` over dim 1); returns
    ``x`` itself when ``n_rep == 1``.

    Args:
        x: (B, Hkv, S, D) keys or values.
        n_rep: query heads per KV head (>= 1).

    Examples:
        >>> import torch
        >>> repeat_kv(torch.zeros(2, 3, 5, 8), 4).shape
        torch.Size([2, 12, 5, 8])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected shape (B, Hkv, S, D), got {tuple(x.shape)}")
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep: expected an int >= 1, got {n_rep!r}")
    if n_rep == 1:
        return x
    b, hkv, s, d = x.shape
    return x[:, :, None].expand(b, hkv, n_rep, s, d).reshape(b, hkv * n_rep, s, d)

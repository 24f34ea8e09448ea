"""KAN basis functions: RSWAF (FasterKAN), Gaussian RBF (FastKAN) and B-splines (Cox–de Boor).

MLP-KAN (arXiv 2410.03027) uses FasterKAN experts whose edge functions are the reflectional switch
activation (RSWAF) ``b_g(u) = 1 − tanh²((u − c_g)/h)`` with 8 centres ``c_g = linspace(−2, 2, 8)``
and ``h = 0.33`` (spec §2). We also provide the Gaussian RBF of FastKAN, ``b_g(u) = exp(−((u −
c_g)/h)²)``, and the B-splines of the original KAN / efficient-kan (Cox–de Boor recursion on a
uniform grid extended by ``order`` knots on each side), so that the three KAN flavours share one
layer (:class:`paperbricks.mlpkan.kan.KANLayer`).

Every basis maps ``u`` of shape ``(..., in)`` to ``(..., in, G)``; :func:`kan_basis` flattens the
last two axes with the feature-major index ``j·G + g`` (spec §2 step 3), which is the order the
official ``view(x.shape[0], -1)`` produces and the order of the columns of a KAN weight
``W ∈ R^{out × in·G}``.

Differences from the official code: the B-spline grid is shared by all input features (efficient-kan
keeps one per feature, identical at initialisation); the B-spline has no SiLU base branch; RSWAF
uses the correct ``tanh((u − c)·(1/h))`` (faster-kan's upstream custom autograd drops ``1/h``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = [
    "BASES",
    "BSplineBasis",
    "BasisName",
    "GaussianRBFBasis",
    "RSWAFBasis",
    "bspline",
    "gaussian_rbf",
    "gaussian_rbf_derivative",
    "kan_basis",
    "make_basis",
    "num_bases",
    "rswaf",
    "rswaf_derivative",
    "uniform_grid",
]

BasisName = Literal["rswaf", "rbf", "bspline"]
BASES: tuple[str, ...] = ("rswaf", "rbf", "bspline")

# FasterKAN's denominator in the official MLP-KAN code (spec §2: h = 0.33, 1/h ≈ 3.0303).
RSWAF_DENOMINATOR = 0.33


def _check_basis_name(basis: str) -> None:
    if basis not in BASES:
        raise ValueError(f"basis: expected one of {BASES}, got {basis!r}")


def _check_grid(grid: torch.Tensor, name: str = "grid", min_len: int = 1) -> None:
    if not isinstance(grid, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(grid).__name__}")
    if grid.dim() != 1 or grid.numel() < min_len:
        raise ValueError(
            f"{name}: expected a 1-D tensor of at least {min_len} values, got shape "
            f"{tuple(grid.shape)}"
        )
    if not grid.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {grid.dtype}")
    # Checking the order of a CUDA grid would synchronise with the host on every call; module
    # constructors check their grids once instead.
    if grid.device.type == "cpu" and grid.numel() > 1 and not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError(f"{name}: expected strictly increasing values, got {grid.tolist()}")


def _check_denominator(inv_denominator: float) -> None:
    if not (inv_denominator > 0 and inv_denominator < float("inf")):
        raise ValueError(f"inv_denominator: expected a finite value > 0, got {inv_denominator!r}")


def rswaf(u: torch.Tensor, grid: torch.Tensor, inv_denominator: float) -> torch.Tensor:
    """Reflectional switch activation ``b_g(u) = 1 − tanh²((u − c_g)/h)`` (FasterKAN).

    Args:
        u: (..., in) inputs (after the layer's LayerNorm), any float dtype.
        grid: (G,) centres ``c_g``, strictly increasing.
        inv_denominator: ``1/h`` (> 0); FasterKAN in MLP-KAN uses ``1/0.33``.

    Returns:
        (..., in, G) basis values in ``[0, 1]``, equal to 1 exactly at ``u = c_g``.

    Examples:
        >>> import torch
        >>> rswaf(torch.zeros(1), torch.tensor([-1.0, 0.0, 1.0]), 3.0)[0, 1].item()
        1.0
    """
    _check_grid(grid)
    _check_denominator(inv_denominator)
    t = torch.tanh((u.unsqueeze(-1) - grid.to(u.dtype)) * inv_denominator)  # (..., in, G)
    return 1.0 - t * t


def rswaf_derivative(u: torch.Tensor, grid: torch.Tensor, inv_denominator: float) -> torch.Tensor:
    """``d b_g / du = −2·tanh(z)·(1 − tanh²(z))/h`` with ``z = (u − c_g)/h``; shape (..., in, G)."""
    _check_grid(grid)
    _check_denominator(inv_denominator)
    t = torch.tanh((u.unsqueeze(-1) - grid.to(u.dtype)) * inv_denominator)
    return -2.0 * inv_denominator * t * (1.0 - t * t)


def gaussian_rbf(u: torch.Tensor, grid: torch.Tensor, inv_denominator: float) -> torch.Tensor:
    """Gaussian radial basis ``b_g(u) = exp(−((u − c_g)/h)²)`` (FastKAN).

    Args:
        u: (..., in) inputs, any float dtype.
        grid: (G,) centres, strictly increasing.
        inv_denominator: ``1/h`` (> 0); FastKAN uses ``h`` = the grid spacing.

    Returns:
        (..., in, G) basis values in ``(0, 1]``.

    Examples:
        >>> import torch
        >>> gaussian_rbf(torch.ones(2), torch.linspace(-2, 2, 5), 1.0).shape
        torch.Size([2, 5])
    """
    _check_grid(grid)
    _check_denominator(inv_denominator)
    z = (u.unsqueeze(-1) - grid.to(u.dtype)) * inv_denominator  # (..., in, G)
    return torch.exp(-z * z)


def gaussian_rbf_derivative(
    u: torch.Tensor, grid: torch.Tensor, inv_denominator: float
) -> torch.Tensor:
    """``d b_g / du = −2·z·exp(−z²)/h`` with ``z = (u − c_g)/h``; shape (..., in, G)."""
    _check_grid(grid)
    _check_denominator(inv_denominator)
    z = (u.unsqueeze(-1) - grid.to(u.dtype)) * inv_denominator
    return -2.0 * inv_denominator * z * torch.exp(-z * z)


def bspline(u: torch.Tensor, grid: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline bases of degree ``order`` on the knot vector ``grid`` (Cox–de Boor recursion).

    ``B_{i,0}(u) = [t_i ≤ u < t_{i+1}]`` and
    ``B_{i,k}(u) = (u − t_i)/(t_{i+k} − t_i)·B_{i,k−1}(u) + (t_{i+k+1} − u)/(t_{i+k+1} − t_{i+1})·
    B_{i+1,k−1}(u)``, as in efficient-kan. With a grid from :func:`uniform_grid` the bases sum to 1
    everywhere in ``[lo, hi)`` and vanish outside the extended knot range.

    Args:
        u: (..., in) inputs, any float dtype.
        grid: (K,) knots, strictly increasing, ``K ≥ order + 2``.
        order: spline degree ``k ≥ 0`` (3 = cubic).

    Returns:
        (..., in, K − order − 1) basis values.

    Examples:
        >>> import torch
        >>> g = uniform_grid("bspline", 5, (-1.0, 1.0), order=3)
        >>> round(bspline(torch.tensor([0.3]), g, 3).sum().item(), 5)  # partition of unity
        1.0
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order: expected an int >= 0, got {order!r}")
    _check_grid(grid, min_len=order + 2)
    t = grid.to(u.dtype)  # (K,)
    x = u.unsqueeze(-1)  # (..., in, 1)
    b = ((x >= t[:-1]) & (x < t[1:])).to(u.dtype)  # (..., in, K-1)
    for k in range(1, order + 1):
        left = (x - t[: -(k + 1)]) / (t[k:-1] - t[: -(k + 1)]) * b[..., :-1]
        right = (t[k + 1 :] - x) / (t[k + 1 :] - t[1:-k]) * b[..., 1:]
        b = left + right  # (..., in, K-1-k)
    return b


def num_bases(basis: str, num_grids: int, order: int = 3) -> int:
    """Number of basis functions G per input feature: ``num_grids`` (RSWAF, RBF: centres) or
    ``num_grids + order`` (B-spline: ``num_grids`` intervals)."""
    _check_basis_name(basis)
    return num_grids + order if basis == "bspline" else num_grids


def uniform_grid(
    basis: str,
    num_grids: int,
    grid_range: tuple[float, float] = (-2.0, 2.0),
    *,
    order: int = 3,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The default grid of each basis.

    RSWAF and RBF: ``num_grids`` centres ``linspace(lo, hi, num_grids)``. B-spline: ``num_grids``
    equal intervals on ``[lo, hi]`` extended by ``order`` knots on each side (``num_grids + 2·order
    + 1`` knots, efficient-kan's layout).
    """
    _check_basis_name(basis)
    if isinstance(num_grids, bool) or not isinstance(num_grids, int) or num_grids < 1:
        raise ValueError(f"num_grids: expected an int >= 1, got {num_grids!r}")
    if len(grid_range) != 2 or not float(grid_range[0]) < float(grid_range[1]):
        raise ValueError(f"grid_range: expected (lo, hi) with lo < hi, got {grid_range!r}")
    lo, hi = float(grid_range[0]), float(grid_range[1])
    if basis == "bspline":
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order: expected an int >= 0, got {order!r}")
        step = (hi - lo) / num_grids
        idx = torch.arange(-order, num_grids + order + 1, dtype=torch.float64)
        return (lo + step * idx).to(dtype)
    if num_grids < 2 and basis == "rbf":
        raise ValueError(f"num_grids: the rbf basis needs >= 2 centres, got {num_grids}")
    # Built in the target dtype, as the official ``torch.linspace`` (bit-identical grid).
    return torch.linspace(lo, hi, num_grids, dtype=dtype)


def kan_basis(
    x: torch.Tensor,
    basis: str,
    grid: torch.Tensor,
    *,
    inv_denominator: float | None = None,
    order: int | None = None,
) -> torch.Tensor:
    """The materialised KAN basis matrix ``Φ`` of shape (N, in·G), column index ``j·G + g``.

    This is the eager reference the fused kernel avoids building. Leading dimensions of ``x`` are
    flattened into N.

    Args:
        x: (..., in) inputs (already layer-normed where the layer uses LayerNorm).
        basis: ``"rswaf"``, ``"rbf"`` or ``"bspline"``.
        grid: (G,) centres (rswaf, rbf) or (G + order + 1,) knots (bspline).
        inv_denominator: ``1/h`` for rswaf and rbf (required there).
        order: spline degree for bspline (required there).

    Returns:
        (N, in·G) tensor in ``x.dtype``.

    Examples:
        >>> import torch
        >>> kan_basis(torch.zeros(4, 3), "rswaf", torch.linspace(-2, 2, 8), inv_denominator=3.0).shape
        torch.Size([4, 24])
    """
    _check_basis_name(basis)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 1:
        raise ValueError("x: expected shape (..., in), got a 0-d tensor")
    if basis == "bspline":
        if order is None:
            raise ValueError("order: required for basis='bspline', got None")
        phi = bspline(x, grid, order)
    else:
        if inv_denominator is None:
            raise ValueError(f"inv_denominator: required for basis={basis!r}, got None")
        fn = rswaf if basis == "rswaf" else gaussian_rbf
        phi = fn(x, grid, float(inv_denominator))
    return phi.reshape(-1, x.shape[-1] * phi.shape[-1])  # (N, in·G), index j·G + g


class _Basis(nn.Module):
    """Shared plumbing: a non-trainable ``grid`` parameter (kept in the state dict, as in the
    official FasterKAN) and ``forward(u) -> (..., in, G)``."""

    name: str = ""

    def __init__(self, grid: torch.Tensor) -> None:
        super().__init__()
        _check_grid(grid)
        self.grid = nn.Parameter(grid, requires_grad=False)

    @property
    def num_bases(self) -> int:
        return int(self.grid.numel())


class RSWAFBasis(_Basis):
    """RSWAF basis module (FasterKAN): ``1 − tanh²((u − c_g)·inv_denominator)``.

    Args:
        num_grids: number of centres G (default 8).
        grid_range: (lo, hi) of the centres (default (−2, 2)).
        denominator: ``h`` (default 0.33, the official value).

    Examples:
        >>> import torch
        >>> RSWAFBasis()(torch.zeros(2, 3)).shape
        torch.Size([2, 3, 8])
    """

    name = "rswaf"

    def __init__(
        self,
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
        denominator: float = RSWAF_DENOMINATOR,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(uniform_grid("rswaf", num_grids, grid_range, dtype=dtype or torch.float32))
        if not denominator > 0:
            raise ValueError(f"denominator: expected > 0, got {denominator!r}")
        self.inv_denominator = 1.0 / float(denominator)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return rswaf(u, self.grid, self.inv_denominator)

    def extra_repr(self) -> str:
        return f"num_grids={self.num_bases}, inv_denominator={self.inv_denominator:.4f}"


class GaussianRBFBasis(_Basis):
    """Gaussian RBF basis module (FastKAN): ``exp(−((u − c_g)·inv_denominator)²)``.

    Args:
        num_grids: number of centres G (default 8, ≥ 2).
        grid_range: (lo, hi) of the centres (default (−2, 2)).
        denominator: ``h``; default None = the grid spacing ``(hi − lo)/(G − 1)`` (FastKAN).

    Examples:
        >>> import torch
        >>> GaussianRBFBasis(num_grids=4)(torch.zeros(5)).shape
        torch.Size([5, 4])
    """

    name = "rbf"

    def __init__(
        self,
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
        denominator: float | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(uniform_grid("rbf", num_grids, grid_range, dtype=dtype or torch.float32))
        if denominator is None:
            denominator = (float(grid_range[1]) - float(grid_range[0])) / (num_grids - 1)
        if not denominator > 0:
            raise ValueError(f"denominator: expected > 0, got {denominator!r}")
        self.inv_denominator = 1.0 / float(denominator)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return gaussian_rbf(u, self.grid, self.inv_denominator)

    def extra_repr(self) -> str:
        return f"num_grids={self.num_bases}, inv_denominator={self.inv_denominator:.4f}"


class BSplineBasis(_Basis):
    """B-spline basis module (KAN / efficient-kan), Cox–de Boor on an extended uniform grid.

    Args:
        num_grids: number of grid intervals on ``grid_range`` (default 8); G = num_grids + order.
        grid_range: (lo, hi) (default (−2, 2)); the bases sum to 1 on ``[lo, hi)``.
        order: spline degree (default 3).

    Examples:
        >>> import torch
        >>> BSplineBasis(num_grids=5, order=3)(torch.zeros(2, 3)).shape
        torch.Size([2, 3, 8])
    """

    name = "bspline"

    def __init__(
        self,
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
        order: int = 3,
        dtype: torch.dtype | None = None,
    ) -> None:
        grid = uniform_grid(
            "bspline", num_grids, grid_range, order=order, dtype=dtype or torch.float32
        )
        super().__init__(grid)
        self.order = order

    @property
    def num_bases(self) -> int:
        return int(self.grid.numel()) - self.order - 1

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return bspline(u, self.grid, self.order)

    def extra_repr(self) -> str:
        return f"num_bases={self.num_bases}, order={self.order}"


def make_basis(
    basis: str,
    num_grids: int = 8,
    grid_range: tuple[float, float] = (-2.0, 2.0),
    *,
    denominator: float | None = None,
    order: int = 3,
    dtype: torch.dtype | None = None,
) -> RSWAFBasis | GaussianRBFBasis | BSplineBasis:
    """Build the basis module named ``basis`` (``"rswaf"``, ``"rbf"`` or ``"bspline"``).

    ``denominator`` defaults to 0.33 for rswaf and to the grid spacing for rbf; ``order`` is used
    by bspline only; ``dtype`` is the grid's dtype (default float32).
    """
    _check_basis_name(basis)
    if basis == "rswaf":
        return RSWAFBasis(
            num_grids,
            grid_range,
            RSWAF_DENOMINATOR if denominator is None else denominator,
            dtype=dtype,
        )
    if basis == "rbf":
        return GaussianRBFBasis(num_grids, grid_range, denominator, dtype=dtype)
    return BSplineBasis(num_grids, grid_range, order, dtype=dtype)

"""KAN layers: ``KANLayer`` (FasterKAN with RSWAF, FastKAN-style RBF, or B-spline) and ``FasterKAN``.

A FasterKAN layer (spec §2, the KAN expert of MLP-KAN, arXiv 2410.03027) computes

    u = LayerNorm(x);   Φ[n, j·G + g] = b_g(u[n, j]);   y = Φ Wᵀ,   W ∈ R^{out × in·G}

i.e. ``y_o = Σ_j Σ_g W[o, j·G + g]·b_g(u_j)``: one learnable univariate function per edge
(j → o), expanded on G basis functions. No bias and no SiLU base branch, Xavier-uniform W, and
the grid is a non-trainable parameter, as in the official code.

Differences from the official ``FasterKANLayer``: leading dimensions are flattened (the official
``view(x.shape[0], -1)`` only handles 2-D inputs); ``impl="triton"`` runs the fused basis-GEMM
kernel (:mod:`paperbricks.mlpkan.kernels`) that never materialises the N × (in·G) basis Φ, while
``impl="reference"`` is the eager FasterKAN (materialised Φ, then a GEMM). The B-spline basis is
reference-only.

Submodule names follow the official state dict: ``layernorm``, ``rbf`` (the basis, whatever its
kind, holding ``rbf.grid``) and ``spline_linear`` (holding ``spline_linear.weight``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from paperbricks.core_kernels.devices import select_impl
from paperbricks.core_kernels.moe import grouped_mm

from .bases import BASES, _check_basis_name, _check_grid, kan_basis, make_basis

__all__ = ["FasterKAN", "KANLayer", "grouped_kan_linear", "kan_linear"]


def _num_bases(basis: str, grid: torch.Tensor, order: int | None) -> int:
    if basis == "bspline":
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order: expected an int >= 0 for basis='bspline', got {order!r}")
        return grid.numel() - order - 1
    return grid.numel()


def _validate(
    x: torch.Tensor,
    weight: torch.Tensor,
    basis: str,
    grid: torch.Tensor,
    inv_denominator: float | None,
    order: int | None,
    weight_dims: int,
) -> int:
    """Check the common arguments and return G."""
    _check_basis_name(basis)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if not isinstance(weight, torch.Tensor) or weight.dtype != x.dtype:
        raise TypeError(
            f"weight: expected a tensor of x's dtype {x.dtype}, got {getattr(weight, 'dtype', type(weight))}"
        )
    _check_grid(grid)
    if basis != "bspline" and (inv_denominator is None or not float(inv_denominator) > 0):
        raise ValueError(
            f"inv_denominator: expected a value > 0 for basis={basis!r}, got {inv_denominator!r}"
        )
    g = _num_bases(basis, grid, order)
    if g < 1:
        raise ValueError(f"grid: {grid.numel()} knots give no bases of order {order}")
    if x.dim() < 1:
        raise ValueError("x: expected shape (..., in), got a 0-d tensor")
    n_in = x.shape[-1]
    if weight.dim() != weight_dims or weight.shape[-1] != n_in * g:
        lead = "(E, out, in·G)" if weight_dims == 3 else "(out, in·G)"
        raise ValueError(
            f"weight: expected shape {lead} with in·G = {n_in}·{g} = {n_in * g}, got "
            f"{tuple(weight.shape)}"
        )
    return g


def _triton_support(basis: str, grid: torch.Tensor) -> tuple[bool, str]:
    from .kernels import TRITON_BASES

    if basis not in TRITON_BASES:
        return False, f"basis={basis!r} has no fused kernel (only {TRITON_BASES}); use 'reference'"
    if grid.requires_grad:
        return False, "the fused kernel does not differentiate the grid (grid.requires_grad=True)"
    return True, ""


def kan_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    basis: str = "rswaf",
    grid: torch.Tensor,
    inv_denominator: float | None = None,
    order: int | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """KAN linear map ``y = Φ(x) Wᵀ`` with ``Φ[n, j·G + g] = b_g(x[n, j])`` (no LayerNorm here).

    Args:
        x: (..., in) inputs (the layer-normed ``u``), float32/float64/float16/bfloat16.
        weight: (out, in·G) in ``x.dtype``; column ``j·G + g`` weighs basis g of feature j.
        basis: ``"rswaf"`` (default), ``"rbf"`` or ``"bspline"``.
        grid: (G,) centres, or (G + order + 1,) knots for bspline; strictly increasing.
        inv_denominator: ``1/h`` for rswaf/rbf.
        order: spline degree for bspline.
        impl: ``"auto"`` (Triton on CUDA for rswaf/rbf, else the reference), ``"reference"``
            (materialised basis + matmul) or ``"triton"`` (fused kernel; on the CPU only under
            ``TRITON_INTERPRET=1``).

    Returns:
        (..., out) in ``x.dtype``.

    Examples:
        >>> import torch
        >>> grid = torch.linspace(-2, 2, 8)
        >>> y = kan_linear(torch.randn(2, 5, 3), torch.randn(4, 24), grid=grid, inv_denominator=3.0)
        >>> y.shape
        torch.Size([2, 5, 4])
    """
    _validate(x, weight, basis, grid, inv_denominator, order, 2)
    n_in = x.shape[-1]
    x2 = x.reshape(-1, n_in)  # (N, in)
    ok, why = _triton_support(basis, grid)
    backend = select_impl(
        impl, [x2, weight, grid], op="kan_linear", supported=ok, why_unsupported=why
    )
    if backend == "triton":
        from .kernels import kan_gemm_triton

        offsets = torch.full((1,), x2.shape[0], dtype=torch.int32, device=x2.device)
        y = kan_gemm_triton(x2, weight.unsqueeze(0), grid, inv_denominator, offsets, basis)
    else:
        phi = kan_basis(x2, basis, grid, inv_denominator=inv_denominator, order=order)  # (N, in·G)
        y = phi @ weight.transpose(0, 1)  # (N, out)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def grouped_kan_linear(
    x_sorted: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor,
    *,
    basis: str = "rswaf",
    grid: torch.Tensor,
    inv_denominator: float | None = None,
    order: int | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Several KAN layers on expert-sorted tokens: ``y[rows of e] = Φ(x[rows of e]) W[e]ᵀ``.

    The layout is core-kernels' ``moe.permute``: tokens sorted by expert, ``offsets`` the int32
    cumulative end row of each expert (empty experts allowed). All experts share ``basis`` and
    ``grid`` (as in MLP-KAN, where every KAN expert has the same grid).

    Args:
        x_sorted: (M, in) inputs sorted by expert.
        weight: (E, out, in·G) stacked KAN weights in ``x_sorted.dtype``.
        offsets: (E,) int32 cumulative block ends, ``offsets[-1] == M`` (checked for CPU tensors).
        basis, grid, inv_denominator, order, impl: as in :func:`kan_linear`. The reference path
            materialises Φ and calls core-kernels ``grouped_mm``.

    Returns:
        (M, out) in ``x_sorted.dtype``.

    Examples:
        >>> import torch
        >>> grid = torch.linspace(-2, 2, 8)
        >>> offsets = torch.tensor([2, 2, 5], dtype=torch.int32)  # expert 1 is empty
        >>> grouped_kan_linear(torch.randn(5, 3), torch.randn(3, 4, 24), offsets,
        ...                    grid=grid, inv_denominator=3.0).shape
        torch.Size([5, 4])
    """
    _validate(x_sorted, weight, basis, grid, inv_denominator, order, 3)
    if x_sorted.dim() != 2:
        raise ValueError(f"x_sorted: expected shape (M, in), got {tuple(x_sorted.shape)}")
    e = weight.shape[0]
    if (
        not isinstance(offsets, torch.Tensor)
        or offsets.dtype != torch.int32
        or offsets.shape != (e,)
    ):
        raise ValueError(
            f"offsets: expected an int32 tensor of shape ({e},), got "
            f"{getattr(offsets, 'dtype', type(offsets))} {tuple(getattr(offsets, 'shape', ()))}"
        )
    if (
        offsets.device.type == "cpu"
        and e > 0
        and (int(offsets[-1]) != x_sorted.shape[0] or bool((offsets[1:] < offsets[:-1]).any()))
    ):
        raise ValueError(
            f"offsets: expected non-decreasing ends with offsets[-1] == M = "
            f"{x_sorted.shape[0]}, got {offsets.tolist()}"
        )
    ok, why = _triton_support(basis, grid)
    backend = select_impl(
        impl, [x_sorted, weight, grid], op="grouped_kan_linear", supported=ok, why_unsupported=why
    )
    if backend == "triton":
        from .kernels import kan_gemm_triton

        return kan_gemm_triton(x_sorted, weight, grid, inv_denominator, offsets, basis)
    phi = kan_basis(x_sorted, basis, grid, inv_denominator=inv_denominator, order=order)
    return grouped_mm(phi, weight.transpose(-2, -1), offsets)  # (M, out)


class KANLayer(nn.Module):
    """One KAN layer ``y = W·Φ(LayerNorm(x))`` (FasterKAN when ``basis="rswaf"``).

    Args:
        in_features: input width ``in``.
        out_features: output width ``out``.
        basis: ``"rswaf"`` (default, FasterKAN), ``"rbf"`` (Gaussian, FastKAN) or ``"bspline"``.
        num_grids: centres (rswaf, rbf) or grid intervals (bspline); default 8.
        grid_range: (lo, hi) of the grid; default (−2, 2).
        denominator: ``h``; default 0.33 for rswaf (official), the grid spacing for rbf.
        order: B-spline degree (default 3); ignored by the other bases.
        layernorm: apply the affine LayerNorm (eps 1e-5) first; default True. It is part of the
            method for rswaf/rbf: without it the inputs leave the grid range and the basis
            collapses (spec §3).
        impl: ``"auto"``, ``"reference"`` or ``"triton"`` (see :func:`kan_linear`).

    Shapes: ``forward(x)`` takes (..., in_features) and returns (..., out_features).

    Examples:
        >>> import torch
        >>> layer = KANLayer(6, 4)
        >>> layer(torch.randn(2, 3, 6)).shape
        torch.Size([2, 3, 4])
        >>> layer.spline_linear.weight.shape  # (out, in·G), column j·G + g
        torch.Size([4, 48])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        basis: str = "rswaf",
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
        *,
        denominator: float | None = None,
        order: int = 3,
        layernorm: bool = True,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if basis not in BASES:
            raise ValueError(f"basis: expected one of {BASES}, got {basis!r}")
        if impl not in ("auto", "reference", "triton"):
            raise ValueError(f"impl: expected 'auto', 'reference' or 'triton', got {impl!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.basis = basis
        self.impl = impl
        self.layernorm = (
            nn.LayerNorm(in_features, eps=1e-5, device=device, dtype=dtype) if layernorm else None
        )
        self.rbf = make_basis(
            basis, num_grids, grid_range, denominator=denominator, order=order, dtype=dtype
        )
        self.rbf.to(device=device)
        self.num_bases = self.rbf.num_bases
        self.spline_linear = nn.Linear(
            in_features * self.num_bases, out_features, bias=False, device=device, dtype=dtype
        )
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier-uniform weight (official init), LayerNorm to identity."""
        nn.init.xavier_uniform_(self.spline_linear.weight, generator=generator)
        if self.layernorm is not None:
            self.layernorm.reset_parameters()

    @property
    def weight(self) -> torch.Tensor:
        """(out, in·G) KAN weight, column ``j·G + g``."""
        return self.spline_linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        u = x.reshape(-1, self.in_features)  # (N, in)
        if self.layernorm is not None:
            u = self.layernorm(u)
        y = kan_linear(
            u,
            self.spline_linear.weight,
            basis=self.basis,
            grid=self.rbf.grid,
            inv_denominator=getattr(self.rbf, "inv_denominator", None),
            order=getattr(self.rbf, "order", None),
            impl=self.impl,
        )  # (N, out)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"basis={self.basis!r}, num_bases={self.num_bases}, impl={self.impl!r}"
        )


class FasterKAN(nn.Module):
    """A stack of :class:`KANLayer` with widths ``[d0, d1, ..., dL]`` (no activation in between;
    the bases are the nonlinearity), as the official ``FasterKAN``. MLP-KAN's KAN expert is
    ``FasterKAN([d, h/2, d])``.

    Args:
        widths: layer widths, at least two.
        basis, num_grids, grid_range, denominator, order, layernorm, impl, device, dtype: passed
            to every :class:`KANLayer`.

    Examples:
        >>> import torch
        >>> net = FasterKAN([8, 4, 8])
        >>> net(torch.randn(5, 8)).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        widths: Sequence[int],
        basis: str = "rswaf",
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
        *,
        denominator: float | None = None,
        order: int = 3,
        layernorm: bool = True,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(f"widths: expected at least two widths [in, ..., out], got {widths}")
        self.widths = widths
        self.layers = nn.ModuleList(
            KANLayer(
                a,
                b,
                basis,
                num_grids,
                grid_range,
                denominator=denominator,
                order=order,
                layernorm=layernorm,
                impl=impl,
                device=device,
                dtype=dtype,
            )
            for a, b in itertools.pairwise(widths)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

"""KAN bases against known values, invariants, SciPy's B-splines and autograd."""

import pytest
import torch

from paperbricks.core_kernels.testing import assert_close, gradcheck_f64
from paperbricks.mlpkan.bases import (
    BSplineBasis,
    GaussianRBFBasis,
    RSWAFBasis,
    bspline,
    gaussian_rbf,
    gaussian_rbf_derivative,
    kan_basis,
    make_basis,
    num_bases,
    rswaf,
    rswaf_derivative,
    uniform_grid,
)

F64 = torch.float64


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("num_grids", [1, 5, 8])
def test_bspline_partition_of_unity_inside_range(order, num_grids):
    grid = uniform_grid("bspline", num_grids, (-2.0, 2.0), order=order, dtype=F64)
    u = torch.linspace(-2.0, 2.0, 401, dtype=F64)[:-1]  # [lo, hi)
    b = bspline(u, grid, order)  # (401-1, G)
    assert b.shape == (400, num_grids + order)
    assert (b >= 0).all()
    assert_close("partition of unity", torch.ones(400, dtype=F64), b.sum(-1), ratio=1e-12)


def test_bspline_vanishes_outside_extended_knots():
    grid = uniform_grid("bspline", 4, (-1.0, 1.0), order=3, dtype=F64)
    u = torch.tensor([grid[0].item() - 0.1, grid[-1].item() + 0.1], dtype=F64)
    assert bspline(u, grid, 3).abs().max().item() == 0.0


def test_bspline_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    import numpy as np

    order, num_grids = 3, 5
    grid = uniform_grid("bspline", num_grids, (-2.0, 2.0), order=order, dtype=F64)
    u = torch.linspace(-1.99, 1.99, 57, dtype=F64)
    ours = bspline(u, grid, order)  # (57, 8)
    ref = interpolate.BSpline.design_matrix(u.numpy(), grid.numpy(), order).toarray()
    assert_close("bspline vs scipy", torch.from_numpy(np.asarray(ref)), ours, ratio=1e-12)


def test_rswaf_is_one_at_its_centre_and_symmetric():
    grid = torch.linspace(-2, 2, 8, dtype=F64)
    b = rswaf(grid, grid, 1 / 0.33)  # (8, 8): b[i, g] = b_g(c_i)
    assert torch.equal(torch.diagonal(b), torch.ones(8, dtype=F64))
    d = torch.linspace(0.01, 1.5, 23, dtype=F64)
    for g in range(8):
        up = rswaf(grid[g] + d, grid, 3.0)[:, g]
        down = rswaf(grid[g] - d, grid, 3.0)[:, g]
        assert_close("rswaf symmetry", up, down, ratio=1e-14)
        assert (up < 1).all()


def test_rswaf_known_value():
    # 1 - tanh²(z) = sech²(z); at z = (0.5 - 0)·2 = 1: sech²(1) = 0.41997434161402614
    out = rswaf(torch.tensor([0.5], dtype=F64), torch.tensor([0.0], dtype=F64), 2.0)
    assert abs(out.item() - 0.41997434161402614) < 1e-15


@pytest.mark.parametrize(
    ("fn", "dfn"), [(rswaf, rswaf_derivative), (gaussian_rbf, gaussian_rbf_derivative)]
)
def test_closed_form_derivative_matches_autograd(fn, dfn):
    grid = torch.linspace(-2, 2, 8, dtype=F64)
    u = torch.linspace(-3, 3, 31, dtype=F64, requires_grad=True)
    b = fn(u, grid, 3.0303)
    (auto,) = torch.autograd.grad(b.sum(), u)
    assert_close("derivative", auto, dfn(u.detach(), grid, 3.0303).sum(-1), ratio=1e-13)


def test_gaussian_rbf_known_values():
    grid = torch.tensor([-1.0, 0.0, 1.0], dtype=F64)
    out = gaussian_rbf(torch.tensor([0.0], dtype=F64), grid, 2.0)
    expected = torch.tensor([[torch.e**-4, 1.0, torch.e**-4]], dtype=F64)
    assert_close("rbf", expected, out, ratio=1e-14)


@pytest.mark.parametrize("basis", ["rswaf", "rbf", "bspline"])
def test_gradcheck_every_basis(basis):
    mod = make_basis(basis, num_grids=4, grid_range=(-1.0, 1.0)).double()
    u = torch.rand(3, 2, dtype=F64) * 1.8 - 0.9  # inside the range, away from knots a.s.
    assert gradcheck_f64(lambda t: mod(t), u)


@pytest.mark.parametrize("basis", ["rswaf", "rbf", "bspline"])
def test_kan_basis_flatten_order_is_feature_major(basis):
    mod = make_basis(basis, num_grids=5).double()
    x = torch.randn(4, 3, dtype=F64)
    per = mod(x)  # (4, 3, G)
    phi = kan_basis(
        x,
        basis,
        mod.grid,
        inv_denominator=getattr(mod, "inv_denominator", None),
        order=getattr(mod, "order", None),
    )
    g_count = mod.num_bases
    assert phi.shape == (4, 3 * g_count)
    for j in range(3):
        for g in range(g_count):
            assert torch.equal(phi[:, j * g_count + g], per[:, j, g])


def test_defaults_match_the_official_fasterkan():
    b = RSWAFBasis()
    assert torch.equal(b.grid, torch.linspace(-2, 2, 8))
    assert not b.grid.requires_grad
    assert abs(b.inv_denominator - 1 / 0.33) < 1e-12
    assert "grid" in dict(b.named_parameters())
    assert GaussianRBFBasis(num_grids=5, grid_range=(-2, 2)).inv_denominator == 1.0
    assert BSplineBasis(num_grids=5, order=3).num_bases == num_bases("bspline", 5, 3) == 8


def test_grid_out_of_order_raises():
    grid = torch.tensor([0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="grid: expected strictly increasing"):
        rswaf(torch.zeros(2), grid, 1.0)
    with pytest.raises(ValueError, match="grid: expected strictly increasing"):
        bspline(torch.zeros(2), torch.tensor([0.0, 1.0, 1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="grid_range"):
        RSWAFBasis(grid_range=(2.0, -2.0))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="basis: expected one of"):
        make_basis("chebyshev")
    with pytest.raises(ValueError, match="order"):
        bspline(torch.zeros(2), torch.linspace(0, 1, 6), -1)
    with pytest.raises(ValueError, match="inv_denominator"):
        rswaf(torch.zeros(2), torch.linspace(0, 1, 3), 0.0)
    with pytest.raises(ValueError, match="inv_denominator: required"):
        kan_basis(torch.zeros(2, 2), "rbf", torch.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="num_grids"):
        RSWAFBasis(num_grids=0)

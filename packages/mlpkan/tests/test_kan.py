"""KANLayer / FasterKAN: the explicit per-edge sum, shapes, parameters, errors, lean import."""

import pytest
import torch

from paperbricks.core_kernels.testing import (
    assert_close,
    assert_lean_import,
    gradcheck_f64,
    requires_cuda,
)
from paperbricks.mlpkan.kan import FasterKAN, KANLayer, grouped_kan_linear, kan_linear

F64 = torch.float64


def _per_edge_sum(layer: KANLayer, x: torch.Tensor) -> torch.Tensor:
    """y_o = Σ_j Σ_g W[o, j·G + g]·b_g(LN(x)_j), written as explicit loops (the spec's oracle)."""
    u = torch.nn.functional.layer_norm(
        x, (layer.in_features,), layer.layernorm.weight, layer.layernorm.bias, 1e-5
    )
    w = layer.spline_linear.weight
    g_count = layer.num_bases
    y = torch.zeros(x.shape[0], layer.out_features, dtype=x.dtype)
    for n in range(x.shape[0]):
        for j in range(layer.in_features):
            b = layer.rbf(u[n, j : j + 1])[0]  # (G,) values of every basis at u[n, j]
            for g in range(g_count):
                y[n] += w[:, j * g_count + g] * b[g]
    return y


@pytest.mark.parametrize("basis", ["rswaf", "rbf", "bspline"])
def test_kan_layer_equals_explicit_per_edge_sum(basis, seeded):
    layer = KANLayer(3, 4, basis=basis, num_grids=5, impl="reference").double()
    with torch.no_grad():  # non-trivial LayerNorm affine so its parameters matter
        layer.layernorm.weight.uniform_(0.5, 1.5)
        layer.layernorm.bias.uniform_(-0.3, 0.3)
    x = torch.randn(6, 3, dtype=F64)
    assert_close("per-edge sum", _per_edge_sum(layer, x), layer(x), ratio=1e-12)


def test_rswaf_layer_by_hand(seeded):
    # One edge, LayerNorm off: y = Σ_g W[0, g]·(1 − tanh²((x − c_g)/0.33)).
    layer = KANLayer(1, 1, layernorm=False, impl="reference", dtype=F64)
    x = torch.tensor([[0.7]], dtype=F64)
    c = torch.linspace(-2, 2, 8, dtype=F64)
    expected = (layer.weight[0] * (1 - torch.tanh((0.7 - c) / 0.33) ** 2)).sum()
    assert_close("by hand", expected.reshape(1, 1), layer(x), ratio=1e-14)


def test_leading_dims_are_flattened(seeded):
    layer = KANLayer(5, 3, impl="reference")
    x = torch.randn(2, 4, 5)
    y = layer(x)
    assert y.shape == (2, 4, 3)
    assert_close("3-D = 2-D", layer(x.reshape(8, 5)).reshape(2, 4, 3), y, ratio=0.0)


def test_official_state_dict_names_and_trainable_count():
    layer = KANLayer(192, 96)
    sd = layer.state_dict()
    assert set(sd) == {"layernorm.weight", "layernorm.bias", "rbf.grid", "spline_linear.weight"}
    assert sd["spline_linear.weight"].shape == (96, 192 * 8)
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert trainable == 2 * 192 + 96 * 192 * 8  # LayerNorm affine + W, no grid
    # MLP-KAN's KAN expert FasterKAN([192, 96, 192]): 295,488 trainable parameters (spec §2).
    net = FasterKAN([192, 96, 192])
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 295_488


def test_xavier_uniform_init_with_generator():
    a = KANLayer(4, 3)
    b = KANLayer(4, 3)
    a.reset_parameters(torch.Generator().manual_seed(5))
    b.reset_parameters(torch.Generator().manual_seed(5))
    assert torch.equal(a.weight, b.weight)
    bound = (6 / (4 * 8 + 3)) ** 0.5
    assert a.weight.abs().max() <= bound
    assert a.weight.abs().max() > 0.5 * bound


def test_faster_kan_composes_layers_and_every_parameter_gets_a_gradient(seeded):
    net = FasterKAN([4, 6, 2], impl="reference").double()
    x = torch.randn(7, 4, dtype=F64)
    y = net(x)
    assert_close("stack", net.layers[1](net.layers[0](x)), y, ratio=0.0)
    y.square().sum().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("basis", ["rswaf", "rbf", "bspline"])
def test_gradcheck_kan_layer(basis, seeded):
    layer = KANLayer(3, 2, basis=basis, num_grids=4, impl="reference").double()
    x = torch.randn(4, 3, dtype=F64)

    def fn(x, w, lw, lb):
        u = torch.nn.functional.layer_norm(x, (3,), lw, lb, 1e-5)
        return kan_linear(
            u,
            w,
            basis=basis,
            grid=layer.rbf.grid,
            inv_denominator=getattr(layer.rbf, "inv_denominator", None),
            order=getattr(layer.rbf, "order", None),
            impl="reference",
        )

    assert gradcheck_f64(
        fn, x, layer.weight.detach(), layer.layernorm.weight.detach(), layer.layernorm.bias.detach()
    )


def test_wrong_feature_size_raises():
    layer = KANLayer(5, 3)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 5\), got \(2, 4\)"):
        layer(torch.randn(2, 4))
    grid = torch.linspace(-2, 2, 8)
    with pytest.raises(ValueError, match="weight: expected shape"):
        kan_linear(torch.randn(2, 4), torch.randn(3, 5 * 8), grid=grid, inv_denominator=3.0)
    with pytest.raises(TypeError, match="weight: expected a tensor of x's dtype"):
        kan_linear(torch.randn(2, 4), torch.randn(3, 32, dtype=F64), grid=grid, inv_denominator=3.0)


def test_grid_out_of_order_and_bad_options_raise():
    with pytest.raises(ValueError, match="grid: expected strictly increasing"):
        kan_linear(
            torch.randn(2, 2),
            torch.randn(3, 6),
            grid=torch.tensor([0.0, 2.0, 1.0]),
            inv_denominator=1.0,
        )
    with pytest.raises(ValueError, match="grid_range"):
        KANLayer(3, 2, grid_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="basis"):
        KANLayer(3, 2, basis="spline")
    with pytest.raises(ValueError, match="in_features"):
        KANLayer(0, 2)
    with pytest.raises(ValueError, match="impl"):
        KANLayer(3, 2, impl="cuda")
    with pytest.raises(ValueError, match="widths"):
        FasterKAN([4])


def test_grouped_reference_equals_per_expert_layers(seeded):
    grid = torch.linspace(-2, 2, 8, dtype=F64)
    w = torch.randn(3, 4, 2 * 8, dtype=F64)
    x = torch.randn(7, 2, dtype=F64)
    offsets = torch.tensor([3, 3, 7], dtype=torch.int32)  # expert 1 empty
    y = grouped_kan_linear(x, w, offsets, grid=grid, inv_denominator=3.0, impl="reference")
    ref = torch.cat(
        [
            kan_linear(x[:3], w[0], grid=grid, inv_denominator=3.0),
            kan_linear(x[3:], w[2], grid=grid, inv_denominator=3.0),
        ]
    )
    assert_close("grouped", ref, y, ratio=1e-14)
    with pytest.raises(ValueError, match="offsets"):
        grouped_kan_linear(x, w, offsets.long(), grid=grid, inv_denominator=3.0)
    with pytest.raises(ValueError, match="offsets"):
        bad = torch.tensor([3, 3, 6], dtype=torch.int32)
        grouped_kan_linear(x, w, bad, grid=grid, inv_denominator=3.0)


def test_import_is_lean():
    assert_lean_import("paperbricks.mlpkan.kan")
    assert_lean_import("paperbricks.mlpkan.kernels")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_kan_layer_auto_uses_fused_kernel_and_matches_reference(dtype, seeded):
    layer = KANLayer(192, 96).cuda().to(dtype)
    x = torch.randn(4, 257, 192, device="cuda", dtype=dtype, requires_grad=True)
    y = layer(x)  # impl="auto" -> Triton on CUDA
    ref_layer = KANLayer(192, 96, impl="reference").cuda().double()
    ref_layer.load_state_dict(layer.state_dict())
    x64 = x.detach().double().requires_grad_(True)
    y_ref = ref_layer(x64)
    # bf16 end to end (LayerNorm output and basis rounded to bf16) vs float64.
    ratio = 1e-5 if dtype == torch.float32 else 5e-2
    assert_close("gpu fwd", y_ref, y.double(), ratio=ratio)
    dy = torch.randn_like(y).double()  # representable in `dtype`
    y.backward(dy.to(dtype))
    y_ref.backward(dy)
    assert_close("gpu dx", x64.grad, x.grad.double(), ratio=ratio)
    assert_close("gpu dW", ref_layer.weight.grad, layer.weight.grad.double(), ratio=ratio)

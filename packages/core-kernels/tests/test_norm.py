"""norm: RMSNorm reference vs torch, Triton vs reference (forward and backward), LayerNorm, module."""

import pytest
import torch
import torch.nn.functional as F

from paperbricks.core_kernels.norm import (
    RMSNorm,
    layer_norm,
    layer_norm_reference,
    rms_norm,
    rms_norm_reference,
)
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    gradcheck_f64,
    requires_cuda,
)

ROWS = (1, 63, 100)
HIDDEN = (64, 100, 257)


def test_lean_import():
    assert_lean_import("paperbricks.core_kernels.norm")


# --- reference against torch -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_weight", [True, False])
def test_reference_equals_torch_rms_norm(seeded, dtype, with_weight):
    x = torch.randn(3, 7, 48, dtype=dtype)
    w = torch.randn(48, dtype=dtype) if with_weight else None
    ref = F.rms_norm(x, (48,), w, eps=1e-5)
    assert_close("rms_norm", ref, rms_norm(x, w, eps=1e-5, impl="reference"))


def test_reference_equals_nn_rmsnorm_module(seeded):
    torch_norm = torch.nn.RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        torch_norm.weight.copy_(torch.randn(32))
    ours = RMSNorm(32, eps=1e-6, impl="reference")
    ours.load_state_dict(torch_norm.state_dict())
    x = torch.randn(4, 5, 32)
    assert_close("module", torch_norm(x), ours(x))
    # and the functional value, by hand: x / sqrt(mean(x²) + eps) * w
    by_hand = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * torch_norm.weight
    assert_close("by hand", by_hand, ours(x).detach())


def test_reference_known_value():
    x = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    y = rms_norm(x, torch.tensor([1.0, 2.0]), eps=0.0, impl="reference")
    s = 12.5**0.5
    assert torch.allclose(y, torch.tensor([[3.0 / s, 8.0 / s]]))


def test_reference_gradcheck(seeded):
    x = torch.randn(3, 5, 6)
    w = torch.randn(6)
    assert gradcheck_f64(lambda a, b: rms_norm_reference(a, b, 1e-6), x, w)
    r = torch.randn(3, 5, 6)
    assert gradcheck_f64(lambda a, b, c: rms_norm_reference(a, b, 1e-6, residual=c), x, w, r)


def test_reference_residual_is_unfused_add_then_norm(seeded):
    x, r = torch.randn(2, 3, 16, dtype=torch.bfloat16), torch.randn(2, 3, 16, dtype=torch.bfloat16)
    w = torch.randn(16)
    y, h = rms_norm(x, w, residual=r, impl="reference")
    assert_bitwise_equal(h, x + r, "new residual")
    assert_bitwise_equal(y, rms_norm(x + r, w, impl="reference"), "normed")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_accumulates_in_fp32_and_rounds_once(seeded, dtype):
    x = (torch.randn(8, 96) * 30).to(dtype)
    w = torch.randn(96)
    y = rms_norm(x, w, impl="reference")
    assert y.dtype == dtype
    exact = F.rms_norm(x.double(), (96,), w.double(), eps=1e-6).to(dtype)
    assert_bitwise_equal(y, exact, "one rounding")


# --- Triton vs reference under the interpreter (fp32, awkward shapes) -------------------------


def _grads(out, inputs, grads):
    return torch.autograd.grad(out, inputs, grads)


@pytest.mark.parametrize("n_rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_triton_forward_backward_matches_reference(seeded, nan_poison, n_rows, hidden):
    x = torch.randn(n_rows, hidden, requires_grad=True)
    w = (1 + 0.5 * torch.randn(hidden)).requires_grad_(True)
    dy = torch.randn(n_rows, hidden)
    ref = rms_norm(x, w, 1e-6, impl="reference")
    out = rms_norm(x, w, 1e-6, impl="triton")
    assert_close("y", ref, out)
    rdx, rdw = _grads(ref, (x, w), dy)
    dx, dw = _grads(out, (x, w), dy)
    assert_close("dx", rdx, dx)
    assert_close("dweight", rdw, dw)


@pytest.mark.parametrize(("n_rows", "hidden"), [(1, 64), (63, 100), (100, 257)])
def test_triton_residual_path_matches_reference(seeded, nan_poison, n_rows, hidden):
    x = torch.randn(n_rows, hidden, requires_grad=True)
    r = torch.randn(n_rows, hidden, requires_grad=True)
    w = torch.randn(hidden, requires_grad=True)
    dy, dh = torch.randn(n_rows, hidden), torch.randn(n_rows, hidden)
    ref_y, ref_h = rms_norm(x, w, residual=r, impl="reference")
    y, h = rms_norm(x, w, residual=r, impl="triton")
    assert_close("y", ref_y, y)
    assert_bitwise_equal(h.detach(), ref_h.detach(), "new residual")
    ref_g = _grads((ref_y, ref_h), (x, w, r), (dy, dh))
    got = _grads((y, h), (x, w, r), (dy, dh))
    for name, a, b in zip(("dx", "dweight", "dresidual"), ref_g, got, strict=True):
        assert_close(name, a, b)
    # only y used downstream: the gradient of h is zero, x and residual still get dy through the norm
    y, h = rms_norm(x, w, residual=r, impl="triton")
    gx, gr = _grads(y, (x, r), dy)
    ref_y, _ = rms_norm(x, w, residual=r, impl="reference")
    rgx, _ = _grads(ref_y, (x, r), dy)
    assert_close("dx (y only)", rgx, gx)
    assert_close("dresidual (y only)", rgx, gr)


def test_triton_without_weight_and_3d_noncontiguous(seeded, nan_poison):
    base = torch.randn(5, 64, 7)
    x = base.transpose(1, 2).requires_grad_(False)  # (5, 7, 64), not contiguous
    x = x.detach().requires_grad_(True)
    dy = torch.randn(5, 7, 64)
    ref = rms_norm(x, None, 1e-5, impl="reference")
    out = rms_norm(x, None, 1e-5, impl="triton")
    assert out.shape == (5, 7, 64)
    assert_close("y", ref, out)
    assert_close("dx", _grads(ref, (x,), dy)[0], _grads(out, (x,), dy)[0])


def test_triton_fp16_forward(seeded, nan_poison):
    x = torch.randn(9, 100).half()
    w = torch.randn(100).half()
    out = rms_norm(x, w, impl="triton")
    assert out.dtype == torch.float16
    assert_close("y fp16", rms_norm(x, w, impl="reference"), out)


def test_triton_empty_input():
    x = torch.randn(0, 64, requires_grad=True)
    w = torch.randn(64, requires_grad=True)
    y = rms_norm(x, w, impl="triton")
    assert y.shape == (0, 64)
    dx, dw = torch.autograd.grad(y.sum(), (x, w))
    assert dx.shape == (0, 64) and torch.equal(dw, torch.zeros(64))


# --- module, LayerNorm, dispatch and validation -------------------------------------------------


def test_module_residual_and_repr(seeded):
    norm = RMSNorm(16, eps=1e-5)
    x, r = torch.randn(2, 16), torch.randn(2, 16)
    y, h = norm(x, residual=r)
    assert_close("module residual", F.rms_norm(x + r, (16,), norm.weight, 1e-5), y)
    assert_close("h", x + r, h)
    assert "16, eps=1e-05" in repr(norm)
    assert RMSNorm(16, elementwise_affine=False).weight is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_equals_torch(seeded, dtype):
    x = torch.randn(4, 3, 40, dtype=dtype) * 3 + 1
    w, b = torch.randn(40, dtype=dtype), torch.randn(40, dtype=dtype)
    assert_close("layer_norm", F.layer_norm(x, (40,), w, b, 1e-5), layer_norm(x, w, b))
    assert_close("no affine", F.layer_norm(x, (40,), eps=1e-5), layer_norm(x))


def test_layer_norm_gradcheck(seeded):
    x, w, b = torch.randn(3, 7), torch.randn(7), torch.randn(7)
    assert gradcheck_f64(lambda a, c, d: layer_norm_reference(a, c, d, 1e-5), x, w, b)


def test_auto_on_cpu_uses_reference_and_float64_is_not_fused():
    x = torch.randn(3, 8, dtype=torch.float64)
    assert_bitwise_equal(rms_norm(x), rms_norm_reference(x), "auto on cpu")
    with pytest.raises(ValueError, match="float64"):
        rms_norm(x, impl="triton")


def test_validation_errors():
    x = torch.randn(2, 8)
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        rms_norm(torch.ones(2, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"weight: expected shape \(8,\)"):
        rms_norm(x, torch.ones(7))
    with pytest.raises(ValueError, match="eps"):
        rms_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="residual: expected shape"):
        rms_norm(x, residual=torch.randn(2, 4))
    with pytest.raises(ValueError, match="residual: expected shape"):
        rms_norm(x, residual=x.double())
    with pytest.raises(ValueError, match="impl"):
        rms_norm(x, impl="cuda")
    with pytest.raises(ValueError, match="hidden_size"):
        RMSNorm(0)
    with pytest.raises(ValueError, match=r"bias: expected shape \(8,\)"):
        layer_norm(x, bias=torch.ones(3))


# --- GPU (run natively on CUDA; skipped here) ---------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("n_rows", "hidden"), [(1, 4096), (1000, 100), (4097, 4096), (257, 8192)])
def test_gpu_triton_matches_reference(seeded, nan_poison, dtype, n_rows, hidden):
    dev = "cuda"
    x = torch.randn(n_rows, hidden, device=dev, dtype=dtype, requires_grad=True)
    r = torch.randn(n_rows, hidden, device=dev, dtype=dtype, requires_grad=True)
    w = (1 + 0.1 * torch.randn(hidden, device=dev, dtype=dtype)).requires_grad_(True)
    dy = torch.randn(n_rows, hidden, device=dev, dtype=dtype)
    dh = torch.randn(n_rows, hidden, device=dev, dtype=dtype)
    ref = rms_norm(x, w, impl="reference")
    out = rms_norm(x, w, impl="auto")  # auto picks Triton on CUDA
    assert_close("y", ref, out)
    for name, a, b in zip(
        ("dx", "dw"), _grads(ref, (x, w), dy), _grads(out, (x, w), dy), strict=True
    ):
        assert_close(name, a, b)
    ref_y, ref_h = rms_norm(x, w, residual=r, impl="reference")
    y, h = rms_norm(x, w, residual=r, impl="triton")
    assert_bitwise_equal(h.detach(), ref_h.detach(), "new residual")
    assert_close("y (residual)", ref_y, y)
    ref_g = _grads((ref_y, ref_h), (x, w, r), (dy, dh))
    got = _grads((y, h), (x, w, r), (dy, dh))
    for name, a, b in zip(("dx", "dw", "dres"), ref_g, got, strict=True):
        assert_close(name + " (residual)", a, b)


@requires_cuda
def test_gpu_bf16_matches_torch_rms_norm(seeded):
    x = torch.randn(64, 2048, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(2048, device="cuda", dtype=torch.bfloat16)
    ref = F.rms_norm(x.float(), (2048,), w.float(), 1e-6)
    assert_close("bf16 vs fp32 torch", ref, rms_norm(x, w, impl="triton"))


@pytest.mark.slow
def test_bench_cpu_quick_runs():
    from paperbricks.core_kernels.norm.bench import run

    rows = run(quick=True, device="cpu")
    assert len(rows) == 3
    assert all(r.baseline.startswith(("F.rms_norm", "x + r")) and r.ms > 0 for r in rows)

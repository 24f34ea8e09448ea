"""Fused basis-GEMM Triton kernel vs the eager reference (TRITON_INTERPRET=1 on the CPU)."""

import pytest
import torch

from paperbricks.core_kernels.moe import permute
from paperbricks.core_kernels.testing import assert_close, gradcheck_f64, requires_cuda
from paperbricks.mlpkan.kan import grouped_kan_linear, kan_linear

F64 = torch.float64
INV_H = {"rswaf": 1 / 0.33, "rbf": 1.75}


def _fwd_bwd(fn, x, w):
    x = x.detach().requires_grad_(True)
    w = w.detach().requires_grad_(True)
    y = fn(x, w)
    dy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    return y, dx, dw


def _compare(basis, x, w, grid, offsets=None, *, ratio=None):
    def run(impl):
        def fn(x, w):
            kw = {"basis": basis, "grid": grid, "inv_denominator": INV_H[basis], "impl": impl}
            if offsets is None:
                return kan_linear(x, w, **kw)
            return grouped_kan_linear(x, w, offsets, **kw)

        return _fwd_bwd(fn, x, w)

    ref = run("reference")
    out = run("triton")
    for name, r, o in zip(("y", "dx", "dW"), ref, out, strict=True):
        assert_close(f"{basis} {name}", r, o, ratio=ratio)
    return out


@pytest.mark.parametrize("n", [1, 37])
@pytest.mark.parametrize("n_in", [3, 17])
@pytest.mark.parametrize("n_out", [5, 9])
def test_fused_rswaf_equals_reference_awkward_shapes(n, n_in, n_out, seeded, nan_poison):
    grid = torch.linspace(-2, 2, 8)
    x = torch.randn(n, n_in) * 1.2
    w = torch.randn(n_out, n_in * 8) * 0.2
    _compare("rswaf", x, w, grid)


@pytest.mark.parametrize(("n", "n_in", "n_out", "g"), [(37, 17, 9, 5), (1, 3, 5, 8)])
def test_fused_rbf_equals_reference(n, n_in, n_out, g, seeded, nan_poison):
    grid = torch.linspace(-2, 2, g)
    _compare("rbf", torch.randn(n, n_in), torch.randn(n_out, n_in * g) * 0.2, grid)


def test_fused_float64_is_exact_to_rounding(seeded):
    grid = torch.linspace(-2, 2, 8, dtype=F64)
    x = torch.randn(21, 5, dtype=F64)
    w = torch.randn(6, 40, dtype=F64)
    _compare("rswaf", x, w, grid)  # float64 default ratio 1e-10


def test_fused_handles_strided_inputs(seeded):
    grid = torch.linspace(-2, 2, 8)
    x = torch.randn(10, 2 * 3)[:, ::2]  # non-contiguous (10, 3)
    w = torch.randn(24, 4).t()  # (4, 24) transposed view
    _compare("rswaf", x, w, grid)


@pytest.mark.parametrize("basis", ["rswaf", "rbf"])
def test_gradcheck_fused_kernel(basis, seeded):
    grid = torch.linspace(-1, 1, 4, dtype=F64)
    x = torch.randn(3, 2, dtype=F64) * 0.8
    w = torch.randn(2, 8, dtype=F64)

    def fn(x, w):
        return kan_linear(x, w, basis=basis, grid=grid, inv_denominator=2.0, impl="triton")

    assert gradcheck_f64(fn, x, w, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "counts",
    [
        [5, 0, 13, 1],  # uneven, empty middle expert
        [0, 0, 19, 0],  # all to one, empty first and last
        [1, 1, 1, 1],  # one token each
    ],
)
def test_grouped_fused_equals_reference_uneven_and_empty(counts, seeded, nan_poison):
    grid = torch.linspace(-2, 2, 8)
    m = sum(counts)
    offsets = torch.tensor(counts).cumsum(0).to(torch.int32)
    x = torch.randn(m, 3)
    w = torch.randn(len(counts), 5, 3 * 8) * 0.3
    _, _, dw = _compare("rswaf", x, w, grid, offsets)
    for e, c in enumerate(counts):
        if c == 0:
            assert torch.equal(dw[e], torch.zeros_like(dw[e]))  # empty expert: exact zeros


def test_grouped_fused_behind_core_kernels_permute(seeded):
    # Tokens routed top-2 over 3 experts, sorted by core-kernels' permute; the fused grouped kernel
    # must equal running each expert's KAN layer on its own tokens.
    grid = torch.linspace(-2, 2, 8)
    tokens = torch.randn(11, 4)
    idx = torch.stack([torch.arange(11) % 3, (torch.arange(11) + 1) % 3], dim=1)
    p = permute(tokens, idx, num_experts=3)
    w = torch.randn(3, 6, 4 * 8) * 0.3
    y = grouped_kan_linear(p.x_sorted, w, p.offsets, grid=grid, inv_denominator=3.0, impl="triton")
    ends = p.offsets.tolist()
    for e in range(3):
        lo, hi = (ends[e - 1] if e else 0), ends[e]
        ref = kan_linear(p.x_sorted[lo:hi], w[e], grid=grid, inv_denominator=3.0, impl="reference")
        assert_close(f"expert {e}", ref, y[lo:hi])


def test_triton_refuses_unsupported_inputs():
    knots = torch.linspace(-2, 2, 12)
    with pytest.raises(ValueError, match="bspline"):
        kan_linear(torch.randn(2, 2), torch.randn(3, 16), basis="bspline", grid=knots, order=3,
                   impl="triton")  # fmt: skip
    grid = torch.linspace(-2, 2, 8).requires_grad_(True)
    with pytest.raises(ValueError, match="grid"):
        kan_linear(torch.randn(2, 2), torch.randn(3, 16), grid=grid, inv_denominator=3.0,
                   impl="triton")  # fmt: skip
    # "auto" on CPU tensors falls back to the reference instead of raising.
    y = kan_linear(
        torch.randn(2, 2), torch.randn(3, 16), basis="bspline", grid=knots, order=3, impl="auto"
    )
    assert y.shape == (2, 3)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("basis", ["rswaf", "rbf"])
def test_gpu_fused_matches_float64_reference(dtype, basis, seeded):
    grid = torch.linspace(-2, 2, 8, device="cuda")
    x = torch.randn(1000, 63, device="cuda")
    w = torch.randn(100, 63 * 8, device="cuda") * 0.05

    dy = torch.linspace(-1, 1, 1000 * 100, device="cuda").reshape(1000, 100).to(dtype)

    def run(impl, dt):
        # Inputs rounded to `dtype` first, so the comparison measures the kernel's error only.
        xx = x.to(dtype).to(dt).requires_grad_(True)
        ww = w.to(dtype).to(dt).requires_grad_(True)
        y = kan_linear(xx, ww, basis=basis, grid=grid, inv_denominator=INV_H[basis], impl=impl)
        return (y, *torch.autograd.grad(y, (xx, ww), dy.to(dt)))

    ref = run("reference", F64)
    out = run("triton", dtype)
    ratio = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    for name, r, o in zip(("y", "dx", "dW"), ref, out, strict=True):
        assert_close(f"gpu {name}", r, o.double(), ratio=ratio)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_grouped_fused_matches_reference(dtype, seeded):
    grid = torch.linspace(-2, 2, 8, device="cuda")
    counts = [300, 0, 517, 1, 0, 200]
    offsets = torch.tensor(counts, device="cuda").cumsum(0).to(torch.int32)
    x = torch.randn(sum(counts), 48, device="cuda")
    w = torch.randn(len(counts), 40, 48 * 8, device="cuda") * 0.05

    dy = torch.linspace(-1, 1, sum(counts) * 40, device="cuda").reshape(-1, 40).to(dtype)

    def run(impl, dt):
        xx = x.to(dtype).to(dt).requires_grad_(True)
        ww = w.to(dtype).to(dt).requires_grad_(True)
        y = grouped_kan_linear(xx, ww, offsets, grid=grid, inv_denominator=3.0, impl=impl)
        return (y, *torch.autograd.grad(y, (xx, ww), dy.to(dt)))

    ref = run("reference", F64)
    out = run("triton", dtype)
    ratio = 1e-5 if dtype == torch.float32 else 3e-2
    for name, r, o in zip(("y", "dx", "dW"), ref, out, strict=True):
        assert_close(f"gpu grouped {name}", r, o.double(), ratio=ratio)
    assert torch.equal(out[2][1], torch.zeros_like(out[2][1]))


_COMPILE_CHECK = r"""
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from paperbricks.mlpkan.kernels import _triton as K

cc = int(sys.argv[1])
for wdt, bn in (("fp32", 64), ("bf16", 128)):
    ptrs = {"grid_ptr": "*fp32", "invh_ptr": "*fp32", "offs_ptr": "*i32"}
    if wdt != "fp32":
        ptrs["dw_ptr"] = "*fp32"  # split-K partial sums
    consts = dict(G=8, BASIS=0, FP64=False, PRECISION="ieee" if wdt == "fp32" else "tf32",
                  BLOCK_M=64, BLOCK_N=bn, BLOCK_J=32, BLOCK_E=16, SPLIT=4)
    for fn in (K._kan_gemm_fwd_kernel, K._kan_gemm_bwd_dx_kernel, K._kan_gemm_bwd_dw_kernel):
        names = list(inspect.signature(fn.fn).parameters)
        sig = {n: "constexpr" if n in consts else ptrs.get(n, f"*{wdt}") if n.endswith("_ptr")
               else "i32" for n in names}
        cx = {(names.index(n),): v for n, v in consts.items() if n in names}
        c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx),
                           target=GPUTarget("cuda", cc, 32), options={"num_warps": 4})
        assert c.metadata.shared <= 160 * 1024, (fn.__name__, wdt, c.metadata.shared)
print("compiled")
"""


@pytest.mark.slow
@pytest.mark.parametrize("cc", [80, 90])
def test_kernels_compile_for_gpu_targets_offline(cc):
    # Compiles the real (not interpreted) kernels to PTX/cubin for A100/H100 with triton's bundled
    # ptxas, so type and layout errors that the interpreter cannot see show up without a GPU.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_CHECK, str(cc)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]

"""Tests of the hadamard module: constructions, FWHT (reference and Triton), K·2^p transforms."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from paperbricks.core_kernels.hadamard import (
    TRITON_MAX_N,
    GaloisField,
    constructible_orders,
    fwht,
    fwht_reference,
    had_transform,
    had_transform_reference,
    hadamard_construction,
    hadamard_matrix,
    hadamard_size_plan,
    is_prime_power,
    paley_hadamard,
    random_hadamard,
    random_hadamard_signs,
    sylvester_hadamard,
)
from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    gradcheck_f64,
    requires_cuda,
)

REQUIRED_K = [12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 344]


def _is_hadamard_exact(h: torch.Tensor) -> bool:
    n = h.shape[0]
    h64 = h.to(torch.int64)
    return bool((h64.abs() == 1).all()) and bool(
        (h64 @ h64.T == n * torch.eye(n, dtype=torch.int64)).all()
    )


def _dense_sylvester(n: int) -> torch.Tensor:
    """Outside oracle: scipy's Sylvester construction."""
    return torch.from_numpy(scipy.linalg.hadamard(n)).to(torch.float64)


# ---------------------------------------------------------------------------- import


def test_lean_import():
    assert_lean_import("paperbricks.core_kernels.hadamard")


# ---------------------------------------------------------------------------- constructions


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, *REQUIRED_K, 24, 44, 144, 160, 312])
def test_hadamard_matrix_is_hadamard_in_integer_arithmetic(n):
    h = hadamard_matrix(n)
    assert h.dtype == torch.int8 and h.shape == (n, n)
    assert _is_hadamard_exact(h)


def test_paley_constructions_explicitly():
    # 28 both ways: Paley I over GF(27) (what the plan uses) and Paley II over GF(13).
    for q, kind, order in [(27, 1, 28), (13, 2, 28), (25, 2, 52), (343, 1, 344), (11, 1, 12)]:
        h = paley_hadamard(q, kind)
        assert h.shape == (order, order)
        assert _is_hadamard_exact(h), (q, kind)
    assert "paley2(q=13)" not in hadamard_construction(28)  # the plan prefers Paley I here


def test_sylvester_matches_scipy_and_popcount_formula():
    for n in [1, 2, 16, 128]:
        h = sylvester_hadamard(n).to(torch.float64)
        assert torch.equal(h, _dense_sylvester(n))
        i = torch.arange(n)
        pop = torch.tensor([bin(v).count("1") for v in (i[:, None] & i[None, :]).flatten()])
        assert torch.equal(h.flatten(), (-1.0) ** pop.to(torch.float64))


def test_hadamard_matrix_equals_plan_kronecker():
    for n in [40, 24 * 4, 344 * 2]:
        k, p = hadamard_size_plan(n)
        expect = torch.kron(hadamard_matrix(k, dtype=torch.int64), sylvester_hadamard(p).long())
        assert torch.equal(hadamard_matrix(n, dtype=torch.int64), expect)


def test_hadamard_matrix_deterministic_and_returns_copies():
    a = hadamard_matrix(28)
    a.fill_(0)  # mutating the result must not touch the cache
    b = hadamard_matrix(28)
    assert _is_hadamard_exact(b)
    assert torch.equal(b, hadamard_matrix(28, dtype=torch.float32).to(torch.int8))


@pytest.mark.parametrize(
    ("n", "plan"),
    [
        (1, (1, 1)),
        (4096, (1, 4096)),
        (40, (20, 2)),
        (12 * 1024, (12, 1024)),
        (11008, (344, 32)),
        (14336, (28, 512)),
        (18944, (148, 128)),
        (5120, (20, 256)),
        (13824, (108, 128)),
    ],
)
def test_hadamard_size_plan_known_sizes(n, plan):
    assert hadamard_size_plan(n) == plan


def _paley_order(k: int) -> bool:
    """Independent check of the Paley conditions (prime power q, q mod 4)."""
    pm1 = is_prime_power(k - 1)
    pm2 = is_prime_power(k // 2 - 1) if k % 2 == 0 else None
    return (pm1 is not None and (k - 1) % 4 == 3) or (pm2 is not None and (k // 2 - 1) % 4 == 1)


def test_hadamard_size_plan_picks_largest_power_of_two():
    planned = 0
    for n in range(1, 600):
        try:
            k, p = hadamard_size_plan(n)
        except ValueError:
            continue
        planned += 1
        assert k * p == n and p & (p - 1) == 0
        assert k == 1 or _paley_order(k) or k >= 144
        q = 2 * p
        while n % q == 0:  # a larger power of two would leave K' = n / q: none is buildable
            assert not (n // q == 1 or _paley_order(n // q)), (n, q)
            q *= 2
    assert planned > 100


def test_constructible_orders_cover_required_and_skip_williamson():
    orders = constructible_orders(400)
    for k in [*REQUIRED_K, 1, 2, 4, 256]:
        assert k in orders
    for k in [92, 116, 156, 172]:
        assert k not in orders
    # every constructible order is 1, 2 or a multiple of 4 (necessary condition)
    assert all(k in (1, 2) or k % 4 == 0 for k in orders)


def test_hadamard_construction_descriptions():
    assert hadamard_construction(11008) == "paley1(q=343=7^3) ⊗ sylvester(32)"
    assert hadamard_construction(52) == "paley2(q=25=5^2)"
    assert hadamard_construction(40) == "paley1(q=19) ⊗ sylvester(2)"
    assert hadamard_construction(64) == "sylvester(64)"


def test_is_prime_power():
    assert is_prime_power(343) == (7, 3)
    assert is_prime_power(25) == (5, 2)
    assert is_prime_power(73) == (73, 1)
    assert is_prime_power(1) is None and is_prime_power(15) is None and is_prime_power(147) is None


@pytest.mark.parametrize(("p", "m"), [(5, 2), (3, 3), (3, 2)])
def test_galois_field_is_a_field(p, m):
    F = GaloisField(p, m)
    q = F.q
    mul = np.array([[F.mul(a, b) for b in range(q)] for a in range(q)])  # (q, q)
    assert (mul == mul.T).all()
    # no zero divisors and every non-zero element has an inverse: rows are permutations
    for a in range(1, q):
        assert sorted(mul[a, 1:]) == list(range(1, q))
    # distributivity over the digit-wise addition
    sub = F.sub_table()
    add = sub[:, sub[0]]  # a + b = a − (0 − b)
    for a, b, c in [(1, 2, 3), (q - 1, q // 2, 5), (7 % q, 11 % q, 13 % q)]:
        assert mul[a, add[b, c]] == add[mul[a, b], mul[a, c]]
    chi = F.quadratic_character()
    assert int((chi == 1).sum()) == (q - 1) // 2 and int((chi == -1).sum()) == (q - 1) // 2


def test_galois_343_quadratic_character_is_multiplicative():
    F = GaloisField(7, 3)
    chi = F.quadratic_character()
    rng = np.random.default_rng(0)
    for a, b in rng.integers(1, F.q, size=(200, 2)):
        assert chi[F.mul(int(a), int(b))] == chi[a] * chi[b]
    assert chi[F.sub_table()[0, 1]] == -1  # χ(−1) = −1 since 343 ≡ 3 mod 4


# ---------------------------------------------------------------------------- FWHT reference


@pytest.mark.parametrize("n", [1, 2, 4, 32, 512])
def test_fwht_equals_dense_matrix(n):
    x = torch.randn(2, 3, n, dtype=torch.float64)
    ref = x @ _dense_sylvester(n).T
    assert_close("fwht", ref, fwht(x, impl="reference"))
    assert_close("fwht scaled", 0.25 * ref, fwht(x, scale=0.25, impl="reference"))


def test_fwht_known_values():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(fwht(x), torch.tensor([10.0, -2.0, -4.0, 0.0]))
    assert torch.equal(fwht(x, normalize=True), torch.tensor([5.0, -1.0, -2.0, 0.0]))


def test_fwht_normalised_is_involution_and_preserves_norms():
    x = torch.randn(5, 256, dtype=torch.float64)
    y = fwht(x, normalize=True)
    assert_close("involution", x, fwht(y, normalize=True))
    assert_close("norms", x.norm(dim=-1), y.norm(dim=-1))
    assert_close("unnormalised twice", 256 * x, fwht(fwht(x)))


def test_fwht_half_precision_computes_in_fp32():
    x = torch.randn(4, 128).to(torch.bfloat16)
    out = fwht(x, impl="reference")
    assert out.dtype == torch.bfloat16
    ref = fwht_reference(x.double())
    assert_close("bf16 ref", ref, out)
    # rounded once: equals the fp32 result cast to bf16
    assert_bitwise_equal(out, fwht(x.float()).to(torch.bfloat16), "single rounding")


def test_fwht_gradcheck():
    assert gradcheck_f64(lambda t: fwht(t, normalize=True, impl="reference"), torch.randn(3, 16))


# ---------------------------------------------------------------------------- had_transform


@pytest.mark.parametrize("k", REQUIRED_K)
def test_had_transform_equals_dense_kronecker(k):
    p = 2
    n = k * p
    x = torch.randn(3, n, dtype=torch.float64)
    dense = torch.kron(hadamard_matrix(k, dtype=torch.float64), _dense_sylvester(p))  # (n, n)
    assert_close(f"K={k}", x @ dense.T, had_transform(x, k, impl="reference"))
    s = 1 / math.sqrt(n)
    y = had_transform(x, k, normalize=True, impl="reference")
    assert_close("normalised", s * x @ dense.T, y)
    assert_close("norm preserved", x.norm(dim=-1), y.norm(dim=-1))


def test_had_transform_is_independent_of_k_choice():
    x = torch.randn(2, 160, dtype=torch.float64)
    y20 = had_transform(x, 20)
    for k in [40, 80, 160, None]:
        assert_close(f"K={k}", y20, had_transform(x, k))
    assert_close("dense", x @ hadamard_matrix(160, dtype=torch.float64).T, y20)


def test_had_transform_model_widths_preserve_norm():
    for n in [11008, 14336]:
        x = torch.randn(2, n, dtype=torch.float64)
        y = had_transform(x, normalize=True)
        assert_close(f"n={n}", x.norm(dim=-1), y.norm(dim=-1))
        k, p = hadamard_size_plan(n)
        # transposed transform inverts it: x = Hᵀ y / n, Hᵀ = H_Kᵀ ⊗ H_P
        hk = hadamard_matrix(k, dtype=torch.float64)
        back = fwht(torch.einsum("ca,...cp->...ap", hk, y.reshape(2, k, p)), normalize=False)
        assert_close("inverse", x, back.reshape(2, n) / math.sqrt(n))


def test_had_transform_power_of_two_is_fwht():
    x = torch.randn(3, 64)
    assert torch.equal(had_transform(x), fwht(x))


def test_had_transform_gradcheck():
    fn = lambda t: had_transform(t, 12, normalize=True, impl="reference")  # noqa: E731
    assert gradcheck_f64(fn, torch.randn(2, 24))


# ---------------------------------------------------------------------------- random_hadamard


def test_random_hadamard_orthonormal_and_seeded():
    n = 96  # 12 · 8
    q = random_hadamard(n, seed=3, dtype=torch.float64)
    assert_close("QQᵀ", torch.eye(n, dtype=torch.float64), q @ q.T)
    assert torch.equal(q, random_hadamard(n, seed=3, dtype=torch.float64))
    for dt in (torch.float32, torch.bfloat16):  # each entry is ±1/√n rounded once
        assert torch.equal(random_hadamard(n, seed=3, dtype=dt), q.to(dt))
    assert not torch.equal(q, random_hadamard(n, seed=4, dtype=torch.float64))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(q, random_hadamard(n, generator=g, dtype=torch.float64))
    sigma = random_hadamard_signs(n, seed=3).to(torch.float64)
    h = hadamard_matrix(n, dtype=torch.float64)
    assert_bitwise_equal(q, h @ torch.diag(sigma) / math.sqrt(n), "H diag(σ)/√n")
    x = torch.randn(4, n, dtype=torch.float64)
    assert_close("matrix-free", x @ q.T, had_transform(x * sigma, normalize=True))


def test_random_hadamard_does_not_touch_global_rng():
    state = torch.get_rng_state()
    random_hadamard(16, seed=0)
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------------------- Triton (interpreter on CPU)


@pytest.mark.parametrize("n", [1, 2, 16, 128, 256])
@pytest.mark.parametrize("lead", [(1,), (63,), (3, 21)])
def test_fwht_triton_matches_reference(n, lead, nan_poison):
    x = torch.randn(*lead, n)
    ref = fwht(x, impl="reference")
    assert_close("fwht triton", ref, fwht(x, impl="triton"))
    s = 0.125
    assert_close("fwht triton scaled", s * ref, fwht(x, scale=s, impl="triton"))


def test_fwht_triton_float64_and_empty(nan_poison):
    x = torch.randn(5, 32, dtype=torch.float64)
    assert_close("fp64", x @ _dense_sylvester(32).T, fwht(x, impl="triton"))
    empty = torch.randn(0, 16)
    assert fwht(empty, impl="triton").shape == (0, 16)


def test_fwht_triton_non_contiguous_input(nan_poison):
    x = torch.randn(64, 10)[:, :8]  # rows strided by 10
    assert_close("strided", fwht(x, impl="reference"), fwht(x, impl="triton"))


def test_fwht_triton_backward_matches_reference():
    x = torch.randn(7, 64, requires_grad=True)
    dy = torch.randn(7, 64)
    (g_ref,) = torch.autograd.grad(fwht(x, normalize=True, impl="reference"), x, dy)
    (g_tri,) = torch.autograd.grad(fwht(x, normalize=True, impl="triton"), x, dy)
    assert_close("dx", g_ref, g_tri)


@pytest.mark.parametrize("k", [12, 20, 28])
def test_had_transform_triton_matches_reference(k, nan_poison):
    x = torch.randn(63, k * 8)
    assert_close(
        f"K={k}",
        had_transform(x, k, normalize=True, impl="reference"),
        had_transform(x, k, normalize=True, impl="triton"),
    )


def test_auto_on_cpu_uses_reference_bitwise():
    x = torch.randn(3, 128)
    assert_bitwise_equal(fwht(x), fwht_reference(x), "auto == reference on CPU")


# ---------------------------------------------------------------------------- errors


def test_fwht_errors():
    with pytest.raises(ValueError, match=r"power of two.*had_transform"):
        fwht(torch.randn(2, 12))
    with pytest.raises(TypeError, match="floating dtype"):
        fwht(torch.ones(4, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        fwht([1.0, 2.0])
    with pytest.raises(ValueError, match="0-d"):
        fwht(torch.tensor(1.0))
    with pytest.raises(ValueError, match="either normalize"):
        fwht(torch.randn(4), normalize=True, scale=0.5)
    with pytest.raises(ValueError, match="finite"):
        fwht(torch.randn(4), scale=float("nan"))
    with pytest.raises(ValueError, match="impl"):
        fwht(torch.randn(4), impl="cuda")
    with pytest.raises(ValueError, match="TRITON_MAX_N"):
        fwht(torch.randn(1, 2 * TRITON_MAX_N), impl="triton")


def test_had_transform_errors():
    with pytest.raises(ValueError, match="nearest sizes that work"):
        had_transform(torch.randn(2, 7 * 11))
    with pytest.raises(ValueError, match=r"92, 116, 156, 172"):
        had_transform(torch.randn(1, 156))  # 156 · 4 = 312 · 2 works (Paley I, q = 311)
    with pytest.raises(ValueError, match="K must divide n"):
        had_transform(torch.randn(2, 96), 20)
    with pytest.raises(ValueError, match="K must divide n"):
        had_transform(torch.randn(2, 96), 36)  # divides? no: 96 / 36 is not an integer
    with pytest.raises(TypeError, match="K must be an int"):
        had_transform(torch.randn(2, 96), 12.0)
    with pytest.raises(ValueError, match="K=92"):
        had_transform(torch.randn(2, 184), 92)


def test_construction_errors():
    with pytest.raises(ValueError, match="positive"):
        hadamard_matrix(0)
    with pytest.raises(TypeError, match="positive int"):
        hadamard_matrix("12")
    with pytest.raises(ValueError, match=r"n=6.*nearest sizes that work: \[2, 4, 8, 12\]"):
        hadamard_matrix(6)
    with pytest.raises(ValueError, match="≡ 3 mod 4"):
        paley_hadamard(13, 1)
    with pytest.raises(ValueError, match="prime power"):
        paley_hadamard(15, 1)
    with pytest.raises(ValueError, match="kind"):
        paley_hadamard(11, 3)
    with pytest.raises(ValueError, match="prime"):
        GaloisField(4, 1)
    with pytest.raises(ValueError, match="power of two"):
        sylvester_hadamard(12)


def test_random_hadamard_errors():
    with pytest.raises(ValueError, match="exactly one of seed"):
        random_hadamard(8)
    with pytest.raises(ValueError, match="exactly one of seed"):
        random_hadamard(8, seed=0, generator=torch.Generator())
    with pytest.raises(TypeError, match="seed must be an int"):
        random_hadamard(8, seed=1.5)
    with pytest.raises(TypeError, match="floating"):
        random_hadamard(8, seed=0, dtype=torch.int32)
    with pytest.raises(ValueError, match="nearest sizes"):
        random_hadamard(92, seed=0)


# ---------------------------------------------------------------------------- GPU


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 256, 4096, 32768])
def test_fwht_triton_cuda(dtype, n):
    x = torch.randn(1000, n, device="cuda").to(dtype)
    ref = fwht_reference(x.double(), 1 / math.sqrt(n))
    out = fwht(x, normalize=True)  # auto -> Triton on CUDA
    assert out.dtype == dtype
    assert_close(f"fwht cuda {dtype} n={n}", ref, out)
    assert_bitwise_equal(out, fwht(x, normalize=True, impl="triton"), "auto == triton on CUDA")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fwht_triton_cuda_backward(dtype):
    x = torch.randn(63, 2048, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn(63, 2048, device="cuda", dtype=dtype)
    (g,) = torch.autograd.grad(fwht(x, normalize=True), x, dy)
    assert_close("dx cuda", fwht_reference(dy.double(), 2048**-0.5), g)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [11008, 14336, 18944])
def test_had_transform_cuda_model_widths(dtype, n):
    x = torch.randn(100, n, device="cuda").to(dtype)
    k, _ = hadamard_size_plan(n)
    ref = had_transform_reference(x.double(), k, 1 / math.sqrt(n))
    out = had_transform(x, normalize=True)
    assert out.dtype == dtype
    # two roundings (FWHT output and the K×K matmul) instead of one
    ratio = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    assert_close(f"had_transform cuda n={n}", ref, out, ratio)


@requires_cuda
def test_fwht_triton_cuda_beyond_register_limit_routes_to_reference():
    x = torch.randn(2, 2 * TRITON_MAX_N, device="cuda")
    ref = fwht_reference(x.double())
    assert_close("n=65536 auto", ref, fwht(x))


@pytest.mark.slow
def test_bench_cpu_quick_runs():
    from paperbricks.core_kernels.hadamard.bench import run

    rows = run(quick=True, device="cpu")
    assert {r.baseline for r in rows} == {"dense x@H.T", "x.clone() memcpy"}
    assert all(r.ms > 0 and r.gbps is not None for r in rows)


_AOT_COMPILE = r"""
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from paperbricks.core_kernels.hadamard._triton import _fwht_fwd_kernel

for n, block_m, dt, acc in [(1, 64, "fp32", tl.float32), (256, 16, "bf16", tl.float32),
                            (64, 64, "fp64", tl.float64)]:
    sig = {"X": "*" + dt, "Y": "*" + dt, "M": "i32", "scale": "fp32", "stride_xm": "i32",
           "stride_ym": "i32", "N": "constexpr", "LOG_N": "constexpr", "BLOCK_M": "constexpr",
           "ACC": "constexpr"}
    consts = {"N": n, "LOG_N": n.bit_length() - 1, "BLOCK_M": block_m, "ACC": acc}
    src = ASTSource(fn=_fwht_fwd_kernel, signature=sig, constexprs=consts)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert "cubin" in kernel.asm, n
print("compiled")
"""


@pytest.mark.slow
def test_fwht_kernel_compiles_for_sm90_without_a_gpu():
    """The interpreter skips Triton's code generator; compile to a cubin ahead of time instead."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-c", _AOT_COMPILE], capture_output=True, text=True, env=env, timeout=600
    )
    if "ImportError" in proc.stderr and "ASTSource" in proc.stderr:
        pytest.skip("this triton has no ASTSource/GPUTarget ahead-of-time API")
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]

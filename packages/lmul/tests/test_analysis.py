"""Error analysis: spec §5 oracles 9 (error-table orderings) and 10 (exact expectation vs sampling).

Oracles: the L-Mul rows against an independent float64 Monte Carlo of the formula written here;
the fp8 baselines against core-kernels' exact round_to (itself tested against torch's casts); the
L-Mul-inside-fp8-range rows against L1's integer-field implementation on real fp8 codes
(lmul_codes); and the orderings the paper claims, on 2^20 seeded samples.
"""

import math

import numpy as np
import pytest
import torch

from paperbricks.core_kernels.float_bits import E4M3FN, E5M2, all_codes, from_codes, round_to
from paperbricks.core_kernels.testing import requires_cuda
from paperbricks.lmul.analysis import (
    BASELINES,
    ErrorTable,
    _fp8_mult,
    _lmul_in_range,
    error_table,
    expected_relative_error,
    plot_error_histograms,
)
from paperbricks.lmul.reference import lmul_codes


def _mc_lmul_error(k, l, semantics, rounding, law, n, seed):
    """Monte Carlo of k-bit L-Mul's relative error, straight from the formula (numpy float64)."""
    r = np.random.default_rng(seed)
    if law == "uniform":
        x, y = 1 + r.random(n), 1 + r.random(n)
    else:
        x, y = 2 ** r.random(n), 2 ** r.random(n)
    grid = 2**k

    def rounded(v):
        u = (v - 1) * grid
        i = np.floor(u) if rounding == "trunc" else np.rint(u)
        return np.where(i == grid, 0, i) / grid, np.where(i == grid, 2.0, 1.0)

    (a, sa), (b, sb) = rounded(x), rounded(y)
    S = a + b + 2.0**-l
    if semantics == "bits":  # integer carry: once for S in [1, 2), twice for S >= 2
        val = np.where(S < 1, 1 + S, np.where(S < 2, 2 * S, 4 * (S - 1)))
    else:
        val = 1 + S
    return float(np.mean(np.abs(val * sa * sb / (x * y) - 1)))


# --- oracle 10: exact expectation --------------------------------------------------------------


@pytest.mark.parametrize("law", ["loguniform", "uniform"])
@pytest.mark.parametrize("semantics", ["bits", "equation"])
@pytest.mark.parametrize("rounding", ["trunc", "rne"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_expected_matches_formula_monte_carlo(k, rounding, semantics, law):
    exact = expected_relative_error(k, semantics=semantics, operand_rounding=rounding, law=law)
    l = min(k, 3) if k <= 4 else 4
    mc = _mc_lmul_error(k, l, semantics, rounding, law, 1 << 19, seed=k)
    # measured: |exact - mc| / exact <= 7.5e-4 at 2^22 samples over this grid; at 2^19 samples
    # the MC standard error is ~1.4e-3 relative, so 6e-3 is about 4 standard errors
    assert abs(exact - mc) <= 6e-3 * exact, (exact, mc)


def test_expected_matches_lmul_on_normal_operands():
    """Log-uniform law vs N(0,1) operands through the package's own lmul (integer emulation)."""
    from paperbricks.lmul.ops import lmul

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1 << 20, generator=g), torch.randn(1 << 20, generator=g)
    exact = x.double() * y.double()
    for k in (3, 4, 6):  # k = 6: the offset can carry twice (S >= 2)
        z = lmul(x, y, mantissa_bits=k, impl="reference").double()
        mc = float(((z - exact).abs() / exact.abs()).mean())
        e = expected_relative_error(k)
        # measured: 0.05 % (k=3), 0.10 % (k=4), 0.09 % (k=6) relative gap; N(0,1)
        # significands are only approximately log-uniform
        assert abs(mc - e) <= 0.005 * e, (k, mc, e)


def test_expected_matches_spec_table():
    """Spec §2 (checked there by N(0,1) sampling): trunc l(m) optimal, RNE prefers l = 4."""
    cases = {  # (m, l, rounding): percent
        (3, 3, "trunc"): 4.8,
        (3, 4, "trunc"): 7.8,
        (4, 3, "trunc"): 3.0,
        (4, 4, "trunc"): 4.1,
        (5, 3, "trunc"): 3.7,
        (5, 4, "trunc"): 2.8,
        (3, 3, "rne"): 5.7,
        (3, 4, "rne"): 3.8,
        (4, 3, "rne"): 5.3,
        (4, 4, "rne"): 3.0,
    }
    for (m, l, rnd), pct in cases.items():
        got = 100 * expected_relative_error(m, offset_bits=l, operand_rounding=rnd)
        # the spec's figures are N(0,1) samples rounded to 0.1 (e.g. 3.65 -> 3.7)
        assert abs(got - pct) <= 0.06, (m, l, rnd, got)


def test_expected_edge_cases():
    # k = 12 reaches the full-precision limit: spec §2 measures 2.69 % (bits) at m = 23
    assert round(100 * expected_relative_error(12), 2) == 2.69
    # the uniform law with l -> large and trunc: error only from dropping x_m*y_m and rounding
    assert expected_relative_error(2, law="uniform") == pytest.approx(
        _mc_lmul_error(2, 2, "bits", "trunc", "uniform", 1 << 19, seed=3), rel=6e-3
    )
    for bad, match in [
        (dict(m=0), "m: expected an int"),
        (dict(m=13), "m: expected an int"),
        (dict(m=3, semantics="mitchell"), "semantics"),
        (dict(m=3, operand_rounding="rtz"), "operand_rounding"),
        (dict(m=3, law="normal"), "law"),
        (dict(m=3, offset_bits=0), "offset_bits"),
    ]:
        with pytest.raises(ValueError, match=match):
            expected_relative_error(**bad)


# --- oracle 9: orderings on >= 10^6 seeded samples ---------------------------------------------


@pytest.fixture(scope="module")
def big_tables():
    claim = error_table(
        bits=(3, 4),
        sources=("normal",),
        semantics=("bits",),
        roundings=("trunc",),
        in_fp8_range=False,
        n=1 << 20,
        seed=0,
        expected=False,
    )
    full = error_table(
        bits=(23,), sources=("normal",), baselines=(), n=1 << 20, seed=0, expected=False
    )
    return claim, full


def test_ordering_lmul3_beats_e5m2(big_tables):
    t, _ = big_tables
    l3 = t.get(method="lmul", mantissa_bits=3).mean_rel_error
    assert l3 < t.get(method="e5m2").mean_rel_error


def test_ordering_lmul4_within_10pct_of_e4m3(big_tables):
    t, _ = big_tables
    l4 = t.get(method="lmul", mantissa_bits=4).mean_rel_error
    assert l4 <= 1.1 * t.get(method="e4m3").mean_rel_error


def test_ordering_bits_below_equation_at_23(big_tables):
    _, t = big_tables
    bits = t.get(semantics="bits").mean_rel_error
    eq = t.get(semantics="equation").mean_rel_error
    assert bits < eq
    # spec §2 measured 2.69 % and 6.26 % (N(0,1), m = 23); wide bands, not the claim itself
    assert 0.025 < bits < 0.029 and 0.058 < eq < 0.067
    assert t.get(semantics="bits").rounding == "none"


def test_fp8_baseline_values_match_spec(big_tables):
    t, _ = big_tables
    # spec §2: e4m3 4.5 %, e5m2 7.2 % (N(0,1), real ranges)
    assert round(100 * t.get(method="e4m3").mean_rel_error, 1) == 4.5
    assert round(100 * t.get(method="e5m2").mean_rel_error, 1) == 7.2


# --- the baselines and in-range rows against independent implementations -----------------------


def test_fp8_mult_equals_round_to_path():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20_000, generator=g) * torch.exp2(
        torch.randint(-12, 12, (20_000,), generator=g)
    )
    y = torch.randn(20_000, generator=g) * 4
    for name, (fmt, saturate) in BASELINES.items():
        xq = round_to(x, fmt, "rne", "keep", saturate, impl="reference")
        yq = round_to(y, fmt, "rne", "keep", saturate, impl="reference")
        ref = round_to(xq.double() * yq.double(), fmt, "rne", "keep", saturate, impl="reference")
        out = _fp8_mult(x, y, fmt)
        same = (out == ref) | (out.isnan() & ref.isnan())
        assert bool(same.all()), name


@pytest.mark.parametrize("fmt, k", [(E4M3FN, 3), (E5M2, 2)])
def test_lmul_in_range_equals_code_level_lmul(fmt, k):
    codes = all_codes(fmt)
    vals = from_codes(codes, fmt)
    cx, cy = torch.meshgrid(codes, codes, indexing="ij")
    x, y = torch.meshgrid(vals, vals, indexing="ij")
    ok = torch.isfinite(x) & torch.isfinite(y)
    out = _lmul_in_range(x[ok], y[ok], fmt, k, "bits", "trunc", "reference")
    ref = from_codes(lmul_codes(cx[ok], cy[ok], fmt), fmt)
    same = (out == ref) | (out.isnan() & ref.isnan())
    assert int((~same).sum()) == 0
    # signed zeros agree too
    assert torch.equal(torch.signbit(out), torch.signbit(ref))


# --- the table object, user sources, figures, errors --------------------------------------------


def test_table_rows_and_markdown():
    t = error_table(bits=(2, 23), sources=("uniform",), n=4096, seed=3)
    # 2 semantics x 2 roundings at k=2, 2 at k=23, in-range 2 formats x 4, 2 baselines
    assert len(t.rows) == 4 + 2 + 8 + 2
    md = t.to_markdown()
    assert md.count("\n") == len(t.rows) + 1 and "e5m2 mult" in md and "E4M3FN" in md
    r = t.get(method="lmul", mantissa_bits=2, semantics="bits", rounding="trunc", range="fp32")
    assert r.expected == pytest.approx(expected_relative_error(2, law="uniform"))
    assert r.offset_bits == 2 and r.n == 4096
    assert t.get(method="lmul", mantissa_bits=23, semantics="bits").expected is None
    # deterministic in the seed
    t2 = error_table(bits=(2, 23), sources=("uniform",), n=4096, seed=3)
    assert [r.mean_rel_error for r in t.rows] == [r.mean_rel_error for r in t2.rows]


def test_user_sources():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3000, generator=g)
    b = torch.randn(3000, generator=g)
    a[:10] = 0.0  # exact-zero products are left out of the statistics
    t = error_table(
        bits=(3,),
        sources={"acts": a, "pairs": (a, b)},
        semantics=("bits",),
        roundings=("trunc",),
        in_fp8_range=False,
        n=10,
    )
    assert {r.source for r in t.rows} == {"acts", "pairs"}
    assert t.get(source="pairs", method="lmul").n == 2990
    assert t.get(source="pairs", method="lmul").expected is None
    # the pairs row is the direct computation
    from paperbricks.lmul.ops import lmul

    keep = a != 0
    z = lmul(a, b, mantissa_bits=3).double()
    exact = a.double() * b.double()
    want = ((z - exact).abs() / exact.abs())[keep].mean()
    assert t.get(source="pairs", method="lmul").mean_rel_error == pytest.approx(float(want))


def test_histogram_png(tmp_path):
    t = error_table(
        bits=(3, 4, 23), sources=("normal",), n=5000, roundings=("trunc",), keep_samples=True
    )
    p = plot_error_histograms(t, tmp_path / "h.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="keep_samples"):
        plot_error_histograms(ErrorTable(rows=[]), tmp_path / "x.png")


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(bits=(0,)), ValueError, "bits"),
        (dict(bits=(24,)), ValueError, "bits"),
        (dict(sources=("cauchy",)), ValueError, "'normal', 'uniform'"),
        (dict(sources=(torch.arange(4),)), TypeError, "floating-point"),
        (dict(sources=((torch.ones(3), torch.ones(4)),)), ValueError, "broadcast"),
        (dict(sources=(torch.tensor([1.0, math.inf]),)), ValueError, "finite"),
        (dict(semantics="bits"), TypeError, "sequence of strings"),
        (dict(roundings=("floor",)), ValueError, "roundings"),
        (dict(baselines=("e3m4",)), ValueError, "baselines"),
        (dict(n=0), ValueError, "n: expected"),
        (dict(sources=(torch.zeros(4),)), ValueError, "every exact product is zero"),
        (dict(device="tpu"), ValueError, "device"),
    ],
)
def test_bad_inputs(kw, exc, match):
    with pytest.raises(exc, match=match):
        error_table(**{"bits": (3,), "n": 16, **kw})


@pytest.mark.parametrize("law", ["uniform", "loguniform"])
@pytest.mark.parametrize("k, rounding", [(6, "trunc"), (6, "rne"), (3, "trunc")])
def test_expected_matches_lmul_midpoint_rule(k, rounding, law):
    """A deterministic oracle through the package's own lmul: the midpoint rule on a grid 16x
    finer than the k-bit grid (aligned with the rounding cells; each sub-cell weighted by its
    probability under the law), double carry included."""
    from paperbricks.lmul.ops import lmul

    N = 16 << k
    edges = 1 + torch.arange(N + 1, dtype=torch.float64) / N
    v = (edges[:-1] + edges[1:]) / 2
    w = torch.full((N,), 1.0 / N, dtype=torch.float64)
    if law == "loguniform":
        w = torch.log2(edges[1:] / edges[:-1])  # exact sub-cell probabilities
    x, y = torch.meshgrid(v.float(), v.float(), indexing="ij")
    z = lmul(x, y, mantissa_bits=k, operand_rounding=rounding, impl="reference").double()
    err = (z / (x.double() * y.double()) - 1).abs()
    approx = float((err * w[:, None] * w[None, :]).sum())
    exact = expected_relative_error(k, operand_rounding=rounding, law=law)
    # measured: 3-4e-5 relative at k = 6, 6.5e-4 at k = 3 (the midpoint rule's error on the |.|
    # kinks). At k = 6 dropping the double carry would shift the mean by ~1.5e-3 relative.
    tol = 2e-4 if k == 6 else 1e-3
    assert abs(approx - exact) <= tol * exact, (approx, exact)


@requires_cuda
def test_error_table_on_cuda_equals_cpu():
    """On a GPU the L-Mul rows go through the Triton kernel: identical statistics, bit for bit."""
    kw = dict(bits=(2, 3, 4, 7, 23), sources=("normal", "uniform"), n=1 << 20, seed=1)
    cpu = error_table(**kw, device="cpu")
    gpu = error_table(**kw, device="cuda")
    assert len(cpu.rows) == len(gpu.rows)
    for a, b in zip(cpu.rows, gpu.rows, strict=True):
        assert a == b, (a.label, a.mean_rel_error, b.mean_rel_error)

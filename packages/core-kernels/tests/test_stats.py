"""Tests for paperbricks.core_kernels.stats against scipy, scikit-learn, closed forms and invariants."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import paperbricks.core_kernels.stats as stats_pkg
from paperbricks.core_kernels.stats import (
    StreamingMoments,
    beta_quantile,
    binomial_ci,
    bootstrap,
    fit_logistic,
    frechet_distance,
    rankdata,
    regularized_beta,
    roc_auc,
    spearman,
    trace_sqrt_product,
)
from paperbricks.core_kernels.testing import assert_close, assert_lean_import, requires_cuda

F64 = torch.float64
METHODS = ("eigh", "gram", "eigvals", "sqrtm")


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _samples(
    n: int, d: int, *, seed: int, batch: tuple[int, ...] = (), shift: float = 0.0
) -> torch.Tensor:
    """Correlated Gaussian samples (*batch, n, d) with a non-trivial mean."""
    g = _gen(seed)
    mix = torch.randn(*batch, d, d, generator=g, dtype=F64) / math.sqrt(d)
    z = torch.randn(*batch, n, d, generator=g, dtype=F64)
    return z @ mix + torch.randn(*batch, 1, d, generator=g, dtype=F64) + shift


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


# ----------------------------------------------------------------------------- import


def test_lean_import() -> None:
    assert_lean_import("paperbricks.core_kernels.stats")


def test_no_scipy_or_sklearn_at_module_level() -> None:
    # scipy and scikit-learn are test-only (scipy: an optional extra imported inside a function).
    pkg = Path(stats_pkg.__file__).parent
    for path in sorted(pkg.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("scipy", "sklearn") for n in names), (
                path.name,
                names,
            )


# ----------------------------------------------------------------------------- moments


def test_streaming_equals_in_memory() -> None:
    x = _samples(203, 7, seed=1, batch=(3,), shift=50.0)  # (L, N, D), large mean
    m = StreamingMoments(7, batch_shape=(3,))
    for chunk in x.to(torch.float32).split([1, 50, 100, 52], dim=-2):
        m.update(chunk)
    x32 = x.to(torch.float32).to(F64)
    assert m.n == 203
    assert_close("mean", x32.mean(dim=-2), m.mean, ratio=1e-12)
    ref = torch.stack([torch.cov(layer.T) for layer in x32])
    assert_close("cov", ref, m.cov, ratio=1e-9)


def test_streaming_merge_with_different_shifts() -> None:
    x = _samples(120, 5, seed=2, shift=10.0)
    a = StreamingMoments(5).update(x[:70])
    b = StreamingMoments(5, shift=x[70]).update(x[70:])
    whole = StreamingMoments(5).update(x)
    merged = a + b
    assert merged.n == 120
    assert_close("mean", whole.mean, merged.mean, ratio=1e-12)
    assert_close("cov", whole.cov, merged.cov, ratio=1e-11)
    assert_close("cov vs torch", torch.cov(x.T), merged.cov, ratio=1e-11)


def test_streaming_errors() -> None:
    m = StreamingMoments(4)
    with pytest.raises(ValueError, match="no samples"):
        _ = m.mean
    m.update(torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = m.cov
    with pytest.raises(ValueError, match="x: expected shape"):
        m.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        m.update(torch.tensor([[float("nan")] * 4]))
    with pytest.raises(ValueError, match="dim"):
        StreamingMoments(0)
    with pytest.raises(ValueError, match="other"):
        m.merge(StreamingMoments(3))
    with pytest.raises(ValueError, match="shift"):
        StreamingMoments(4, batch_shape=(2,), shift=torch.zeros(3, 4))


# ----------------------------------------------------------------------------- Fréchet


@pytest.mark.parametrize("method", METHODS)
def test_fd_self_is_zero(method: str) -> None:
    x = _samples(40, 12, seed=3)
    assert abs(float(frechet_distance(x, x, method=method))) < 1e-9


@pytest.mark.parametrize("method", ("eigh", "eigvals", "sqrtm"))
def test_fd_isotropic_closed_form(method: str) -> None:
    d = 10
    g = _gen(4)
    mu1, mu2 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    s1, s2 = 0.7, 2.3
    eye = torch.eye(d, dtype=F64)
    got = frechet_distance((mu1, s1**2 * eye), (mu2, s2**2 * eye), method=method)
    want = float((mu1 - mu2).square().sum()) + d * (s1 - s2) ** 2
    assert abs(float(got) - want) < 1e-10 * want


@pytest.mark.parametrize("method", METHODS)
def test_fd_rotation_translation_invariance(method: str) -> None:
    x, y = _samples(60, 9, seed=5), _samples(80, 9, seed=6)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=_gen(7), dtype=F64))
    t = 5 * torch.randn(9, generator=_gen(8), dtype=F64)
    base = frechet_distance(x, y, method=method)
    moved = frechet_distance(x @ q.T + t, y @ q.T + t, method=method)
    assert _rel(moved, base) < 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_fd_scaling(method: str) -> None:
    x, y = _samples(30, 20, seed=9), _samples(25, 20, seed=10)  # n < d, the gram regime
    base = frechet_distance(x, y, method=method)
    assert _rel(frechet_distance(3 * x, 3 * y, method=method), 9 * base) < 1e-9


@pytest.mark.parametrize(("n", "d"), [(40, 64), (300, 16)])
def test_fd_methods_agree(n: int, d: int) -> None:
    x, y = _samples(n, d, seed=11), _samples(n + 7, d, seed=12)
    ref = frechet_distance(x, y, method="eigh")
    assert float(ref) > 0
    for method in ("gram", "eigvals", "sqrtm", "auto"):
        assert _rel(frechet_distance(x, y, method=method), ref) < 1e-6, method


def test_fd_matches_scipy_formula() -> None:
    x, y = _samples(200, 15, seed=13), _samples(150, 15, seed=14)
    xn, yn = x.numpy(), y.numpy()
    ca, cb = np.cov(xn, rowvar=False), np.cov(yn, rowvar=False)
    want = (
        np.sum((xn.mean(0) - yn.mean(0)) ** 2)
        + np.trace(ca)
        + np.trace(cb)
        - 2 * np.trace(scipy.linalg.sqrtm(ca @ cb)).real
    )
    assert abs(float(frechet_distance(x, y)) - want) < 1e-9 * abs(want)


def test_trace_sqrt_product_vs_scipy_sqrtm() -> None:
    g = _gen(15)
    a = torch.randn(3, 12, 30, generator=g, dtype=F64)
    b = torch.randn(3, 12, 30, generator=g, dtype=F64)
    sa, sb = a @ a.transpose(-1, -2) / 30, b @ b.transpose(-1, -2) / 30  # (3, 12, 12) PSD
    want = torch.tensor(
        [np.trace(scipy.linalg.sqrtm(p)).real for p in (sa @ sb).numpy()], dtype=F64
    )
    for method in ("eigh", "eigvals", "sqrtm"):
        assert_close(method, want, trace_sqrt_product(sa, sb, method=method), ratio=1e-10)


def test_trace_sqrt_product_known_value_and_singular() -> None:
    sa = torch.diag(torch.tensor([4.0, 9.0, 0.0], dtype=F64))
    sb = torch.diag(torch.tensor([1.0, 4.0, 5.0], dtype=F64))
    assert float(trace_sqrt_product(sa, sb)) == pytest.approx(2.0 + 6.0, abs=1e-12)
    # Rank-deficient covariances (n < d) have rounding-level negative eigenvalues: no error.
    x = torch.randn(5, 30, generator=_gen(16), dtype=F64)
    c = torch.cov(x.T)
    assert float(trace_sqrt_product(c, c)) == pytest.approx(float(c.trace()), rel=1e-9)


def test_trace_sqrt_product_gram_equals_cov() -> None:
    a, b = _samples(10, 40, seed=17), _samples(14, 40, seed=18)
    want = trace_sqrt_product(torch.cov(a.T), torch.cov(b.T), method="eigh")
    assert _rel(trace_sqrt_product(a, b, method="gram"), want) < 1e-9


def test_fd_batched_over_layers_equals_loop() -> None:
    x = _samples(30, 8, seed=19, batch=(4,))
    y = _samples(45, 8, seed=20, batch=(4,))
    for method in METHODS:
        got = frechet_distance(x, y, method=method)
        assert got.shape == (4,)
        want = torch.stack([frechet_distance(x[i], y[i], method=method) for i in range(4)])
        assert_close(method, want, got, ratio=1e-12)


def test_fd_from_moments_equals_samples() -> None:
    x, y = _samples(90, 6, seed=21, batch=(2,)), _samples(70, 6, seed=22, batch=(2,))
    mx = StreamingMoments(6, batch_shape=(2,))
    for chunk in x.split(25, dim=-2):
        mx.update(chunk)
    my = StreamingMoments(6, batch_shape=(2,)).update(y)
    assert_close("fd", frechet_distance(x, y), frechet_distance(mx, my), ratio=1e-10)
    assert_close(
        "fd pair", frechet_distance(x, y), frechet_distance(x, (my.mean, my.cov)), ratio=1e-10
    )


def test_fd_input_dtypes() -> None:
    x, y = _samples(50, 6, seed=23), _samples(50, 6, seed=24)
    got = frechet_distance(x.float(), y.float())
    assert got.dtype == F64
    want = frechet_distance(x.float().double(), y.float().double())
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_fd_errors() -> None:
    x = torch.randn(10, 4, dtype=F64)
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="D differs"):
        frechet_distance(x, torch.randn(10, 5, dtype=F64))
    with pytest.raises(ValueError, match="D differs"):
        frechet_distance(x, torch.randn(10, 5, dtype=F64), method="gram")
    with pytest.raises(ValueError, match="method"):
        frechet_distance(x, x, method="newton")
    with pytest.raises(ValueError, match="gram"):
        frechet_distance(StreamingMoments(4).update(x), x, method="gram")
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((3, 4), float("nan")), x)
    with pytest.raises(ValueError, match="positive semi-definite"):
        trace_sqrt_product(-torch.eye(4, dtype=F64), torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="b: expected a positive semi-definite"):
        trace_sqrt_product(torch.eye(4, dtype=F64), torch.diag(torch.tensor([1.0, 2.0, -1.0, 3.0])))
    with pytest.raises(ValueError, match="square"):
        trace_sqrt_product(torch.ones(3, 4), torch.ones(3, 4))
    with pytest.raises(TypeError, match="x"):
        frechet_distance(x.numpy(), x)


# ----------------------------------------------------------------------------- ranks, AUC, spearman


def test_rankdata_vs_scipy() -> None:
    x = torch.randint(0, 6, (4, 33), generator=_gen(25)).to(F64)  # many ties
    want = np.stack([scipy.stats.rankdata(row) for row in x.numpy()])
    assert_close("ranks", torch.from_numpy(want), rankdata(x), ratio=0.0)
    assert rankdata(torch.tensor([3.0])).tolist() == [1.0]


def test_roc_auc_vs_sklearn_with_ties_batched() -> None:
    g = _gen(26)
    labels = torch.randint(0, 2, (5, 200), generator=g)
    scores = torch.round(2 * torch.randn(5, 200, generator=g) + labels, decimals=0)  # heavy ties
    got = roc_auc(scores, labels)
    scores_np = scores.numpy()
    want = torch.tensor(
        [roc_auc_score(lab, sc) for lab, sc in zip(labels.numpy(), scores_np, strict=True)],
        dtype=F64,
    )
    assert_close("auc", want, got, ratio=1e-12)
    shared = roc_auc(scores, labels[0].bool())  # one label vector for every row
    want0 = torch.tensor([roc_auc_score(labels[0].numpy(), sc) for sc in scores_np], dtype=F64)
    assert_close("auc shared labels", want0, shared, ratio=1e-12)


def test_roc_auc_known_values() -> None:
    assert float(roc_auc(torch.ones(6), torch.tensor([0, 1, 0, 1, 1, 0]))) == 0.5
    assert float(roc_auc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))) == 1.0
    assert float(roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0.0, 0.0, 1.0]))) == 0.0


def test_roc_auc_errors() -> None:
    with pytest.raises(ValueError, match="one positive and one negative"):
        roc_auc(torch.randn(4), torch.ones(4))
    with pytest.raises(ValueError, match="binary"):
        roc_auc(torch.randn(4), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="last dimension"):
        roc_auc(torch.randn(4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))


def test_spearman_vs_scipy_with_ties() -> None:
    g = _gen(27)
    a = torch.randint(0, 5, (3, 50), generator=g).to(F64)
    b = torch.round(a + torch.randn(3, 50, generator=g, dtype=F64))
    got = spearman(a, b)
    want = torch.tensor(
        [scipy.stats.spearmanr(u, v).statistic for u, v in zip(a.numpy(), b.numpy(), strict=True)],
        dtype=F64,
    )
    assert_close("spearman", want, got, ratio=1e-12)
    assert torch.isnan(spearman(torch.ones(5), torch.arange(5.0)))
    with pytest.raises(ValueError, match="last dimensions differ"):
        spearman(torch.randn(4), torch.randn(5))


# ----------------------------------------------------------------------------- intervals


def test_wilson_known_value() -> None:
    lo, hi = binomial_ci(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6)
    assert hi == pytest.approx(0.763407, abs=1e-6)
    # By hand at k = 0: centre = half = z²/(2n) / (1 + z²/n), so the lower bound is 0.
    z = 1.959963984540054
    lo0, hi0 = binomial_ci(0, 20)
    assert lo0 == pytest.approx(0.0, abs=1e-15)
    assert hi0 == pytest.approx((z * z / 20) / (1 + z * z / 20), rel=1e-12)


def test_binomial_ci_tensors_and_levels() -> None:
    k, n = torch.tensor([0, 3, 7, 10]), torch.tensor(10)
    lo, hi = binomial_ci(k, n, level=0.9)
    assert lo.shape == (4,) and bool((lo <= k / 10).all()) and bool((hi >= k / 10).all())
    lo95, hi95 = binomial_ci(k, n)
    # Wider at a higher level (up to rounding at k = 0 and k = n, where a bound is 0 or 1).
    assert bool((lo95 <= lo + 1e-12).all()) and bool((hi95 >= hi - 1e-12).all())
    assert bool((lo95[1:3] < lo[1:3]).all()) and bool((hi95[1:3] > hi[1:3]).all())


def test_clopper_pearson_vs_scipy() -> None:
    for k, n in [(0, 12), (1, 12), (5, 10), (37, 100), (100, 100), (3, 1000)]:
        lo, hi = binomial_ci(k, n, method="clopper-pearson")
        want_lo = 0.0 if k == 0 else scipy.stats.beta.ppf(0.025, k, n - k + 1)
        want_hi = 1.0 if k == n else scipy.stats.beta.ppf(0.975, k + 1, n - k)
        assert lo == pytest.approx(want_lo, abs=1e-12, rel=1e-9)
        assert hi == pytest.approx(want_hi, abs=1e-12, rel=1e-9)
    # Closed form at k = 0: the upper bound is 1 − (α/2)^{1/n}.
    assert binomial_ci(0, 12, method="clopper-pearson")[1] == pytest.approx(
        1 - 0.025 ** (1 / 12), rel=1e-12
    )


def test_regularized_beta_vs_scipy() -> None:
    for a, b in [(0.5, 0.5), (1.0, 3.0), (2.5, 7.0), (40.0, 61.0), (300.0, 5.0)]:
        for x in (1e-6, 0.01, 0.2, 0.5, 0.77, 0.999):
            assert regularized_beta(x, a, b) == pytest.approx(
                scipy.special.betainc(a, b, x), rel=1e-10, abs=1e-14
            )
        q = beta_quantile(0.3, a, b)
        assert q == pytest.approx(scipy.stats.beta.ppf(0.3, a, b), rel=1e-9)


def test_binomial_ci_errors() -> None:
    with pytest.raises(ValueError, match="k"):
        binomial_ci(11, 10)
    with pytest.raises(ValueError, match="n"):
        binomial_ci(0, 0)
    with pytest.raises(ValueError, match="level"):
        binomial_ci(1, 10, level=1.5)
    with pytest.raises(ValueError, match="method"):
        binomial_ci(1, 10, method="agresti")
    with pytest.raises(TypeError, match="k"):
        binomial_ci(1.5, 10)


def test_bootstrap_percentiles_match_manual() -> None:
    x = torch.randn(300, generator=_gen(28), dtype=F64)
    res = bootstrap(lambda v: v.mean(), x, n=500, seed=3)
    idx = torch.randint(300, (500, 300), generator=torch.Generator().manual_seed(3))
    means = x[idx].mean(dim=1).numpy()
    assert float(res.estimate) == pytest.approx(float(x.mean()), rel=1e-15)
    assert float(res.low) == pytest.approx(np.percentile(means, 2.5), rel=1e-12)
    assert float(res.high) == pytest.approx(np.percentile(means, 97.5), rel=1e-12)
    # The percentile CI of a mean is close to the normal one, mean ± 1.96·s/√N.
    half = 1.96 * float(x.std()) / math.sqrt(300)
    assert float(res.high - res.low) == pytest.approx(2 * half, rel=0.15)


def test_bootstrap_batched_equals_loop_and_pairs() -> None:
    g = _gen(29)
    labels = torch.randint(0, 2, (150,), generator=g)
    labels[:2] = torch.tensor([0, 1])
    scores = torch.randn(150, generator=g) + labels
    # Resamples that miss a class cannot happen at this size with this seed (checked by the loop).
    loop = bootstrap(lambda s, y: roc_auc(s, y), (scores, labels), n=200, seed=7)
    batched = bootstrap(roc_auc, (scores, labels), n=200, seed=7, batched=True)
    for a, b in zip(loop, batched, strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-12)
    assert float(loop.estimate) == pytest.approx(float(roc_auc(scores, labels)))
    again = bootstrap(roc_auc, (scores, labels), n=200, seed=7, batched=True)
    assert float(again.low) == float(batched.low)


def test_bootstrap_float_statistic_keeps_float64() -> None:
    x = 1 + 1e-9 * torch.arange(50, dtype=F64)
    res = bootstrap(lambda v: float(v.mean()), x, n=20, seed=0)
    assert res.estimate.dtype == F64
    assert float(res.estimate) == float(x.mean())  # float32 would round 1 + 2.45e-8 to 1


def test_bootstrap_errors() -> None:
    x = torch.randn(10)
    with pytest.raises(ValueError, match="n:"):
        bootstrap(torch.mean, x, n=1)
    with pytest.raises(ValueError, match="leading dimension"):
        bootstrap(lambda a, b: a.mean(), (x, torch.randn(9)))
    with pytest.raises(ValueError, match="batched=True"):
        bootstrap(torch.mean, x, n=5, batched=True)
    with pytest.raises(ValueError, match="seed"):
        bootstrap(torch.mean, x, seed=None)


# ----------------------------------------------------------------------------- logistic probes


def _probe_data(p: int, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-conditioned, non-separable synthetic probes: (P, N, D) features and (P, N) labels."""
    g = _gen(seed)
    x = torch.randn(p, n, d, generator=g, dtype=F64)
    w = torch.randn(p, d, generator=g, dtype=F64)
    logits = torch.einsum("pnd,pd->pn", x, w) + 0.5
    y = (torch.rand(p, n, generator=g, dtype=F64) < torch.sigmoid(logits)).long()
    return x, y


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fit_logistic_matches_sklearn(solver: str, fit_intercept: bool) -> None:
    x, y = _probe_data(3, 150, 6, seed=30)
    fit = fit_logistic(x, y, C=1.0, fit_intercept=fit_intercept, solver=solver, max_iter=500)
    assert fit.solver == solver and bool(fit.converged.all())
    assert fit.coef.shape == (3, 6) and fit.intercept.shape == (3,)
    for i in range(3):
        sk = LogisticRegression(C=1.0, tol=1e-8, max_iter=10000, fit_intercept=fit_intercept)
        sk.fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(fit.coef[i].numpy(), sk.coef_[0], atol=1e-4)
        np.testing.assert_allclose(float(fit.intercept[i]), sk.intercept_[0], atol=1e-4)
        acc = float(fit.score(x, y)[i])
        assert acc == pytest.approx(sk.score(x[i].numpy(), y[i].numpy()), abs=1e-12)
        np.testing.assert_allclose(
            fit.predict_proba(x)[i].numpy(), sk.predict_proba(x[i].numpy())[:, 1], atol=1e-5
        )


def test_fit_logistic_solvers_agree_and_c() -> None:
    x, y = _probe_data(4, 120, 5, seed=31)
    y_shared = y[0]
    a = fit_logistic(x, y_shared, C=0.3, solver="newton")
    b = fit_logistic(x, y_shared, C=0.3, solver="lbfgs", max_iter=500)
    assert_close("coef", a.coef, b.coef, ratio=1e-6)
    assert_close("intercept", a.intercept, b.intercept, ratio=1e-6)
    # Stationarity of sklearn's objective: w = −C·Xᵀ(p − y) and Σ(p − y) = 0.
    resid = a.predict_proba(x) - y_shared.to(F64)
    assert_close("w", -0.3 * torch.einsum("pnd,pn->pd", x, resid), a.coef, ratio=1e-8)
    assert float(resid.sum(dim=-1).abs().max()) < 1e-6
    sk = LogisticRegression(C=0.3, tol=1e-8, max_iter=10000).fit(x[2].numpy(), y_shared.numpy())
    np.testing.assert_allclose(a.coef[2].numpy(), sk.coef_[0], atol=1e-4)


def test_fit_logistic_batched_equals_single() -> None:
    x, y = _probe_data(3, 80, 4, seed=32)
    batched = fit_logistic(x.float(), y)
    for i in range(3):
        single = fit_logistic(x[i].float(), y[i])
        assert single.coef.shape == (1, 4)
        assert_close(f"coef {i}", single.coef[0], batched.coef[i], ratio=1e-9)


def test_fit_logistic_nonconvergence_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    x, y = _probe_data(2, 100, 5, seed=33)
    fit = fit_logistic(x, y, solver="newton", max_iter=1)
    assert not bool(fit.converged.all())
    assert "did not reach" in caplog.text


def test_fit_logistic_errors() -> None:
    x, y = _probe_data(2, 20, 3, seed=34)
    with pytest.raises(ValueError, match="y: expected shape"):
        fit_logistic(x, y[:, :10])
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x, torch.ones(20))
    with pytest.raises(ValueError, match="binary"):
        fit_logistic(x, torch.full((20,), 2))
    with pytest.raises(ValueError, match="C"):
        fit_logistic(x, y, C=0.0)
    with pytest.raises(ValueError, match="solver"):
        fit_logistic(x, y, solver="saga")
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_logistic(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match="x: expected shape"):
        fit_logistic(x[None], y)
    fit = fit_logistic(x, y)
    with pytest.raises(ValueError, match="x: expected shape"):
        fit.predict_proba(torch.randn(5, 4))


# ----------------------------------------------------------------------------- GPU


@requires_cuda
def test_gpu_frechet_matches_cpu() -> None:
    x = _samples(256, 512, seed=40, batch=(2,)).float()
    y = _samples(300, 512, seed=41, batch=(2,)).float()
    cpu = frechet_distance(x, y, method="gram")
    for method in ("eigh", "gram", "eigvals"):
        got = frechet_distance(x.cuda(), y.cuda(), method=method)
        assert got.device.type == "cuda" and got.dtype == F64
        assert _rel(got.cpu(), cpu) < 1e-6, method
    m = StreamingMoments(512, batch_shape=(2,), device="cuda")
    for chunk in x.cuda().split(100, dim=-2):
        m.update(chunk)
    assert_close(
        "cov cuda", torch.stack([torch.cov(v.double().T) for v in x]), m.cov.cpu(), ratio=1e-9
    )


@requires_cuda
def test_gpu_rank_stats_match_cpu() -> None:
    g = _gen(42)
    labels = torch.randint(0, 2, (16, 4096), generator=g)
    scores = torch.round(torch.randn(16, 4096, generator=g) + labels, decimals=1).to(torch.bfloat16)
    assert_close(
        "auc", roc_auc(scores, labels), roc_auc(scores.cuda(), labels.cuda()).cpu(), ratio=1e-12
    )
    a = torch.randn(8, 1000, generator=g).half()
    b = (a.float() + torch.randn(8, 1000, generator=g)).half()
    assert_close("spearman", spearman(a, b), spearman(a.cuda(), b.cuda()).cpu(), ratio=1e-12)


@requires_cuda
def test_gpu_fit_logistic_matches_cpu() -> None:
    x, y = _probe_data(8, 2000, 64, seed=43)
    cpu = fit_logistic(x.float(), y, solver="newton")
    for solver in ("newton", "lbfgs"):
        gpu = fit_logistic(x.float().cuda(), y.cuda(), solver=solver, max_iter=1000)
        assert bool(gpu.converged.all()), solver
        assert_close(f"coef {solver}", cpu.coef, gpu.coef.cpu(), ratio=1e-6)

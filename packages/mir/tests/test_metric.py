"""The MIR metric over in-memory states: Fréchet distance laws, normalisation, outliers, MIR."""

import math

import numpy as np
import pytest
import torch

from paperbricks.core_kernels.testing import assert_close, assert_lean_import, requires_cuda
from paperbricks.mir.metric import (
    MIRResult,
    frechet_distance,
    modality_integration_rate,
    official_fast_frechet,
    replace_outliers,
    text_centric_normalize,
)

EXACT = ("eigh", "gram", "eigvals", "sqrtm")
F64 = torch.float64


def _samples(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
    return scale * torch.randn(n, d, generator=g, dtype=F64) @ mix + shift


def _rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


# --------------------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("method", EXACT)
def test_fd_of_a_set_with_itself_is_zero(method):
    x = _samples(40, 6, 0, shift=2.0)
    scale = float(x.var(dim=0).sum())
    assert abs(float(frechet_distance(x, x, method=method))) <= 1e-8 * scale


@pytest.mark.parametrize("method", ("eigh", "eigvals", "sqrtm"))
def test_fd_closed_form_isotropic_gaussians(method):
    d = 5
    mu1 = torch.linspace(-1, 1, d, dtype=F64)
    mu2 = torch.linspace(0.5, 2, d, dtype=F64)
    s1, s2 = 0.7, 1.9
    a = (mu1, s1**2 * torch.eye(d, dtype=F64))
    b = (mu2, s2**2 * torch.eye(d, dtype=F64))
    want = float((mu1 - mu2).square().sum()) + d * (s1 - s2) ** 2
    assert _rel(frechet_distance(a, b, method=method), want) < 1e-12


def test_fd_closed_form_commuting_covariances():
    lam_a = torch.tensor([4.0, 1.0, 0.25], dtype=F64)
    lam_b = torch.tensor([1.0, 9.0, 0.0], dtype=F64)  # a singular covariance is fine
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(1)))
    a = (torch.zeros(3, dtype=F64), q @ torch.diag(lam_a) @ q.T)
    b = (torch.ones(3, dtype=F64), q @ torch.diag(lam_b) @ q.T)
    want = 3.0 + float((lam_a.sqrt() - lam_b.sqrt()).square().sum())
    assert _rel(frechet_distance(a, b), want) < 1e-10


@pytest.mark.parametrize("method", EXACT)
def test_fd_invariant_to_common_rotation_and_translation(method):
    x, y = _samples(30, 8, 2), _samples(25, 8, 3, scale=1.5, shift=0.3)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=F64, generator=torch.Generator().manual_seed(4)))
    c = torch.arange(8, dtype=F64)
    ref = frechet_distance(x, y, method=method)
    moved = frechet_distance(x @ q + c, y @ q + c, method=method)
    assert _rel(moved, ref) < 1e-8


@pytest.mark.parametrize("method", EXACT)
@pytest.mark.parametrize("s", (3.0, 0.1))
def test_fd_scale_law(method, s):
    x, y = _samples(30, 8, 5), _samples(20, 8, 6, scale=2.0, shift=1.0)
    ref = frechet_distance(x, y, method=method)
    assert _rel(frechet_distance(s * x, s * y, method=method), s * s * ref) < 1e-8


def test_official_fast_is_its_formula_and_breaks_the_scale_law():
    x, y = _samples(60, 6, 7, scale=1.3), _samples(50, 6, 8, scale=0.8, shift=0.5)
    # the explicit formula, computed independently in numpy
    xn, yn = x.numpy(), y.numpy()
    ca, cb = np.cov(xn, rowvar=False), np.cov(yn, rowvar=False)
    dmu = xn.mean(0) - yn.mean(0)
    want = dmu @ dmu + np.trace(ca) + np.trace(cb) - 2 * np.trace(ca @ cb)
    with pytest.warns(RuntimeWarning, match="official"):
        got = frechet_distance(x, y, method="official_fast")
    assert _rel(got, want) < 1e-10
    s = 3.0
    scaled = official_fast_frechet(s * x, s * y)
    exact, exact_scaled = frechet_distance(x, y), frechet_distance(s * x, s * y)
    assert _rel(exact_scaled, s * s * exact) < 1e-10
    # the cross term scales with s⁴: FD_fast(sX, sY) = s²·(‖Δμ‖² + trΣx + trΣy) − 2s⁴·tr(ΣxΣy)
    want_scaled = s**2 * (dmu @ dmu + np.trace(ca) + np.trace(cb)) - 2 * s**4 * np.trace(ca @ cb)
    assert _rel(scaled, want_scaled) < 1e-10
    assert _rel(scaled, s * s * got) > 1e-2  # violates the scale law


def test_exact_methods_agree_and_match_a_scipy_sqrtm_oracle():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    x, y = _samples(12, 20, 9), _samples(15, 20, 10, scale=1.4, shift=0.2)  # n < d: gram path
    vals = {m: float(frechet_distance(x, y, method=m)) for m in EXACT}
    xn, yn = x.numpy(), y.numpy()
    ca, cb = np.cov(xn, rowvar=False), np.cov(yn, rowvar=False)
    dmu = xn.mean(0) - yn.mean(0)
    root = scipy_linalg.sqrtm(ca @ cb)
    oracle = dmu @ dmu + np.trace(ca) + np.trace(cb) - 2 * np.trace(root).real
    for m, v in vals.items():
        assert _rel(v, vals["eigh"]) < 1e-6, (m, v, vals["eigh"])
        assert _rel(v, oracle) < 1e-6, (m, v, oracle)


def test_frechet_distance_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        frechet_distance(_samples(5, 2, 0), _samples(5, 2, 1), method="fast")


# --------------------------------------------------------------------------- normalisation


def test_text_centric_normalize_makes_mean_text_norm_one():
    v, t = _samples(20, 4, 11, scale=5.0), _samples(30, 4, 12, scale=7.0, shift=3.0)
    v2, t2, s = text_centric_normalize(v, t)
    assert abs(float(t2.norm(dim=-1).mean()) - 1.0) < 1e-12
    assert_close("v", s * v, v2)
    assert abs(float(s) - 1.0 / float(t.norm(dim=-1).mean())) < 1e-15


def test_text_centric_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="t"):
        text_centric_normalize(torch.ones(3, 2), torch.ones(0, 2))
    with pytest.raises(ValueError, match="v, t"):
        text_centric_normalize(torch.ones(3, 2), torch.ones(3, 5))
    with pytest.raises(ValueError, match="mean text-row norm is 0"):
        text_centric_normalize(torch.ones(3, 2), torch.zeros(3, 2))


# --------------------------------------------------------------------------- outliers


def _col(values):
    return torch.tensor(values, dtype=F64).unsqueeze(-1)  # (N, 1): norms are |value|


def test_outlier_tie_at_exactly_three_sigma_is_kept():
    x = _col([0.0] * 8 + [3.0])  # median 0, std exactly 1.0: |3 − 0| == 3σ
    assert float(x.norm(dim=-1).std()) == 1.0
    y, mask = replace_outliers(x)
    assert not bool(mask.any())
    assert torch.equal(y, x)


def test_outlier_beyond_three_sigma_is_replaced_by_the_median_row():
    x = _col([0.0] * 9 + [10.0])  # ratio √10 > 3
    y, mask = replace_outliers(x)
    assert mask.tolist() == [False] * 9 + [True]
    assert float(y[-1, 0]) == 0.0
    x8 = _col([0.0] * 7 + [10.0])  # ratio √8 < 3: kept
    assert not bool(replace_outliers(x8)[1].any())


def test_outlier_even_count_uses_the_lower_median():
    x = _col([0.0] * 5 + [1.0] * 4 + [3.0])
    # lower median 0: |3 − 0| = 3 > 3σ ≈ 2.846; with the averaged median 0.5 it would be kept
    sd = float(x.norm(dim=-1).std())
    assert 3.0 > 3 * sd > 2.5
    _, mask = replace_outliers(x)
    assert mask.tolist() == [False] * 9 + [True]


def test_replacement_row_is_the_coordinatewise_lower_median():
    rows = [[1.0, 4.0], [2.0, 3.0], [3.0, 2.0], [4.0, 1.0]] * 3 + [[90.0, 90.0]]
    x = torch.tensor(rows, dtype=F64)  # 13 rows: lower median = 7th smallest per column
    y, mask = replace_outliers(x)
    assert mask.tolist() == [False] * 12 + [True]
    med = np.sort(x.numpy(), axis=0)[(x.shape[0] - 1) // 2]
    assert y[-1].tolist() == med.tolist()
    x_even = x[1:]  # 12 rows, even: the lower of the two middle values
    y_even, mask_even = replace_outliers(x_even)
    assert mask_even.tolist() == [False] * 11 + [True]
    assert y_even[-1].tolist() == np.sort(x_even.numpy(), axis=0)[5].tolist()
    assert x[-1, 0] == 90.0  # input untouched


@pytest.mark.parametrize("seed", range(4))
def test_replace_outliers_matches_a_numpy_oracle(seed):
    g = np.random.default_rng(seed)
    n = 50 + seed  # odd and even counts
    x = g.standard_t(df=2, size=(n, 3))  # heavy tails: some outliers
    norms = np.linalg.norm(x, axis=1)
    m = np.sort(norms)[(n - 1) // 2]
    mask = np.abs(norms - m) > 3 * norms.std(ddof=1)
    med = np.sort(x, axis=0)[(n - 1) // 2]
    want = np.where(mask[:, None], med[None, :], x)
    y, got = replace_outliers(torch.from_numpy(x))
    assert got.numpy().tolist() == mask.tolist()
    np.testing.assert_allclose(y.numpy(), want, rtol=0, atol=0)


def test_replace_outliers_rejects_bad_input():
    with pytest.raises(ValueError, match="x"):
        replace_outliers(torch.ones(0, 3))
    with pytest.raises(TypeError, match="x"):
        replace_outliers(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="sigma"):
        replace_outliers(torch.ones(4, 3), sigma=0)


# --------------------------------------------------------------------------- the metric


def _states(L=3, B=2, T=24, D=6, seed=0, outliers=True):
    g = torch.Generator().manual_seed(seed)
    hs = (
        torch.randn(L, B, T, D, generator=g, dtype=F64)
        * torch.arange(1, L + 1)[:, None, None, None]
    )
    vis = torch.zeros(B, T, dtype=torch.bool)
    vis[:, 2:12] = True
    txt = torch.zeros(B, T, dtype=torch.bool)
    txt[:, 12:] = True
    hs[:, :, 12:] += 2.0  # a modality gap
    if outliers:
        hs[:, 0, 4] *= 40.0  # a vision outlier per layer
        hs[:, 1, 20] *= 40.0  # a text outlier per layer
    return hs, vis, txt


def test_mir_is_log10_of_the_per_layer_sum_of_manual_fds():
    hs, vis, txt = _states()
    res = modality_integration_rate(hs, vis, txt)
    assert isinstance(res, MIRResult)
    assert res.layers == [0, 1, 2] and res.per_layer_fd.shape == (3,)
    assert abs(res.mir - math.log10(float(res.per_layer_fd.sum()))) < 1e-12
    for li in range(3):
        v, t = hs[li][vis], hs[li][txt]
        s = 1.0 / t.norm(dim=-1).mean()
        v, _ = replace_outliers(s * v)
        t, _ = replace_outliers(s * t)
        assert_close(f"fd{li}", frechet_distance(v, t), res.per_layer_fd[li], ratio=1e-12)
    assert res.n_outliers["vision"].tolist() == [1, 1, 1]
    assert res.n_outliers["text"].tolist() == [1, 1, 1]
    assert (res.n_vision, res.n_text) == (20, 24)


def test_mir_with_normalisation_is_s2_times_fd_of_unscaled_replaced_rows():
    hs, vis, txt = _states(seed=3)
    res = modality_integration_rate(hs, vis, txt)
    total = 0.0
    for li in range(hs.shape[0]):
        v, t = hs[li][vis], hs[li][txt]
        s = 1.0 / float(t.norm(dim=-1).mean())
        fd = float(frechet_distance(replace_outliers(v)[0], replace_outliers(t)[0]))
        assert abs(float(res.scales[li]) - s) < 1e-14
        total += s * s * fd
    assert abs(res.mir - math.log10(total)) < 1e-10


def test_mir_switches_and_input_forms():
    hs, vis, txt = _states(seed=4)
    full = modality_integration_rate(hs, vis, txt)
    as_list = modality_integration_rate(list(hs.unbind(0)), vis, txt)
    assert torch.equal(full.per_layer_fd, as_list.per_layer_fd)
    sub = modality_integration_rate(hs, vis, txt, layers=[2, 0])
    assert sub.layers == [2, 0]
    assert torch.equal(sub.per_layer_fd, full.per_layer_fd[[2, 0]])
    raw = modality_integration_rate(hs, vis, txt, normalize=False, outliers=False)
    assert torch.equal(raw.scales, torch.ones(3, dtype=F64))
    assert raw.n_outliers["vision"].sum() == 0
    want = frechet_distance(hs[1][vis], hs[1][txt])
    assert_close("raw", want, raw.per_layer_fd[1], ratio=1e-12)
    gram = modality_integration_rate(hs, vis, txt, method="gram")
    assert_close("gram", full.per_layer_fd, gram.per_layer_fd, ratio=1e-8)
    d = full.to_dict()
    assert d["mir"] == full.mir and len(d["per_layer_fd"]) == 3


def test_mir_official_fast_negative_sum_gives_nan_with_warning():
    hs, vis, txt = _states(seed=5, outliers=False)
    hs = 3.0 * hs  # variances > 1: tr Σ_V + tr Σ_T − 2 tr(Σ_V Σ_T) < 0
    with pytest.warns(RuntimeWarning):
        res = modality_integration_rate(hs, vis, txt, method="official_fast", normalize=False)
    assert bool((res.per_layer_fd < 0).all())
    assert math.isnan(res.mir)


def test_bad_masks_raise_clear_errors():
    hs, vis, txt = _states()
    empty = torch.zeros_like(vis)
    with pytest.raises(ValueError, match=r"vision_mask.*empty"):
        modality_integration_rate(hs, empty, txt)
    with pytest.raises(ValueError, match=r"text_mask.*empty"):
        modality_integration_rate(hs, vis, empty)
    with pytest.raises(ValueError, match=r"vision_mask: expected shape \(B, T\)"):
        modality_integration_rate(hs, vis[:, :-1], txt)
    with pytest.raises(ValueError, match="disjoint"):
        modality_integration_rate(hs, vis, vis | txt)
    with pytest.raises(TypeError, match=r"torch\.bool"):
        modality_integration_rate(hs, vis.int(), txt)
    with pytest.raises(ValueError, match="layers"):
        modality_integration_rate(hs, vis, txt, layers=[3])
    with pytest.raises(ValueError, match="layer_states"):
        modality_integration_rate(hs[0], vis, txt)
    with pytest.raises(ValueError, match="method"):
        modality_integration_rate(hs, vis, txt, method="fast")


def test_metric_import_is_lean():
    assert_lean_import("paperbricks.mir.compute")


@requires_cuda
def test_mir_on_cuda_bf16_states_matches_cpu_float64():
    hs, vis, txt = _states(L=4, B=4, T=300, D=64, seed=6)
    cpu = modality_integration_rate(hs.to(torch.bfloat16), vis, txt)
    gpu = modality_integration_rate(hs.to(torch.bfloat16).cuda(), vis.cuda(), txt.cuda())
    assert_close("per_layer", cpu.per_layer_fd, gpu.per_layer_fd, ratio=1e-8)
    assert abs(cpu.mir - gpu.mir) < 1e-8


def test_exact_method_picks_the_gram_path_when_rows_are_fewer_than_dimensions():
    hs, vis, txt = _states(D=6, seed=7)
    assert modality_integration_rate(hs, vis, txt).method == "eigh"  # 24 rows >= 6 dims
    wide, vis, txt = _states(D=40, seed=7)  # 20 vision / 24 text rows < 40 dims
    res = modality_integration_rate(wide, vis, txt)
    assert res.method == "gram"
    eigh = modality_integration_rate(wide, vis, txt, method="eigh")
    assert_close("exact vs eigh", eigh.per_layer_fd, res.per_layer_fd, ratio=1e-8)

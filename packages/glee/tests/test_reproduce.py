"""The registered reproduction returns a valid ReproResult at a tiny budget, and is registered."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from paperbricks.core_kernels.repro import ReproResult
from paperbricks.glee.reproduce import _finite_share, _spe_share, environment_effects


def test_environment_effects_tiny(tmp_path):
    res = environment_effects(seed=0, out_dir=tmp_path, quick=True, _budget="tiny")
    assert isinstance(res, ReproResult)
    # the sale-rate CI and the noisy imputation comparison are seed-noisy at this budget; the
    # verdict rule itself is checked against the recorded checks
    assert res.verdict == (
        "reproduced" if all(res.metrics["checks"].values()) else "not reproduced"
    )
    checks = res.metrics["checks"]
    # the deterministic mechanics hold exactly at any budget
    for name in (
        "discount_share",
        "spe_efficient",
        "horizon",
        "negotiation_last_mover",
        "information_bargaining",
        "imputation_exact",
    ):
        assert checks[name], name
    assert res.metrics["impute_noiseless_max_err"] < 1e-8
    assert res.metrics["horizon_alice_share"]["delta=1.0,T=12"] == pytest.approx(0.0)
    assert res.metrics["horizon_alice_share"]["delta=1.0,T=99"] == pytest.approx(0.5)
    (fig,) = res.figures
    assert fig.parent == tmp_path and fig.stat().st_size > 10_000


def test_independent_oracles():
    assert _spe_share(0.9, 0.9) == pytest.approx(0.526316, abs=1e-6)
    assert _finite_share(1.0, 1.0, 12) == 0.0  # δ = 1, T even: Bob gets everything
    assert _finite_share(0.9, 0.9, 1) == 1.0
    assert _finite_share(0.9, 0.9, 2) == pytest.approx(0.1)
    assert _finite_share(0.9, 0.8, 400) == pytest.approx(_spe_share(0.9, 0.8))


def test_bad_budget(tmp_path):
    with pytest.raises(ValueError, match="_budget"):
        environment_effects(seed=0, out_dir=tmp_path, quick=True, _budget="huge")


def test_registered():
    eps = md.entry_points(group="paperbricks.reproductions")
    (ep,) = [e for e in eps if e.name == "glee.environment-effects"]
    assert ep.load() is environment_effects

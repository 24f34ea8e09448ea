"""Regression imputation recovers known effects from unbalanced subsamples; marginal effects."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from paperbricks.glee.analysis import marginal_effects, metric_table, regression_impute

LEVELS = {"delta": [0.8, 0.9, 0.95], "info": [True, False], "M": [100, 10_000, 1_000_000, 5]}


def _grid():
    keys = list(LEVELS)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*LEVELS.values())]


def _truth(interactions: bool, seed: int = 0):
    """Random main effects (+ pairwise interactions) per level; returns cell -> mean."""
    rng = np.random.default_rng(seed)
    main = {p: dict(zip(lv, rng.normal(size=len(lv)), strict=True)) for p, lv in LEVELS.items()}
    pair = {
        (p, q): {(a, b): rng.normal() for a in LEVELS[p] for b in LEVELS[q]}
        for p, q in itertools.combinations(LEVELS, 2)
    }

    def f(cell):
        y = 0.3 + sum(main[p][cell[p]] for p in LEVELS)
        if interactions:
            y += sum(tab[(cell[p], cell[q])] for (p, q), tab in pair.items())
        return y

    return f


def _unbalanced_sample(grid, frac, seed):
    """A random subset of cells, each repeated 1..6 times (an unbalanced design)."""
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(grid), size=round(frac * len(grid)), replace=False)
    return [grid[i] for i in keep for _ in range(int(rng.integers(1, 7)))]


def _identifiable_sample(grid, frac, interactions):
    """The first seeded unbalanced subsample whose design has full column rank."""
    for seed in range(200):
        cells = _unbalanced_sample(grid, frac, seed)
        res = regression_impute(
            [{"config": c, "y": 0.0} for c in cells], "y", grid, interactions=interactions
        )
        if res.rank == len(res.columns):
            return cells
    raise AssertionError("no full-rank subsample found")


def test_additive_effects_recovered_exactly_from_30_percent():
    grid, f = _grid(), _truth(interactions=False)
    # 24 cells, 30% observed = 7 cells for 7 additive columns
    cells = _identifiable_sample(grid, 0.3, interactions=False)
    res = regression_impute(
        [{"config": c, "y": f(c)} for c in cells], "y", grid, interactions=False
    )
    truth = np.array([f(c) for c in grid])
    np.testing.assert_allclose(res.predicted, truth, atol=1e-8, rtol=0)
    assert res.mean == pytest.approx(truth.mean(), abs=1e-8)
    # the raw mean of an unbalanced sample is biased; the imputed one is not
    assert abs(res.observed_mean - truth.mean()) > 1e-6


def test_pairwise_interactions_recovered_exactly_from_unbalanced_subsample():
    grid, f = _grid(), _truth(interactions=True)
    cells = _identifiable_sample(grid, 0.8, interactions=True)
    res = regression_impute([{"config": c, "y": f(c)} for c in cells], "y", grid)
    assert res.rank == len(res.columns) == 1 + 6 + (2 * 1 + 2 * 3 + 1 * 3)
    np.testing.assert_allclose(res.predicted, [f(c) for c in grid], atol=1e-8, rtol=0)
    # an additive-only fit cannot represent the truth
    add = regression_impute(
        [{"config": c, "y": f(c)} for c in cells], "y", grid, interactions=False
    )
    assert np.max(np.abs(add.predicted - [f(c) for c in grid])) > 1e-3


def test_noisy_recovery_and_marginal_effect_cis():
    grid, f = _grid(), _truth(interactions=True, seed=1)
    rng = np.random.default_rng(7)
    cells = [c for c in _identifiable_sample(grid, 0.8, interactions=True) for _ in range(40)]
    recs = [{"config": c, "y": f(c) + 0.05 * rng.normal()} for c in cells]
    res = regression_impute(recs, lambda r: r["y"], grid)
    truth = np.array([f(c) for c in grid])
    assert np.max(np.abs(res.predicted - truth)) < 0.1
    eff = marginal_effects(res)
    for p, lv in LEVELS.items():
        base = truth[[c[p] == lv[0] for c in grid]].mean()
        for row in eff[p]:
            true_effect = truth[[c[p] == row["level"] for c in grid]].mean() - base
            assert row["se"] > 0
            assert abs(row["effect"] - true_effect) < 5 * row["se"] + 1e-9


def test_marginal_effects_equal_truth_when_noise_free():
    grid, f = _grid(), _truth(interactions=True, seed=2)
    res = regression_impute([{"config": c, "y": f(c)} for c in grid], "y", grid)
    truth = np.array([f(c) for c in grid])
    eff = marginal_effects(res)
    assert [r["level"] for r in eff["M"]] == [10_000, 1_000_000, 5]
    for p, lv in LEVELS.items():
        base = truth[[c[p] == lv[0] for c in grid]].mean()
        for row in eff[p]:
            true_effect = truth[[c[p] == row["level"] for c in grid]].mean() - base
            assert row["effect"] == pytest.approx(true_effect, abs=1e-9)


def test_clip_nan_and_errors():
    grid = [{"a": a} for a in (0, 1)]
    recs = [
        {"config": {"a": 0}, "y": 2.0},
        {"config": {"a": 1}, "y": -1.0},
        {"config": {"a": 1}, "y": float("nan")},
    ]
    res = regression_impute(recs, "y", grid, clip=(0.0, 1.0))
    assert res.predicted.tolist() == [1.0, 0.0] and res.n_obs == 2
    with pytest.raises(ValueError, match="not in the grid"):
        regression_impute([{"config": {"a": 7}, "y": 1.0}], "y", grid)
    with pytest.raises(ValueError, match="grid"):
        regression_impute(recs, "y", [])
    with pytest.raises(ValueError, match="metric"):
        regression_impute(recs, "z", grid)
    with pytest.raises(ValueError, match="clip"):
        regression_impute(recs, "y", grid, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="level"):
        marginal_effects(res, level=1.5)


def test_metric_table_markdown():
    out = metric_table(
        [{"m": "a|b", "x": 0.5, "y": float("nan")}, {"m": "c", "x": 1}], ["m", "x", "y"]
    )
    assert out.splitlines() == [
        "| m | x | y |",
        "|---|---|---|",
        "| a\\|b | 0.500 | nan |",
        "| c | 1 |  |",
    ]

"""Regression imputation over the full parameter grid and per-parameter marginal effects.

GLEE's tables (arXiv 2410.05254, §2 "Aggregation"; official ``Metrics.complete_missing_groups``)
are not raw means: per metric, an OLS model with every game parameter as a categorical, plus all
pairwise interactions, is fitted to the games actually played and then *predicted on every cell of
the full grid*; the table entry is the mean of those predictions. This corrects for an unbalanced
design (some configurations played far more often than others).

Differences from the official code: no patsy formula; the design is built directly (treatment
coding, the base level is a parameter's first level in grid order) and solved with
``numpy.linalg.lstsq``, whose minimum-norm solution replaces "drop duplicated design columns" for
rank-deficient subsamples. Model identities are just more categorical parameters of the records'
``config``. Clipping to a metric's range is an explicit ``clip=(lo, hi)`` argument, never implicit.

Examples:
    >>> grid = [{"a": a, "b": b} for a in (0, 1) for b in ("x", "y", "z")]
    >>> recs = [{"config": g, "y": g["a"] + (g["b"] == "y")} for g in grid[:5]]
    >>> res = regression_impute(recs, "y", grid)
    >>> round(float(res.predicted[-1]), 6)  # the unobserved cell a=1, b="z"
    1.0
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _config_of(record: Any) -> Mapping[str, Any]:
    cfg = record.get("config") if isinstance(record, Mapping) else getattr(record, "config", None)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"records: each record needs a 'config' mapping, got {type(cfg).__name__}")
    return cfg


def _value_of(record: Any, metric: str | Callable[[Any], float]) -> float:
    if callable(metric):
        return float(metric(record))
    if isinstance(record, Mapping):
        if metric not in record:
            raise ValueError(f"metric: record has no key {metric!r}; keys are {sorted(record)}")
        return float(record[metric])
    if not hasattr(record, metric):
        raise ValueError(f"metric: record of type {type(record).__name__} has no {metric!r}")
    return float(getattr(record, metric))


@dataclass
class ImputationResult:
    """Outcome of :func:`regression_impute`.

    Attributes:
        params: the categorical parameters, in design order.
        levels: ``{param: [levels in grid order]}``; the first level is the baseline.
        cells: the grid cells (dicts), in the order of ``predicted``.
        predicted: (C,) float64, predicted metric per grid cell (clipped if ``clip`` was given).
        mean: the imputed mean over the grid (the paper's table entry).
        observed_mean: the raw mean over the records.
        columns: (P,) names of the design columns.
        coef: (P,) least-squares coefficients.
        cov: (P, P) coefficient covariance σ²(XᵀX)⁺ (NaN when there are no residual dof).
        rank: rank of the design; n_obs: number of records used.
    """

    params: list[str]
    levels: dict[str, list[Any]]
    cells: list[dict[str, Any]]
    predicted: np.ndarray
    mean: float
    observed_mean: float
    columns: list[str]
    coef: np.ndarray
    cov: np.ndarray
    rank: int
    n_obs: int
    interactions: bool = True
    _design: np.ndarray = field(default=None, repr=False)  # (C, P) design of the grid cells


def _design(
    configs: Sequence[Mapping[str, Any]],
    params: list[str],
    levels: dict[str, list[Any]],
    interactions: bool,
) -> tuple[np.ndarray, list[str]]:
    """One-hot design with intercept, main effects and pairwise interactions. (N, P)."""
    n = len(configs)
    cols = [np.ones(n)]
    names = ["intercept"]
    dummies: dict[str, list[tuple[str, np.ndarray]]] = {}
    for p in params:
        idx = {lv: i for i, lv in enumerate(levels[p])}
        codes = np.empty(n, dtype=np.int64)
        for r, cfg in enumerate(configs):
            if p not in cfg:
                raise ValueError(f"records: config {dict(cfg)} lacks grid parameter {p!r}")
            if cfg[p] not in idx:
                raise ValueError(
                    f"records: parameter {p!r} has level {cfg[p]!r} not in the grid {levels[p]}"
                )
            codes[r] = idx[cfg[p]]
        dummies[p] = [
            (f"{p}={lv}", (codes == i).astype(np.float64))
            for i, lv in enumerate(levels[p])
            if i > 0
        ]
        for name, col in dummies[p]:
            names.append(name)
            cols.append(col)
    if interactions:
        for p, q in itertools.combinations(params, 2):
            for (na, ca), (nb, cb) in itertools.product(dummies[p], dummies[q]):
                names.append(f"{na}:{nb}")
                cols.append(ca * cb)
    return np.stack(cols, axis=1), names


def regression_impute(
    records: Iterable[Any],
    metric: str | Callable[[Any], float],
    grid: Iterable[Mapping[str, Any]],
    *,
    params: Sequence[str] | None = None,
    interactions: bool = True,
    clip: tuple[float, float] | None = None,
) -> ImputationResult:
    """Fit categorical OLS with pairwise interactions and predict the metric on the full grid.

    Args:
        records: game records with a ``config`` mapping (parameter -> level) and the metric.
        metric: a record key/attribute name, or a callable ``record -> float`` (for example
            ``lambda r: metrics.efficiency(r)``). Records whose value is NaN are dropped.
        grid: every configuration to predict (dicts of parameter -> level); levels must be hashable.
        params: parameters to model; default every key of the first grid cell, in order.
        interactions: include all pairwise interactions (default True, as in GLEE).
        clip: optional ``(lo, hi)`` range the predictions are clipped to (GLEE clips to the
            metric's range).

    Returns:
        An :class:`ImputationResult`; ``.mean`` is the imputed grid mean.

    Raises:
        ValueError: empty grid, no usable records, a record level missing from the grid.

    Examples:
        >>> grid = [{"d": d} for d in (0.8, 0.9)]
        >>> regression_impute([{"config": {"d": 0.8}, "e": 1.0}] * 3 + [{"config": {"d": 0.9},
        ...     "e": 0.0}], "e", grid).mean
        0.5
    """
    cells = [dict(c) for c in grid]
    if not cells:
        raise ValueError("grid: expected at least one configuration, got none")
    params = list(params) if params is not None else list(cells[0])
    levels: dict[str, list[Any]] = {}
    for p in params:
        seen: dict[Any, None] = {}
        for c in cells:
            if p not in c:
                raise ValueError(f"grid: cell {c} lacks parameter {p!r}")
            seen.setdefault(c[p], None)
        levels[p] = list(seen)
    if clip is not None and not (len(clip) == 2 and clip[0] <= clip[1]):
        raise ValueError(f"clip: expected (lo, hi) with lo <= hi, got {clip!r}")
    configs, values = [], []
    for rec in records:
        v = _value_of(rec, metric)
        if math.isnan(v):
            continue
        configs.append(_config_of(rec))
        values.append(v)
    if not values:
        raise ValueError("records: no record with a finite metric value")
    x, names = _design(configs, params, levels, interactions)  # (N, P)
    y = np.asarray(values, dtype=np.float64)  # (N,)
    coef, _res, rank, _sv = np.linalg.lstsq(x, y, rcond=None)
    dof = len(y) - rank
    if dof > 0:
        sigma2 = float(np.sum((y - x @ coef) ** 2)) / dof
        cov = sigma2 * np.linalg.pinv(x.T @ x)  # (P, P)
    else:
        cov = np.full((x.shape[1], x.shape[1]), np.nan)
    xg, _ = _design(cells, params, levels, interactions)  # (C, P)
    pred = xg @ coef
    if clip is not None:
        pred = np.clip(pred, clip[0], clip[1])
    return ImputationResult(
        params=params,
        levels=levels,
        cells=cells,
        predicted=pred,
        mean=float(pred.mean()),
        observed_mean=float(y.mean()),
        columns=names,
        coef=coef,
        cov=cov,
        rank=int(rank),
        n_obs=len(y),
        interactions=interactions,
        _design=xg,
    )


def marginal_effects(result: ImputationResult, *, level: float = 0.95) -> dict[str, list[dict]]:
    """Per-parameter marginal effects on the imputed grid mean, with normal confidence intervals.

    The effect of level ℓ of parameter j is mean(prediction | j = ℓ) − mean(prediction | j = base)
    over the grid cells, i.e. the main-effect coefficient plus the grid-averaged interactions (the
    quantity GLEE's ``parameters.py`` plots). Being linear in the coefficients, its standard error
    is sqrt(cᵀ Cov c). Predictions are taken unclipped.

    Args:
        result: the output of :func:`regression_impute`.
        level: confidence level of the interval, in (0, 1). Default 0.95.

    Returns:
        ``{param: [{"level", "effect", "se", "ci_low", "ci_high"}, ...]}`` for each non-base level.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level!r}")
    z = _normal_quantile(0.5 + level / 2.0)
    xg = result._design  # (C, P)
    out: dict[str, list[dict]] = {}
    for p in result.params:
        col = np.array([c[p] for c in result.cells], dtype=object)
        base = result.levels[p][0]
        base_row = xg[col == base].mean(axis=0)  # (P,)
        rows = []
        for lv in result.levels[p][1:]:
            c = xg[col == lv].mean(axis=0) - base_row  # (P,)
            effect = float(c @ result.coef)
            se = float(math.sqrt(max(float(c @ result.cov @ c), 0.0)))
            rows.append(
                {
                    "level": lv,
                    "effect": effect,
                    "se": se,
                    "ci_low": effect - z * se,
                    "ci_high": effect + z * se,
                }
            )
        out[p] = rows
    return out


def _normal_quantile(q: float) -> float:
    """Standard normal quantile by bisection on erf (no scipy dependency)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def metric_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    floatfmt: str = ".3f",
) -> str:
    """Render rows (dicts) as a GitHub-flavoured markdown table.

    Args:
        rows: one mapping per table row.
        columns: column order; default the keys of the first row. Missing values print empty.
        floatfmt: format spec for floats (default ``".3f"``); NaN prints as ``nan``.

    Examples:
        >>> print(metric_table([{"family": "bargaining", "efficiency": 0.5}]))
        | family | efficiency |
        |---|---|
        | bargaining | 0.500 |
    """
    if not rows:
        raise ValueError("rows: expected at least one row, got none")
    cols = list(columns) if columns is not None else list(rows[0])

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["ImputationResult", "marginal_effects", "metric_table", "regression_impute"]

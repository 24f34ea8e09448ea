"""Confidence intervals: the percentile bootstrap and binomial proportions.

- :func:`bootstrap`: resample the rows of ``data`` with replacement ``n`` times, recompute
  ``fn``, and return ``(estimate, low, high)`` with ``low``/``high`` the ``(1 ± level)/2``
  percentiles (linear interpolation, as ``numpy.percentile``).
- :func:`binomial_ci`: for ``k`` successes in ``n`` trials,

  * Wilson score: ``(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``, ``z = Φ⁻¹((1+level)/2)``;
  * Clopper–Pearson (exact): ``[B⁻¹(α/2; k, n−k+1), B⁻¹(1−α/2; k+1, n−k)]`` with ``B⁻¹`` the beta
    quantile, computed here (continued fraction for the regularised incomplete beta function,
    then bisection) so that scipy is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Literal, NamedTuple

import torch

__all__ = ["BootstrapResult", "beta_quantile", "binomial_ci", "bootstrap", "regularized_beta"]


class BootstrapResult(NamedTuple):
    """``estimate`` = ``fn(data)``; ``low``/``high`` the percentile interval (float64 tensors)."""

    estimate: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a float in (0, 1), got {level!r}")
    return float(level)


def _stat_f64(value: torch.Tensor | float) -> torch.Tensor:
    """A statistic as a float64 CPU tensor (a Python float would become float32 by default)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    return torch.tensor(value, dtype=torch.float64)


def bootstrap(
    fn: Callable[..., torch.Tensor | float],
    data: torch.Tensor | tuple[torch.Tensor, ...],
    n: int = 1000,
    seed: int | None = 0,
    *,
    level: float = 0.95,
    batched: bool = False,
    generator: torch.Generator | None = None,
) -> BootstrapResult:
    """Percentile-bootstrap confidence interval of the statistic ``fn`` over the rows of ``data``.

    Args:
        fn: the statistic. Called as ``fn(*tensors)`` with each tensor of ``data`` resampled along
            dim 0 (the same rows for all of them, so paired data stay paired). Returns a float or a
            tensor of any fixed shape ``S``. With ``batched=True`` it is instead called once with
            tensors of shape ``(n, N, ...)`` and must return ``(n, *S)`` (e.g. :func:`roc_auc`,
            :func:`spearman`, which batch over leading dims).
        data: a tensor ``(N, ...)`` or a tuple of tensors sharing ``N`` (``N >= 1``).
        n: number of resamples (>= 2); default 1000.
        seed: seed of the CPU generator drawing the row indices; default 0. Ignored when
            ``generator`` is given.
        level: confidence level in (0, 1); default 0.95.
        batched: see ``fn``; default False (a Python loop of ``n`` calls).
        generator: an explicit ``torch.Generator`` (CPU) for the indices.

    Returns:
        :class:`BootstrapResult` ``(estimate, low, high)``, float64 tensors of shape ``S``.

    Examples:
        >>> import torch
        >>> x = torch.randn(200, generator=torch.Generator().manual_seed(1))
        >>> est, lo, hi = bootstrap(lambda v: v.mean(), x, n=200, seed=0)
        >>> bool(lo < est < hi)
        True
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    tensors = data if isinstance(data, tuple) else (data,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("data: expected a tensor or a non-empty tuple of tensors")
    if any(t.dim() < 1 for t in tensors):
        raise ValueError("data: every tensor needs a leading sample dimension N")
    n_rows = tensors[0].shape[0]
    if n_rows < 1 or any(t.shape[0] != n_rows for t in tensors):
        raise ValueError(
            f"data: expected tensors sharing a leading dimension N >= 1, got shapes "
            f"{[tuple(t.shape) for t in tensors]}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: expected an int >= 2 resamples, got {n!r}")
    alpha = 1.0 - _check_level(level)
    if generator is None:
        if seed is None:
            raise ValueError("seed: give an int seed or a generator (no global RNG is used)")
        generator = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(n_rows, (n, n_rows), generator=generator)  # (n, N) on the CPU

    estimate = _stat_f64(fn(*tensors))
    if batched:
        stats = _stat_f64(fn(*(t[idx.to(t.device)] for t in tensors)))
        if stats.shape[:1] != (n,) or stats.shape[1:] != estimate.shape:
            raise ValueError(
                f"fn: with batched=True expected an output of shape {(n, *estimate.shape)}, "
                f"got {tuple(stats.shape)}"
            )
    else:
        stats = torch.stack(
            [_stat_f64(fn(*(t[row.to(t.device)] for t in tensors))) for row in idx]
        )  # (n, *S)
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    low, high = torch.quantile(stats, q, dim=0)
    return BootstrapResult(estimate, low, high)


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` (the Beta(a, b) CDF at ``x``).

    Evaluated with the classical continued fraction (modified Lentz), using the symmetry
    ``I_x(a, b) = 1 − I_{1−x}(b, a)`` where the fraction converges slowly. Scalars only.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"a, b: expected positive shape parameters, got a={a!r}, b={b!r}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x: expected a value in [0, 1], got {x!r}")
    if x == 0.0 or x == 1.0:
        return x
    if x > (a + 1) / (a + b + 2):
        return 1.0 - regularized_beta(1.0 - x, b, a)
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    tiny = 1e-300
    # 1 / (1 + d1 / (1 + d2 / (1 + ...))) with d_{2m} = m(b−m)x / ((a+2m−1)(a+2m)) and
    # d_{2m+1} = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1)).
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for coef in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coef * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coef / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return math.exp(log_front) * h / a


def beta_quantile(p: float, a: float, b: float) -> float:
    """Inverse of :func:`regularized_beta` in ``x``: the ``p``-quantile of Beta(a, b), by bisection."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    lo, hi = 0.0, 1.0
    for _ in range(200):  # the CDF is monotone; 200 halvings reach the float64 resolution
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if regularized_beta(mid, a, b) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def binomial_ci(
    k: int | torch.Tensor,
    n: int | torch.Tensor,
    level: float = 0.95,
    method: Literal["wilson", "clopper-pearson"] = "wilson",
) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
    """Confidence interval for a binomial proportion ``k / n``.

    Args:
        k: successes, an int or an integer tensor, ``0 <= k <= n``.
        n: trials, an int or an integer tensor (broadcastable with ``k``), ``n >= 1``.
        level: confidence level in (0, 1); default 0.95.
        method: ``"wilson"`` (score interval, default) or ``"clopper-pearson"`` (exact, conservative).

    Returns:
        ``(low, high)``: floats for int inputs, float64 tensors of the broadcast shape otherwise.

    Examples:
        >>> lo, hi = binomial_ci(5, 10)
        >>> round(lo, 4), round(hi, 4)
        (0.2366, 0.7634)
    """
    scalar = not isinstance(k, torch.Tensor) and not isinstance(n, torch.Tensor)
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
                raise TypeError(f"{name}: expected an integer tensor, got dtype {v.dtype}")
        elif isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name}: expected an int or an integer tensor, got {type(v).__name__}")
    kt = torch.as_tensor(k, dtype=torch.float64)
    nt = torch.as_tensor(n, dtype=torch.float64, device=kt.device)
    if bool((nt < 1).any()):
        raise ValueError(f"n: expected at least 1 trial, got {n!r}")
    if bool(((kt < 0) | (kt > nt)).any()):
        raise ValueError(f"k: expected 0 <= k <= n, got k={k!r}, n={n!r}")
    alpha = 1.0 - _check_level(level)
    if method == "wilson":
        z = NormalDist().inv_cdf(1.0 - alpha / 2)
        p = kt / nt
        denom = 1.0 + z * z / nt
        centre = (p + z * z / (2 * nt)) / denom
        half = z / denom * torch.sqrt(p * (1 - p) / nt + z * z / (4 * nt * nt))
        # The exact bounds lie in [0, 1]; the clamp only removes rounding at k = 0 and k = n.
        low, high = (centre - half).clamp(0.0, 1.0), (centre + half).clamp(0.0, 1.0)
    elif method == "clopper-pearson":
        kb, nb = torch.broadcast_tensors(kt.cpu(), nt.cpu())
        lows, highs = [], []
        for ki, ni in zip(kb.flatten().tolist(), nb.flatten().tolist(), strict=True):
            lows.append(0.0 if ki == 0 else beta_quantile(alpha / 2, ki, ni - ki + 1))
            highs.append(1.0 if ki == ni else beta_quantile(1 - alpha / 2, ki + 1, ni - ki))
        low = torch.tensor(lows, dtype=torch.float64).reshape(kb.shape).to(kt.device)
        high = torch.tensor(highs, dtype=torch.float64).reshape(kb.shape).to(kt.device)
    else:
        raise ValueError(f"method: expected 'wilson' or 'clopper-pearson', got {method!r}")
    if scalar:
        return float(low), float(high)
    return low, high

"""Benchmarks of the statistics module (entry point ``core-kernels.stats``).

There are no Triton kernels here; every row times torch code (float64, on ``device``) against a
named baseline in the same run:

- ``frechet_distance(method="gram")`` vs ``method="eigh"`` with fewer samples than dimensions
  (two sample sets of n = 256): the gram path never forms a D × D matrix. CPU: D = 512 (quick)
  or D = 1024 and 4096 (full); CUDA: D = 4096 (quick) or also 8192.
- ``frechet_distance(method="eigh")`` vs the usual FID recipe, numpy covariances and
  ``scipy.linalg.sqrtm`` on the CPU (skipped when scipy is missing), with n = 2000 > D = 256
  (quick) or also D = 1024.
- batched ``fit_logistic`` (Newton, and L-BFGS) for P = 32 probes vs a Python loop of 32
  ``sklearn.linear_model.LogisticRegression`` fits on the CPU (skipped when scikit-learn is
  missing); both with C = 1, an intercept, tol = 1e-6. CPU: N = 500, D = 64 (quick) or also
  N = 2000, D = 256; CUDA: N = 2000, D = 256 (quick) or also N = 4000, D = 1024.

Timings are medians of few repetitions (the baselines are slow). CPU quick mode takes about
20 s on a quiet 2-core machine, under 60 s on a heavily shared one. On an oversubscribed CPU,
torch's and OpenBLAS's thread pools slow small ops down by 10× or more: the recorded CPU numbers
were taken with ``OMP_NUM_THREADS=1`` (see docs/stats.md).
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .frechet import frechet_distance
from .logistic import fit_logistic

__all__ = ["run"]

logger = logging.getLogger(__name__)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _gaussian(n: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    return (torch.randn(n, d, generator=g) @ mix + torch.randn(d, generator=g)).to(device)


def _gram_vs_eigh(n: int, d: int, device: torch.device, rep: int) -> BenchResult:
    x, y = _gaussian(n, d, 0, device), _gaussian(n, d, 1, device)
    return bench(
        lambda: frechet_distance(x, y, method="gram"),
        lambda: frechet_distance(x, y, method="eigh"),
        name=f"frechet gram n={n} d={d}",
        baseline_name="frechet eigh",
        warmup=1,
        rep=rep,
        device=device.type,
        meta={"n": n, "d": d, "dtype": "float64"},
    )


def _eigh_vs_scipy(n: int, d: int, device: torch.device, rep: int) -> BenchResult:
    import numpy as np
    import scipy.linalg

    x, y = _gaussian(n, d, 2, device), _gaussian(n, d, 3, device)
    xn, yn = x.double().cpu().numpy(), y.double().cpu().numpy()

    def scipy_fd() -> float:
        ca, cb = np.cov(xn, rowvar=False), np.cov(yn, rowvar=False)
        root = scipy.linalg.sqrtm(ca @ cb)
        diff = xn.mean(0) - yn.mean(0)
        return float(diff @ diff + np.trace(ca) + np.trace(cb) - 2 * np.trace(root).real)

    return bench(
        lambda: frechet_distance(x, y, method="eigh"),
        scipy_fd,
        name=f"frechet eigh n={n} d={d}",
        baseline_name="numpy cov + scipy sqrtm (cpu)",
        warmup=1,
        rep=rep,
        device=device.type,
        meta={"n": n, "d": d, "dtype": "float64"},
    )


def _logistic_rows(p: int, n: int, d: int, device: torch.device, rep: int) -> list[BenchResult]:
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(4)
    x = torch.randn(p, n, d, generator=g)
    w = torch.randn(p, d, generator=g) / d**0.5
    y = (torch.rand(p, n, generator=g) < torch.sigmoid(torch.einsum("pnd,pd->pn", x, w))).long()
    xn, yn = x.numpy(), y.numpy()
    xd, yd = x.to(device), y.to(device)
    tol = 1e-6

    def sklearn_loop() -> None:
        for i in range(p):
            LogisticRegression(C=1.0, tol=tol, max_iter=1000).fit(xn[i], yn[i])

    rows = []
    for solver in ("newton", "lbfgs"):
        rows.append(
            bench(
                lambda solver=solver: (
                    fit_logistic(xd, yd, solver=solver, tol=tol, max_iter=1000).coef
                ),
                sklearn_loop,
                name=f"fit_logistic {solver} P={p} N={n} D={d}",
                baseline_name=f"{p}x sklearn LogisticRegression (cpu)",
                warmup=1,
                rep=rep,
                device=device.type,
                meta={"P": p, "N": n, "D": d, "solver": solver, "tol": tol},
            )
        )
    return rows


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the statistics benchmarks on ``device`` (``"auto"``: CUDA when available).

    Args:
        quick: fewer shapes and repetitions (CPU quick mode: 20–60 s on 2 cores).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``. The scipy and scikit-learn baselines always
            run on the CPU.

    Returns:
        One :class:`BenchResult` per row; rows whose baseline library is missing are skipped
        (logged).
    """
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    rep = 3 if quick else 5
    out: list[BenchResult] = []

    gram_dims = ([4096] if quick else [4096, 8192]) if cuda else ([512] if quick else [1024, 4096])
    for d in gram_dims:
        out.append(_gram_vs_eigh(256, d, dev, rep))

    if _has("scipy"):
        for d in [256] if quick else [256, 1024]:
            out.append(_eigh_vs_scipy(2000, d, dev, rep))
    else:
        logger.warning("stats bench: scipy is not installed, skipping the scipy sqrtm row")

    if _has("sklearn"):
        shapes = (
            ([(2000, 256)] if quick else [(2000, 256), (4000, 1024)])
            if cuda
            else ([(500, 64)] if quick else [(500, 64), (2000, 256)])
        )
        for n, d in shapes:
            out += _logistic_rows(32, n, d, dev, 2 if quick else rep)
    else:
        logger.warning("stats bench: scikit-learn is not installed, skipping the fit_logistic rows")
    return out

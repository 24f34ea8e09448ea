"""Batched L2-regularised logistic-regression probes (many layers at once), in float64.

Each of the ``P`` probes minimises scikit-learn's objective (``LogisticRegression(C=C)``, binary):

    f(w, b) = ½‖w‖² + C · Σᵢ log(1 + exp(−sᵢ (xᵢ·w + b))),     sᵢ = 2yᵢ − 1,

with the intercept ``b`` unpenalised. Writing ``θ = [w, b]``, ``x̃ = [x, 1]``, ``p = σ(x̃·θ)``:

    ∇f = Λθ + C X̃ᵀ(p − y),        ∇²f = Λ + C X̃ᵀ diag(p(1 − p)) X̃,     Λ = diag(1, …, 1, 0).

Solvers:

- ``"newton"``: Newton/IRLS for all probes at once, one batched Cholesky solve of the
  ``(D+1) × (D+1)`` Hessians per iteration, with a backtracking (Armijo) line search per probe.
  Quadratic convergence; memory ``P (D+1)²`` float64, so the default for ``D <= 2048``.
- ``"lbfgs"``: ``torch.optim.LBFGS`` (strong Wolfe line search) over the stacked ``(P, D+1)``
  parameters. The probes' objectives are independent, so the stacked objective is their sum and
  its gradient is theirs, side by side; used above ``D = 2048``.

Convergence, as scikit-learn's lbfgs: ``max |∇f| / (C·N) <= tol`` (the gradient of the objective
divided by ``C·N``, i.e. the mean log-loss plus ``‖w‖²/(2CN)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from ._checks import as_float_tensor, check_binary_labels, check_finite

__all__ = ["LogisticFit", "fit_logistic"]

logger = logging.getLogger(__name__)

#: Largest D for which ``solver="auto"`` picks Newton (the Hessians are P·(D+1)² float64).
NEWTON_MAX_DIM = 2048
_ARMIJO = 1e-4
_MAX_HALVINGS = 60


def _as_probe_batch(name: str, x: torch.Tensor) -> torch.Tensor:
    """(P, N, D) view of ``x`` given as (P, N, D) or (N, D)."""
    as_float_tensor(name, x, min_dim=2)
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"{name}: expected shape (P, N, D) or (N, D), got {tuple(x.shape)}")
    return x


@dataclass(frozen=True)
class LogisticFit:
    """The result of :func:`fit_logistic` for ``P`` probes.

    Attributes:
        coef: ``(P, D)`` float64 weights ``w``.
        intercept: ``(P,)`` float64 ``b`` (zeros when ``fit_intercept=False``).
        n_iter: ``(P,)`` int64 iterations used (Newton: per probe; L-BFGS: the shared count).
        converged: ``(P,)`` bool, ``max |∇f| / (C·N) <= tol`` at the returned parameters.
        loss: ``(P,)`` float64 objective ``½‖w‖² + C·Σ log-loss`` at the returned parameters.
        solver: ``"newton"`` or ``"lbfgs"``.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    loss: torch.Tensor
    solver: str

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``x·w + b``, ``(P, N)`` float64, for ``x`` of shape ``(P, N, D)`` or ``(N, D)``
        (the same samples for every probe)."""
        as_float_tensor("x", x, min_dim=2)
        d = self.coef.shape[-1]
        if (
            x.shape[-1] != d
            or x.dim() not in (2, 3)
            or (x.dim() == 3 and x.shape[0] != self.coef.shape[0])
        ):
            raise ValueError(
                f"x: expected shape ({self.coef.shape[0]}, N, {d}) or (N, {d}), got {tuple(x.shape)}"
            )
        x64 = x.to(device=self.coef.device, dtype=torch.float64)
        eq = "nd,pd->pn" if x.dim() == 2 else "pnd,pd->pn"
        return torch.einsum(eq, x64, self.coef) + self.intercept.unsqueeze(-1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``P(y = 1 | x)``, ``(P, N)`` float64 (``LogisticRegression.predict_proba(x)[:, 1]``)."""
        return torch.sigmoid(self.decision_function(x))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels ``(P, N)`` int64 in {0, 1} (a logit of exactly 0 gives 0, as sklearn)."""
        return (self.decision_function(x) > 0).to(torch.int64)

    def score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy per probe, ``(P,)`` float64; ``y`` is ``(N,)`` or ``(P, N)`` binary labels."""
        pred = self.predict(x)
        yb = check_binary_labels("y", y).to(pred.device)
        return (pred == yb.to(torch.int64)).to(torch.float64).mean(dim=-1)


def _objective(
    theta: torch.Tensor, xt: torch.Tensor, y: torch.Tensor, pen: torch.Tensor, c: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objective (P,), gradient (P, D1) and the probabilities p (P, N) at theta (P, D1)."""
    z = torch.einsum("pnd,pd->pn", xt, theta)  # (P, N)
    # log(1 + e^z) − y z, computed without overflow (softplus' linear cut-off is not exact).
    log_loss = z.clamp_min(0) + torch.log1p(torch.exp(-z.abs())) - y * z
    f = c * log_loss.sum(dim=-1) + 0.5 * (pen * theta.square()).sum(dim=-1)
    p = torch.sigmoid(z)
    g = c * torch.einsum("pnd,pn->pd", xt, p - y) + pen * theta  # (P, D1)
    return f, g, p


def _newton(
    xt: torch.Tensor, y: torch.Tensor, pen: torch.Tensor, c: float, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_probes, n, d1 = xt.shape
    scale = c * n
    theta = torch.zeros(n_probes, d1, dtype=torch.float64, device=xt.device)
    n_iter = torch.zeros(n_probes, dtype=torch.int64, device=xt.device)
    active = torch.ones(n_probes, dtype=torch.bool, device=xt.device)
    eps = torch.finfo(torch.float64).eps
    f, g, p = _objective(theta, xt, y, pen, c)
    for _ in range(max_iter):
        active &= g.abs().amax(dim=-1) / scale > tol
        if not bool(active.any()):
            break
        w = p * (1 - p)  # (P, N)
        hess = c * (xt * w.unsqueeze(-1)).transpose(-1, -2) @ xt + torch.diag_embed(
            pen
        )  # (P, D1, D1)
        chol, info = torch.linalg.cholesky_ex(hess)
        if bool((info != 0).any()):
            # Saturated probabilities can leave the intercept row numerically singular: a ridge
            # of a few ulps of the diagonal restores definiteness without moving the solution.
            ridge = 1e3 * eps * hess.diagonal(dim1=-2, dim2=-1).amax(dim=-1).clamp_min(1.0)
            hess = hess + ridge[:, None, None] * torch.eye(d1, dtype=hess.dtype, device=hess.device)
            chol, info = torch.linalg.cholesky_ex(hess)
        step = torch.cholesky_solve(g.unsqueeze(-1), chol).squeeze(-1)  # (P, D1)
        step = torch.where(
            active.unsqueeze(-1) & (info == 0).unsqueeze(-1), step, torch.zeros_like(step)
        )
        slope = (g * step).sum(dim=-1)  # > 0: the decrease direction is −step
        t = torch.ones(n_probes, dtype=torch.float64, device=xt.device)
        pending = active.clone()
        new_theta, new_f, new_g, new_p = theta, f, g, p
        for _ in range(_MAX_HALVINGS):
            cand = theta - t.unsqueeze(-1) * step
            cf, cg, cp = _objective(cand, xt, y, pen, c)
            slack = 4 * eps * (f.abs() + 1)  # rounding-level increases near the optimum
            ok = pending & (cf <= f - _ARMIJO * t * slope + slack)
            new_theta = torch.where(ok.unsqueeze(-1), cand, new_theta)
            new_f = torch.where(ok, cf, new_f)
            new_g = torch.where(ok.unsqueeze(-1), cg, new_g)
            new_p = torch.where(ok.unsqueeze(-1), cp, new_p)
            pending &= ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t / 2, t)
        n_iter += active.to(torch.int64)
        active &= ~pending  # a probe whose line search failed stops (reported as not converged)
        theta, f, g, p = new_theta, new_f, new_g, new_p
    return theta, n_iter, f


def _lbfgs(
    xt: torch.Tensor, y: torch.Tensor, pen: torch.Tensor, c: float, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_probes, n, d1 = xt.shape
    scale = c * n
    theta = torch.zeros(n_probes, d1, dtype=torch.float64, device=xt.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4 + 1,
        tolerance_grad=tol,
        tolerance_change=0.0,  # stop on the gradient test (or max_iter) only
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            f, g, _ = _objective(theta, xt, y, pen, c)
        theta.grad = g / scale
        return f.sum() / scale

    opt.step(closure)
    done = int(opt.state[theta].get("n_iter", 0))
    theta = theta.detach()
    f, _, _ = _objective(theta, xt, y, pen, c)
    n_iter = torch.full((n_probes,), done, dtype=torch.int64, device=xt.device)
    return theta, n_iter, f


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    C: float = 1.0,
    fit_intercept: bool = True,
    solver: Literal["auto", "newton", "lbfgs"] = "auto",
    max_iter: int = 100,
    tol: float = 1e-8,
) -> LogisticFit:
    """Fit ``P`` binary L2 logistic-regression probes at once (scikit-learn's objective).

    Args:
        x: features ``(P, N, D)`` (e.g. one probe per layer) or ``(N, D)`` (one probe, ``P = 1``),
            any real dtype; computed in float64 on ``x``'s device.
        y: binary labels ``(N,)`` shared by all probes, or ``(P, N)``; bool or 0/1 ints/floats.
            Every probe needs both classes.
        C: inverse regularisation strength (> 0), as ``LogisticRegression(C=...)``; default 1.0.
        fit_intercept: fit an unpenalised intercept; default True.
        solver: ``"newton"`` (batched Newton/IRLS), ``"lbfgs"`` (``torch.optim.LBFGS`` over the
            stacked parameters) or ``"auto"`` (default: Newton for ``D <= 2048``, else L-BFGS).
        max_iter: iteration cap (>= 1); default 100 (Newton needs ~10).
        tol: stop when ``max |∇f| / (C·N) <= tol`` (sklearn's lbfgs criterion); default 1e-8.

    Returns:
        :class:`LogisticFit` with ``coef (P, D)``, ``intercept (P,)``, ``n_iter``, ``converged``,
        ``loss`` and ``predict_proba``/``predict``/``score``. Probes that did not converge are
        reported in ``converged`` and logged as a warning.

    Raises:
        ValueError: bad shapes, non-binary or single-class labels, NaN/Inf, ``C <= 0`` ...

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4, 200, 5, generator=g)  # 4 layers, 200 samples, 5 features
        >>> y = (x[0, :, 0] + 0.5 * torch.randn(200, generator=g) > 0).long()
        >>> fit = fit_logistic(x, y)
        >>> fit.coef.shape, bool(fit.converged.all())
        (torch.Size([4, 5]), True)
        >>> fit.predict_proba(x).shape
        torch.Size([4, 200])
    """
    xb = _as_probe_batch("x", x)  # (P, N, D)
    n_probes, n, d = xb.shape
    if n < 2 or d < 1:
        raise ValueError(
            f"x: expected at least 2 samples and 1 feature, got shape {tuple(x.shape)}"
        )
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if tuple(y.shape) not in ((n,), (n_probes, n)):
        raise ValueError(f"y: expected shape ({n},) or ({n_probes}, {n}), got {tuple(y.shape)}")
    yb = check_binary_labels("y", y)
    n_pos = yb.expand(n_probes, n).sum(dim=-1)
    if bool(((n_pos == 0) | (n_pos == n)).any()):
        raise ValueError("y: every probe needs samples of both classes (0 and 1)")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not 0 < C < float("inf"):
        raise ValueError(f"C: expected a positive finite float, got {C!r}")
    if solver not in ("auto", "newton", "lbfgs"):
        raise ValueError(f"solver: expected 'auto', 'newton' or 'lbfgs', got {solver!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected an int >= 1, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol: expected a positive float, got {tol!r}")
    check_finite("x", xb)
    if solver == "auto":
        solver = "newton" if d <= NEWTON_MAX_DIM else "lbfgs"

    x64 = xb.detach().to(torch.float64)
    y64 = yb.to(device=x64.device, dtype=torch.float64).expand(n_probes, n)  # (P, N)
    pen = torch.ones(d + int(fit_intercept), dtype=torch.float64, device=x64.device)
    if fit_intercept:
        x64 = torch.cat([x64, torch.ones_like(x64[..., :1])], dim=-1)  # (P, N, D+1)
        pen[-1] = 0.0  # the intercept is not penalised
    c = float(C)
    run = _newton if solver == "newton" else _lbfgs
    theta, n_iter, loss = run(x64, y64, pen, c, max_iter, float(tol))
    _, g, _ = _objective(theta, x64, y64, pen, c)
    converged = g.abs().amax(dim=-1) / (c * n) <= tol
    if not bool(converged.all()):
        logger.warning(
            "fit_logistic(%s): %d of %d probes did not reach tol=%g in max_iter=%d iterations",
            solver,
            int((~converged).sum()),
            n_probes,
            tol,
            max_iter,
        )
    coef = theta[:, :d].contiguous()
    intercept = theta[:, d].contiguous() if fit_intercept else torch.zeros_like(theta[:, 0])
    return LogisticFit(coef, intercept, n_iter, converged, loss, solver)

"""Statistics for evaluating representations and probes, in float64, batched over layers.

- :class:`StreamingMoments`: chunk-wise ``Σx``, ``Σxxᵀ`` (float64 GEMMs), mergeable;
  ``mean = Σx/n``, ``cov = (Σxxᵀ − n·mean·meanᵀ)/(n − 1)``.
- :func:`frechet_distance`: ``‖μa − μb‖² + tr Σa + tr Σb − 2·tr((Σa Σb)^{1/2})`` between Gaussians
  fitted to two sample sets (or given as moments), batched over a leading layer dim;
  :func:`trace_sqrt_product` computes the last term by ``eigh`` (default), ``gram`` (the exact
  nuclear-norm path for fewer samples than dimensions), ``eigvals`` or scipy's ``sqrtm``.
- :func:`roc_auc` (Mann–Whitney, midrank ties), :func:`spearman` (average-rank ties),
  :func:`rankdata`: batched over leading dims.
- :func:`bootstrap` (percentile CI), :func:`binomial_ci` (Wilson, Clopper–Pearson).
- :func:`fit_logistic`: ``P`` L2 logistic-regression probes at once, minimising scikit-learn's
  ``½‖w‖² + C·Σ log-loss`` (unpenalised intercept) by batched Newton/IRLS or L-BFGS.

Nothing here imports scipy or scikit-learn at module level; ``method="sqrtm"`` imports scipy
lazily (the ``scipy`` extra). There are no Triton kernels in this module.
"""

from .frechet import frechet_distance, trace_sqrt_product
from .intervals import BootstrapResult, beta_quantile, binomial_ci, bootstrap, regularized_beta
from .logistic import LogisticFit, fit_logistic
from .moments import StreamingMoments
from .ranking import rankdata, roc_auc, spearman

__all__ = [
    "BootstrapResult",
    "LogisticFit",
    "StreamingMoments",
    "beta_quantile",
    "binomial_ci",
    "bootstrap",
    "fit_logistic",
    "frechet_distance",
    "rankdata",
    "regularized_beta",
    "roc_auc",
    "spearman",
    "trace_sqrt_product",
]

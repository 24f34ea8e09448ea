"""paperbricks.mlpkan: MLP-KAN, MLP and KAN experts in one mixture (arXiv 2410.03027).

"MLP-KAN: Unifying Deep Representation and Function Learning" replaces the feed-forward of every
transformer block by a mixture of MLP experts and FasterKAN experts behind a learned router, so
one model is meant to serve both representation learning (image classification) and function
learning (Feynman equations).

Public surface:

- KAN bases (:func:`rswaf`, :func:`gaussian_rbf`, :func:`bspline`, :class:`RSWAFBasis`,
  :class:`GaussianRBFBasis`, :class:`BSplineBasis`), layers (:class:`KANLayer`,
  :class:`FasterKAN`) and the functional basis-GEMM (:func:`kan_linear`,
  :func:`grouped_kan_linear`; ``impl="triton"`` is the fused kernel);
- the mixture :class:`MLPKANMoE` (top-k or soft router) and :func:`router_stats`;
- HF-style models, loaded on first use because they import transformers:
  :class:`MLPKANConfig`, :class:`MLPKANForImageClassification`, :class:`MLPKANViTModel`,
  :class:`MLPKANRegressorConfig`, :class:`MLPKANRegressor`, :func:`count_parameters`,
  :func:`match_hidden`, :func:`matched_config`, and the official-checkpoint converter
  (:func:`convert_official_state_dict`, :func:`load_official_checkpoint`);
- data (:func:`feynman`, :func:`feynman_split`, :func:`list_equations`,
  :func:`load_digits_split`, :func:`synthetic_shapes`, ...), training helpers
  (:func:`fit_regressor`, :func:`fit_classifier`, :func:`routing_share`, ...), and the
  reproductions (:mod:`.reproduce`, imported on demand).

Importing the package imports torch, numpy and core-kernels, but neither triton nor transformers,
and does not initialise CUDA.
"""

from importlib.metadata import PackageNotFoundError, version

from paperbricks.core_kernels.lazy import lazy_exports

from .bases import (
    BASES,
    BSplineBasis,
    GaussianRBFBasis,
    RSWAFBasis,
    bspline,
    gaussian_rbf,
    kan_basis,
    make_basis,
    num_bases,
    rswaf,
    uniform_grid,
)
from .data import (
    EQUATIONS,
    SHAPE_CLASSES,
    Equation,
    FunctionData,
    ImageData,
    Variable,
    evaluate_formula,
    feynman,
    feynman_split,
    get_equation,
    list_equations,
    load_digits_split,
    shapes_split,
    synthetic_shapes,
)
from .kan import FasterKAN, KANLayer, grouped_kan_linear, kan_linear
from .moe import MLPKANMoE, router_stats
from .train import (
    ClassificationResult,
    RegressionResult,
    build_seeded,
    classification_accuracy,
    fit_classifier,
    fit_regressor,
    matched_regressor_configs,
    matched_vit_configs,
    regression_rmse,
    routing_share,
)

try:
    __version__ = version("paperbricks-mlpkan")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "MLP-KAN: Unifying Deep Representation and Function Learning",
    "arxiv": "2410.03027",
}

# Names whose modules import transformers: resolved on first attribute access.
_LAZY = {
    "MLPKANConfig": ".models",
    "MLPKANForImageClassification": ".models",
    "MLPKANViTModel": ".models",
    "MLPKANRegressorConfig": ".models",
    "MLPKANRegressor": ".models",
    "count_parameters": ".models",
    "match_hidden": ".models",
    "matched_config": ".models",
    "convert_official_state_dict": ".convert",
    "load_official_checkpoint": ".convert",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "BASES",
    "EQUATIONS",
    "PAPER",
    "SHAPE_CLASSES",
    "BSplineBasis",
    "ClassificationResult",
    "Equation",
    "FasterKAN",
    "FunctionData",
    "GaussianRBFBasis",
    "ImageData",
    "KANLayer",
    "MLPKANConfig",
    "MLPKANForImageClassification",
    "MLPKANMoE",
    "MLPKANRegressor",
    "MLPKANRegressorConfig",
    "MLPKANViTModel",
    "RSWAFBasis",
    "RegressionResult",
    "Variable",
    "__version__",
    "bspline",
    "build_seeded",
    "classification_accuracy",
    "convert_official_state_dict",
    "count_parameters",
    "evaluate_formula",
    "feynman",
    "feynman_split",
    "fit_classifier",
    "fit_regressor",
    "gaussian_rbf",
    "get_equation",
    "grouped_kan_linear",
    "kan_basis",
    "kan_linear",
    "list_equations",
    "load_digits_split",
    "load_official_checkpoint",
    "make_basis",
    "match_hidden",
    "matched_config",
    "matched_regressor_configs",
    "matched_vit_configs",
    "num_bases",
    "regression_rmse",
    "router_stats",
    "routing_share",
    "rswaf",
    "shapes_split",
    "synthetic_shapes",
    "uniform_grid",
]

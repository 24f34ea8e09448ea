"""paperbricks.diffattn: Differential Transformer (Ye et al., arXiv:2410.05258).

Differential attention subtracts a learned multiple λ of a second softmax map from the first,
``(softmax(Q1K1ᵀ/√d) − λ·softmax(Q2K2ᵀ/√d))·V``, then RMS-normalises each head and scales it by
``1 − λ_init``. This package holds:

- the functional op :func:`diff_attention` (reference, two-SDPA "flashdiff_1" and a fused Triton
  forward/backward), with GQA under the flash semantics;
- the modules :func:`lambda_init`, :class:`DiffLambda`, :class:`MultiheadDiffAttn`;
- HF-style models :class:`DiffTransformerForCausalLM` and the parameter-matched
  :class:`BaselineTransformerForCausalLM` (with their configs), and the layout converters
  :func:`unilm_to_hf`, :func:`hf_to_unilm`, :func:`load_hf_diffllama`,
  :func:`convert_llama_to_diff`;
- the multi-needle retrieval task, the attention-allocation metrics, a training helper and the
  ``diffattn.multi-needle`` reproduction.

Importing the package imports torch but neither triton nor transformers and never touches CUDA:
the models and converters (which need transformers) are loaded on first attribute access.
"""

from importlib.metadata import PackageNotFoundError, version

from paperbricks.core_kernels.lazy import lazy_exports

from .metrics import AttentionAllocation, attention_allocation, max_activations, retrieval_accuracy
from .modules import DiffLambda, MultiheadDiffAttn, lambda_init
from .ops import diff_attention
from .reference import diff_attention_reference, lambda_from_params
from .tasks import NeedleBatch, NeedleVocab, multi_needle_batches, multi_needle_task
from .train import RetrievalReport, TrainResult, evaluate_retrieval, train_needle_model

try:
    __version__ = version("paperbricks-diffattn")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {"title": "Differential Transformer", "arxiv": "2410.05258"}

# Public names whose modules import transformers: resolved lazily by __getattr__.
_LAZY = {
    "BaselineTransformerConfig": ".models",
    "BaselineTransformerForCausalLM": ".models",
    "DiffTransformerConfig": ".models",
    "DiffTransformerForCausalLM": ".models",
    "convert_llama_to_diff": ".convert",
    "hf_to_unilm": ".convert",
    "load_hf_diffllama": ".convert",
    "unilm_to_hf": ".convert",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "PAPER",
    "AttentionAllocation",
    "BaselineTransformerConfig",
    "BaselineTransformerForCausalLM",
    "DiffLambda",
    "DiffTransformerConfig",
    "DiffTransformerForCausalLM",
    "MultiheadDiffAttn",
    "NeedleBatch",
    "NeedleVocab",
    "RetrievalReport",
    "TrainResult",
    "__version__",
    "attention_allocation",
    "convert_llama_to_diff",
    "diff_attention",
    "diff_attention_reference",
    "evaluate_retrieval",
    "hf_to_unilm",
    "lambda_from_params",
    "lambda_init",
    "load_hf_diffllama",
    "max_activations",
    "multi_needle_batches",
    "multi_needle_task",
    "retrieval_accuracy",
    "train_needle_model",
    "unilm_to_hf",
]

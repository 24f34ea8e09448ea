"""paperbricks.prefixquant: PrefixQuant: Static Quantization Beats Dynamic through Prefixed Outliers in LLMs (arXiv:2410.05265).

Token-wise activation outliers sit at a few tokens (the first token, early delimiters); PrefixQuant
finds them offline, keeps them as a full-precision prefix KV cache, and then quantizes the
remaining activations with coarse **static per-tensor** scales after a Hadamard rotation. This
package holds, on any local HF Llama-family causal LM (Llama, Mistral, Qwen2, ...):

- sites and rotation: :func:`resolve_sites`, :func:`rotate_model_` (R1–R4, online
  :class:`OnlineHadamard` on Q/K and the down_proj input), the ``paperbricks_prefixquant``
  attention function;
- prefixing: :func:`find_outlier_tokens`, :func:`select_prefix` (η = 64), :class:`PrefixSpec`,
  :func:`build_prefix_cache`, :class:`PrefixedCausalLM`;
- fake quantization: :class:`PrefixQuantConfig` (presets W4A4KV4, W4A8KV4, W8A8KV8),
  :func:`quantize_` (calibration without prefix positions, MSE clip initialisation, block-wise
  fine-tuning), :func:`eval_perplexity`, the quantizers and :class:`QuantLinear`/:class:`QuantRMSNorm`;
- real integer execution: :func:`to_real_`, :class:`W8A8Linear`, :class:`W4A8Linear`,
  :class:`W4A4Linear` (packed int4), :class:`RealQuantRMSNorm` (fused norm + static int8 quant);
- :func:`save_quantized` / :func:`load_quantized`, text data helpers, the ``prefixquant``
  CLI, the ``prefixquant.w8a8`` benchmark and the reproductions.

Importing the package imports neither torch-heavy submodules, transformers nor triton, and never
touches CUDA: every public name is resolved from its submodule on first attribute access.
"""

from importlib.metadata import PackageNotFoundError, version

from paperbricks.core_kernels.lazy import lazy_exports

try:
    __version__ = version("paperbricks-prefixquant")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "PrefixQuant: Static Quantization Beats Dynamic through Prefixed Outliers in LLMs",
    "arxiv": "2410.05265",
}

# Public name -> submodule that defines it (resolved lazily by __getattr__).
_LAZY: dict[str, str] = {
    # sites.py, rotation.py, attention.py
    "LayerSites": ".sites",
    "ModelSites": ".sites",
    "UnsupportedModelError": ".sites",
    "resolve_sites": ".sites",
    "HadamardInputLinear": ".rotation",
    "OnlineHadamard": ".rotation",
    "RotationState": ".rotation",
    "fuse_norms_": ".rotation",
    "is_rotated": ".rotation",
    "rotate_model_": ".rotation",
    "ATTN_IMPLEMENTATION": ".attention",
    "prefixquant_attention_forward": ".attention",
    "register_attention": ".attention",
    "use_prefixquant_attention": ".attention",
    # prefix.py
    "PrefixSpec": ".prefix",
    "PrefixedCausalLM": ".prefix",
    "build_prefix_cache": ".prefix",
    "expand_prefix_cache": ".prefix",
    "find_outlier_tokens": ".prefix",
    "outlier_ratios": ".prefix",
    "prefix_position_mask": ".prefix",
    "prefixed_position_ids": ".prefix",
    "real_token_mask": ".prefix",
    "select_prefix": ".prefix",
    "set_num_prefix_": ".prefix",
    # config.py, quantizers.py, modules.py
    "PRESETS": ".config",
    "PrefixQuantConfig": ".config",
    "ActQuantizer": ".quantizers",
    "KVQuantizer": ".quantizers",
    "WeightQuantizer": ".quantizers",
    "init_scale_from_max": ".quantizers",
    "ste_fake_quant": ".quantizers",
    "QuantLinear": ".modules",
    "QuantRMSNorm": ".modules",
    # calibrate.py, mse_init.py, finetune.py, quantize.py, evaluate.py
    "BlockInputs": ".calibrate",
    "activation_quantizers": ".calibrate",
    "calibrate_": ".calibrate",
    "capture_block_inputs": ".calibrate",
    "make_runner": ".calibrate",
    "quantizers_enabled": ".calibrate",
    "run_block": ".calibrate",
    "set_calibrating": ".calibrate",
    "weight_quantizers": ".calibrate",
    "init_weight_clip_": ".mse_init",
    "mse_init_": ".mse_init",
    "search_slices": ".mse_init",
    "block_loss": ".finetune",
    "finetune_": ".finetune",
    "quantize_weights_inplace_": ".finetune",
    "QuantizedModelInfo": ".quantize",
    "insert_quantizers_": ".quantize",
    "prepare_calibration_ids": ".quantize",
    "quantize_": ".quantize",
    "PerplexityResult": ".evaluate",
    "eval_perplexity": ".evaluate",
    # real.py, serialize.py, data.py, planted.py, reproduce.py
    "QuantPayload": ".real",
    "RealQuantLinear": ".real",
    "RealQuantRMSNorm": ".real",
    "W4A4Linear": ".real",
    "W4A8Linear": ".real",
    "W4Linear": ".real",
    "W8A8Linear": ".real",
    "dynamic_per_token_quant": ".real",
    "static_per_tensor_quant": ".real",
    "to_real_": ".real",
    "FORMAT_VERSION": ".serialize",
    "load_quantized": ".serialize",
    "save_quantized": ".serialize",
    "calibration_windows": ".data",
    "eval_windows": ".data",
    "read_texts": ".data",
    "synthetic_texts": ".data",
    "token_stream": ".data",
    "planted_llama": ".planted",
    "synthetic_activations": ".reproduce",
    "synthetic_mse": ".reproduce",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ATTN_IMPLEMENTATION",
    "FORMAT_VERSION",
    "PAPER",
    "PRESETS",
    "ActQuantizer",
    "BlockInputs",
    "HadamardInputLinear",
    "KVQuantizer",
    "LayerSites",
    "ModelSites",
    "OnlineHadamard",
    "PerplexityResult",
    "PrefixQuantConfig",
    "PrefixSpec",
    "PrefixedCausalLM",
    "QuantLinear",
    "QuantPayload",
    "QuantRMSNorm",
    "QuantizedModelInfo",
    "RealQuantLinear",
    "RealQuantRMSNorm",
    "RotationState",
    "UnsupportedModelError",
    "W4A4Linear",
    "W4A8Linear",
    "W4Linear",
    "W8A8Linear",
    "WeightQuantizer",
    "__version__",
    "activation_quantizers",
    "block_loss",
    "build_prefix_cache",
    "calibrate_",
    "calibration_windows",
    "capture_block_inputs",
    "dynamic_per_token_quant",
    "eval_perplexity",
    "eval_windows",
    "expand_prefix_cache",
    "find_outlier_tokens",
    "finetune_",
    "fuse_norms_",
    "init_scale_from_max",
    "init_weight_clip_",
    "insert_quantizers_",
    "is_rotated",
    "load_quantized",
    "make_runner",
    "mse_init_",
    "outlier_ratios",
    "planted_llama",
    "prefix_position_mask",
    "prefixed_position_ids",
    "prefixquant_attention_forward",
    "prepare_calibration_ids",
    "quantize_",
    "quantize_weights_inplace_",
    "quantizers_enabled",
    "read_texts",
    "real_token_mask",
    "register_attention",
    "resolve_sites",
    "rotate_model_",
    "run_block",
    "save_quantized",
    "search_slices",
    "select_prefix",
    "set_calibrating",
    "set_num_prefix_",
    "static_per_tensor_quant",
    "ste_fake_quant",
    "synthetic_activations",
    "synthetic_mse",
    "synthetic_texts",
    "to_real_",
    "token_stream",
    "use_prefixquant_attention",
    "weight_quantizers",
]

"""paperbricks.aria: Aria: An Open Multimodal Native Mixture-of-Experts Model (arXiv:2410.05993).

The public surface is re-exported lazily (module-level ``__getattr__``): ``import paperbricks.aria``
imports neither transformers nor triton and does not touch CUDA; each name loads its submodule on
first access.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from paperbricks.core_kernels.lazy import lazy_exports

try:
    __version__ = version("paperbricks-aria")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "Aria: An Open Multimodal Native Mixture-of-Experts Model",
    "arxiv": "2410.05993",
}

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # models (configuration, ViT, projector, MoE decoder, VLM)
    "AriaConfig": "models",
    "AriaTextConfig": "models",
    "AriaVisionConfig": "models",
    "AriaForConditionalGeneration": "models",
    "AriaTextForCausalLM": "models",
    "AriaTextModel": "models",
    "AriaMoELayer": "models",
    "AriaProjector": "models",
    "AriaVisionModel": "models",
    "AriaCausalLMOutput": "models",
    "AriaPreTrainedModel": "models",
    "AriaTextModelOutput": "models",
    "AriaVisionOutput": "models",
    # router losses
    "ARIA_AUX_LOSS_COEF": "losses",
    "ARIA_FINETUNE_AUX_LOSS_COEF": "losses",
    "ARIA_Z_LOSS_COEF": "losses",
    "AuxLossAutoScaler": "losses",
    "attach_aux_loss": "losses",
    "router_aux_losses": "losses",
    "router_load_balancing_loss": "losses",
    "router_z_loss": "losses",
    "set_aux_loss_scale": "losses",
    # training
    "StepLog": "train",
    "TrainConfig": "train",
    # processing
    "expand_image_tokens": "processing",
    "image_processor": "processing",
    "pad_images": "processing",
    # checkpoints and accounting
    "convert_checkpoint": "convert",
    "convert_config": "convert",
    "convert_state_dict": "convert",
    "from_per_expert": "convert",
    "to_per_expert": "convert",
    "ParameterCount": "params",
    "aria_published_config": "params",
    "count_parameters": "params",
    # reproductions and their diagnostics
    "expert_usage": "reproduce",
    "fine_grained_moe": "reproduce",
    "js_divergence": "reproduce",
    "modality_specialisation": "reproduce",
}

# submodules, also loaded on first attribute access (``paperbricks.aria.train.train`` is the
# training loop; it is not re-exported as ``train`` because that name is its module's)
_SUBMODULES = frozenset(
    ("bench", "cli", "convert", "losses", "models", "params", "processing", "reproduce",
     "synthetic", "train")
)  # fmt: skip

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=_SUBMODULES)

__all__ = ["PAPER", "__version__", *_EXPORTS]

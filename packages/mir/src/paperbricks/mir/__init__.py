"""paperbricks.mir: Modality Integration Rate (MIR) and MoCa (arXiv 2410.07167).

"Deciphering Cross-Modal Alignment in Large Vision-Language Models with Modality Integration
Rate": MIR measures, layer by layer inside a vision-language model's language model, the Fréchet
distance between the hidden states of image tokens and of text tokens (after text-centric
scaling and 3σ outlier replacement), as ``log₁₀`` of the sum over layers; lower means better
integrated modalities. MoCa is a learnable per-channel affine map applied to vision tokens only.

Public surface:

- the metric over tensors: :func:`modality_integration_rate`, :func:`frechet_distance`,
  :func:`text_centric_normalize`, :func:`replace_outliers`, :class:`MIRResult`;
- over models: :class:`MIRAccumulator` (two-pass streaming with forward hooks),
  :func:`compute_mir`, the masks (:func:`modality_masks`, :func:`vision_mask`,
  :func:`text_mask_after_images`);
- MoCa: :class:`MoCa`, :func:`apply_moca_`, :func:`moca_param_groups`, :func:`remove_moca_`;
- synthetic data (:mod:`.data`), the tiny LLaVA builder (:func:`build_tiny_vlm`), the training
  stages (:mod:`.train`), and the reproduction (:mod:`.reproduce`, imported on demand).

Importing the package imports torch and numpy, but neither triton nor transformers, and does
not initialise CUDA.
"""

from importlib.metadata import PackageNotFoundError, version

from .accumulator import MIRAccumulator, find_decoder_layers, find_language_model
from .compute import TEMPLATES, build_prompt, compute_mir
from .data import (
    CaptionPair,
    Scene,
    VisualQuestion,
    caption_pairs,
    render_scene,
    stories,
    text_conversations,
    unrelated_pairs,
    visual_questions,
    write_synthetic_set,
)
from .masks import (
    image_span_token_ids,
    modality_masks,
    resolve_image_token_id,
    text_mask_after_images,
    vision_mask,
)
from .metric import (
    METHODS,
    MIRResult,
    frechet_distance,
    mir_from_layer_fd,
    modality_integration_rate,
    replace_outliers,
    text_centric_normalize,
)
from .moca import MoCa, MocaHandle, apply_moca_, moca_param_groups, remove_moca_
from .tinyvlm import TinyVLMConfig, build_processor, build_tiny_vlm
from .train import (
    PretrainStrategy,
    caption_loss,
    finetune_vqa_,
    pretrain_projector_,
    vqa_accuracy,
    warm_up_language_model_,
)

try:
    __version__ = version("paperbricks-mir")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "Deciphering Cross-Modal Alignment in Large Vision-Language Models with "
    "Modality Integration Rate",
    "arxiv": "2410.07167",
}

__all__ = [
    "METHODS",
    "PAPER",
    "TEMPLATES",
    "CaptionPair",
    "MIRAccumulator",
    "MIRResult",
    "MoCa",
    "MocaHandle",
    "PretrainStrategy",
    "Scene",
    "TinyVLMConfig",
    "VisualQuestion",
    "__version__",
    "apply_moca_",
    "build_processor",
    "build_prompt",
    "build_tiny_vlm",
    "caption_loss",
    "caption_pairs",
    "compute_mir",
    "find_decoder_layers",
    "find_language_model",
    "finetune_vqa_",
    "frechet_distance",
    "image_span_token_ids",
    "mir_from_layer_fd",
    "moca_param_groups",
    "modality_integration_rate",
    "modality_masks",
    "pretrain_projector_",
    "remove_moca_",
    "render_scene",
    "replace_outliers",
    "resolve_image_token_id",
    "stories",
    "text_centric_normalize",
    "text_conversations",
    "text_mask_after_images",
    "unrelated_pairs",
    "vision_mask",
    "visual_questions",
    "vqa_accuracy",
    "warm_up_language_model_",
    "write_synthetic_set",
]

"""paperbricks.pixtral: Pixtral 12B (arXiv:2410.07073).

Our own Pixtral-ViT (2-D RoPE, packed block-diagonal attention through core-kernels
``varlen_attention``), the VLM (encoder + GeLU adapter + any HF causal LM), the image processor and
token layout, the official↔HF weight converter and the evaluation protocol. HF transformers'
Pixtral/Llava are the parity oracles, not dependencies of the forward pass.

Every public name is loaded lazily (module ``__getattr__``): ``import paperbricks.pixtral`` imports
neither torch, transformers nor triton until a name is used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from paperbricks.core_kernels.lazy import lazy_exports

try:
    __version__ = version("paperbricks-pixtral")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "Pixtral 12B",
    "arxiv": "2410.07073",
}

_LAZY: dict[str, str] = {
    # models (P1, P2)
    "PixtralVisionConfig": "models",
    "PixtralVisionModel": "models",
    "PixtralVisionOutput": "models",
    "PixtralVisionPreTrainedModel": "models",
    "count_parameters": "models",
    "PixtralVLMConfig": "models",
    "PixtralForConditionalGeneration": "models",
    "VisionLanguageAdapter": "models",
    # converter
    "mistral_to_hf": "convert",
    "hf_to_mistral": "convert",
    # processing (P3)
    "IMAGE_MEAN": "processing",
    "IMAGE_STD": "processing",
    "ROUNDING_MODES": "processing",
    "PixtralImageProcessor": "processing",
    "expand_prompt": "processing",
    "image_grid": "processing",
    "image_token_layout": "processing",
    "num_image_tokens": "processing",
    "resized_size": "processing",
    # evaluation
    "PROMPTS": "evaluation",
    "JUDGE_SYSTEM_PROMPT": "evaluation",
    "MultiTurnResult": "evaluation",
    "MultiTurnRunner": "evaluation",
    "anls": "evaluation",
    "format_prompt": "evaluation",
    "load_conversations": "evaluation",
    "normalize_answer": "evaluation",
    "parse_anywhere": "evaluation",
    "parse_explicit": "evaluation",
    "parse_judge_score": "evaluation",
    "parse_number": "evaluation",
    "relaxed_correctness": "evaluation",
    "score_dataset": "evaluation",
    "vqa_match": "evaluation",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = ["PAPER", "__version__", *_LAZY]

"""HF-style Aria models (arXiv 2410.05993): configurations, the MoE decoder, the ViT, the projector
and the multimodal model.

Importing registers our classes with the Auto classes: ``AutoConfig`` (model types
``"paperbricks_aria"``, ``"paperbricks_aria_text"``, ``"paperbricks_aria_vision"``), ``AutoModel``
(``AriaTextModel``, ``AriaVisionModel``), ``AutoModelForCausalLM`` (``AriaTextForCausalLM``) and
``AutoModelForImageTextToText`` (``AriaForConditionalGeneration``), plus the key renamings that
read HF 5.x Aria / Aria-text ``save_pretrained`` directories (and write the same layout back).
"""

from transformers import AutoConfig

from .configuration_aria import AriaConfig, AriaTextConfig, AriaVisionConfig

for _cfg in (AriaVisionConfig, AriaTextConfig, AriaConfig):
    AutoConfig.register(_cfg.model_type, _cfg, exist_ok=True)

# After the configs: the modeling modules register themselves on import.
from .modeling_aria import (  # noqa: E402
    AriaForConditionalGeneration,
    AriaPreTrainedModel,
    AriaProjector,
    AriaVisionModel,
    AriaVisionOutput,
    patch_attention_mask,
    vision_position_ids,
)
from .modeling_aria_text import (  # noqa: E402
    AriaCausalLMOutput,
    AriaMoELayer,
    AriaTextForCausalLM,
    AriaTextModel,
    AriaTextModelOutput,
)

__all__ = [
    "AriaCausalLMOutput",
    "AriaConfig",
    "AriaForConditionalGeneration",
    "AriaMoELayer",
    "AriaPreTrainedModel",
    "AriaProjector",
    "AriaTextConfig",
    "AriaTextForCausalLM",
    "AriaTextModel",
    "AriaTextModelOutput",
    "AriaVisionConfig",
    "AriaVisionModel",
    "AriaVisionOutput",
    "patch_attention_mask",
    "vision_position_ids",
]

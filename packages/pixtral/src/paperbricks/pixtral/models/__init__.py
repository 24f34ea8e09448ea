"""HF-style Pixtral models: the vision encoder and the VLM.

Importing registers :class:`PixtralVisionModel` with ``AutoConfig``/``AutoModel`` (model type
``"paperbricks_pixtral_vision"``) and :class:`PixtralForConditionalGeneration` with
``AutoConfig``/``AutoModelForImageTextToText`` (model type ``"paperbricks_pixtral"``, plus the
key renaming that reads HF Llava-Pixtral checkpoints).
"""

from transformers import AutoConfig, AutoModel

from .configuration_pixtral import PixtralVisionConfig
from .modeling_pixtral_vision import (
    PixtralVisionModel,
    PixtralVisionOutput,
    PixtralVisionPreTrainedModel,
    count_parameters,
)

AutoConfig.register(PixtralVisionConfig.model_type, PixtralVisionConfig, exist_ok=True)
AutoModel.register(PixtralVisionConfig, PixtralVisionModel, exist_ok=True)

# After the encoder's registration: the VLM module registers itself on import.
from .configuration_pixtral_vlm import PixtralVLMConfig  # noqa: E402
from .modeling_pixtral_vlm import (  # noqa: E402
    PixtralForConditionalGeneration,
    VisionLanguageAdapter,
)

__all__ = [
    "PixtralForConditionalGeneration",
    "PixtralVLMConfig",
    "PixtralVisionConfig",
    "PixtralVisionModel",
    "PixtralVisionOutput",
    "PixtralVisionPreTrainedModel",
    "VisionLanguageAdapter",
    "count_parameters",
]

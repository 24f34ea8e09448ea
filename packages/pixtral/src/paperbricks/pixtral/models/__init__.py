"""HF-style Pixtral models: :class:`PixtralVisionConfig`, :class:`PixtralVisionModel`.

Importing registers them with ``AutoConfig``/``AutoModel`` under model type
``"paperbricks_pixtral_vision"``.
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

__all__ = [
    "PixtralVisionConfig",
    "PixtralVisionModel",
    "PixtralVisionOutput",
    "PixtralVisionPreTrainedModel",
    "count_parameters",
]

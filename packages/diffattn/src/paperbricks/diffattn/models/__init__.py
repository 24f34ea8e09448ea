"""HF-style models: the Differential Transformer LM and its parameter-matched Transformer control.

Importing this package registers both model types with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM`` (``"paperbricks_diff_transformer"`` and
``"paperbricks_baseline_transformer"``), so ``AutoModelForCausalLM.from_pretrained(dir)`` loads a
saved checkpoint once ``paperbricks.diffattn.models`` has been imported. Importing it imports
transformers, whose ``PreTrainedModel`` (5.x) pulls in ``torch._dynamo`` and with it triton; it does
not initialise CUDA. ``import paperbricks.diffattn`` itself stays lean: it loads this subpackage on
first access.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_diff_transformer import BaselineTransformerConfig, DiffTransformerConfig
from .modeling_diff_transformer import (
    BaselineTransformerForCausalLM,
    BaselineTransformerModel,
    BaselineTransformerPreTrainedModel,
    DiffTransformerForCausalLM,
    DiffTransformerModel,
    DiffTransformerPreTrainedModel,
)

AutoConfig.register(DiffTransformerConfig.model_type, DiffTransformerConfig, exist_ok=True)
AutoConfig.register(BaselineTransformerConfig.model_type, BaselineTransformerConfig, exist_ok=True)
AutoModel.register(DiffTransformerConfig, DiffTransformerModel, exist_ok=True)
AutoModel.register(BaselineTransformerConfig, BaselineTransformerModel, exist_ok=True)
AutoModelForCausalLM.register(DiffTransformerConfig, DiffTransformerForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(
    BaselineTransformerConfig, BaselineTransformerForCausalLM, exist_ok=True
)

__all__ = [
    "BaselineTransformerConfig",
    "BaselineTransformerForCausalLM",
    "BaselineTransformerModel",
    "BaselineTransformerPreTrainedModel",
    "DiffTransformerConfig",
    "DiffTransformerForCausalLM",
    "DiffTransformerModel",
    "DiffTransformerPreTrainedModel",
]

"""HF-style MLP-KAN models: the ViT image classifier and the function-learning regressor.

Importing this package registers ``"paperbricks_mlpkan_vit"`` (``MLPKANConfig``) with
``AutoConfig``, ``AutoModel`` (:class:`MLPKANViTModel`) and ``AutoModelForImageClassification``
(:class:`MLPKANForImageClassification`), and ``"paperbricks_mlpkan_regressor"``
(``MLPKANRegressorConfig``) with ``AutoConfig`` and ``AutoModel`` (:class:`MLPKANRegressor`), so
``AutoModel*.from_pretrained(dir)`` loads a saved checkpoint once ``paperbricks.mlpkan.models`` has
been imported. Importing it imports transformers (but neither triton nor CUDA).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_mlpkan import (
    FFN_TYPES,
    MLPKANConfig,
    MLPKANRegressorConfig,
    count_parameters,
    match_hidden,
    matched_config,
)
from .modeling_mlpkan import (
    MLPKANForImageClassification,
    MLPKANImageClassifierOutput,
    MLPKANPreTrainedModel,
    MLPKANRegressor,
    MLPKANRegressorOutput,
    MLPKANRegressorPreTrainedModel,
    MLPKANViTModel,
    MLPKANViTOutput,
)

AutoConfig.register(MLPKANConfig.model_type, MLPKANConfig, exist_ok=True)
AutoConfig.register(MLPKANRegressorConfig.model_type, MLPKANRegressorConfig, exist_ok=True)
AutoModel.register(MLPKANConfig, MLPKANViTModel, exist_ok=True)
AutoModel.register(MLPKANRegressorConfig, MLPKANRegressor, exist_ok=True)
AutoModelForImageClassification.register(MLPKANConfig, MLPKANForImageClassification, exist_ok=True)

__all__ = [
    "FFN_TYPES",
    "MLPKANConfig",
    "MLPKANForImageClassification",
    "MLPKANImageClassifierOutput",
    "MLPKANPreTrainedModel",
    "MLPKANRegressor",
    "MLPKANRegressorConfig",
    "MLPKANRegressorOutput",
    "MLPKANRegressorPreTrainedModel",
    "MLPKANViTModel",
    "MLPKANViTOutput",
    "count_parameters",
    "match_hidden",
    "matched_config",
]

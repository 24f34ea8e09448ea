"""HF-style Aria models (arXiv 2410.05993): configurations, the ViT, the projector and the VLM.

Importing registers our classes with ``AutoConfig`` (model types ``"paperbricks_aria"``,
``"paperbricks_aria_text"``, ``"paperbricks_aria_vision"``) and, once the modeling modules
exist, with ``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoModelForImageTextToText``.
"""

from transformers import AutoConfig

from .configuration_aria import AriaConfig, AriaTextConfig, AriaVisionConfig

for _cfg in (AriaVisionConfig, AriaTextConfig, AriaConfig):
    AutoConfig.register(_cfg.model_type, _cfg, exist_ok=True)

__all__ = ["AriaConfig", "AriaTextConfig", "AriaVisionConfig"]

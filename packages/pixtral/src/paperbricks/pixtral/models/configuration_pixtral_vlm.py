"""Configuration of the Pixtral VLM (arXiv 2410.07073): our ViT + GeLU adapter + any causal LM.

``PixtralVLMConfig`` is field-compatible with HF ``LlavaConfig`` as Llava-Pixtral checkpoints use
it (``vision_config``, ``text_config``, ``image_token_index`` / ``image_token_id``,
``projector_hidden_act``, ``multimodal_projector_bias``, ``vision_feature_layer``,
``vision_feature_select_strategy``), so an HF Llava-Pixtral ``config.json`` loads into it directly.
What differs from ``LlavaConfig``: the defaults are Pixtral's, not LLaVA-1.5's (the traps of spec
§3): ``image_token_index=10``, ``vision_feature_layer=-1``,
``vision_feature_select_strategy="full"`` (Pixtral has no CLS slot to drop), and the vision tower
defaults to our Pixtral-ViT (``hidden_act="silu"``) with a Mistral decoder. A loaded config's
values always win over these defaults.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoConfig, PretrainedConfig

from paperbricks.pixtral.models.configuration_pixtral import PixtralVisionConfig

__all__ = ["PixtralVLMConfig"]

_VISION_SUFFIXES = ("pixtral", "paperbricks_pixtral_vision")


def _to_vision_config(value: Any) -> PretrainedConfig:
    cls = PixtralVisionConfig
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, PretrainedConfig):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(
            "vision_config: expected None, a dict or a PretrainedConfig, "
            f"got {type(value).__name__}"
        )
    data = dict(value)
    model_type = data.pop("model_type", None)
    if model_type is not None and model_type not in (*_VISION_SUFFIXES, cls.model_type):
        raise ValueError(
            "vision_config: expected a Pixtral vision config (model_type 'pixtral' or "
            f"{cls.model_type!r}), got model_type {model_type!r}"
        )
    for key in ("transformers_version", "architectures"):
        data.pop(key, None)
    return cls(**data)


def _to_text_config(value: Any) -> PretrainedConfig:
    if value is None:
        return AutoConfig.for_model("mistral")
    if isinstance(value, PretrainedConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(
            f"text_config: expected None, a dict or a PretrainedConfig, got {type(value).__name__}"
        )
    data = dict(value)
    model_type = data.pop("model_type", "mistral")
    for key in ("transformers_version",):
        data.pop(key, None)
    return AutoConfig.for_model(model_type, **data)


class PixtralVLMConfig(PretrainedConfig):
    """Config of :class:`PixtralForConditionalGeneration`.

    Args:
        vision_config: dict / HF ``PixtralVisionConfig`` / our ``PixtralVisionConfig``; ``None``
            gives the published encoder (24 layers, d 1024, SiLU).
        text_config: dict (with ``model_type``) or any causal-LM ``PretrainedConfig``; ``None``
            gives a default ``MistralConfig``.
        image_token_index: id of ``[IMG]`` (default 10); also readable as ``image_token_id``.
        projector_hidden_act: adapter activation (default ``"gelu"``, exact).
        multimodal_projector_bias: biases in the two adapter linears (default ``True``).
        vision_feature_layer: which hidden state of the encoder feeds the adapter; only ``-1``
            (the last) is supported, as in Pixtral.
        vision_feature_select_strategy: ``"full"`` (default; Pixtral) — ``"default"`` would drop
            a CLS slot that Pixtral does not have and is rejected.
        image_seq_length: kept for Llava compatibility (unused: Pixtral's count depends on size).
        tie_word_embeddings: tie ``lm_head`` to the input embeddings (default: the text config's).

    Examples:
        >>> cfg = PixtralVLMConfig(
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                        num_attention_heads=2, image_size=64, patch_size=8),
        ...     text_config=dict(model_type="mistral", hidden_size=32, intermediate_size=64,
        ...                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        ...                      vocab_size=64))
        >>> cfg.image_token_id
        10
    """

    model_type = "paperbricks_pixtral"
    attribute_map: ClassVar[dict[str, str]] = {"image_token_id": "image_token_index"}
    sub_configs: ClassVar[dict[str, type]] = {
        "text_config": AutoConfig,
        "vision_config": PixtralVisionConfig,
    }

    def __init__(
        self,
        vision_config: Any = None,
        text_config: Any = None,
        image_token_index: int = 10,
        projector_hidden_act: str = "gelu",
        multimodal_projector_bias: bool = True,
        vision_feature_layer: int = -1,
        vision_feature_select_strategy: str = "full",
        image_seq_length: int = 576,
        tie_word_embeddings: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(image_token_index, int) or image_token_index < 0:
            raise ValueError(
                f"image_token_index: expected a non-negative int, got {image_token_index!r}"
            )
        if vision_feature_layer != -1:
            raise ValueError(
                "vision_feature_layer: only -1 (the encoder's last hidden state, as in Pixtral) "
                f"is supported, got {vision_feature_layer!r}"
            )
        if vision_feature_select_strategy != "full":
            raise ValueError(
                "vision_feature_select_strategy: expected 'full' (Pixtral has no CLS slot), "
                f"got {vision_feature_select_strategy!r}"
            )
        self.vision_config = _to_vision_config(vision_config)
        self.text_config = _to_text_config(text_config)
        self.image_token_index = image_token_index
        self.projector_hidden_act = projector_hidden_act
        self.multimodal_projector_bias = bool(multimodal_projector_bias)
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_seq_length = image_seq_length
        kwargs.pop("model_type", None)  # an HF Llava config.json says "llava"; we stay ours
        if tie_word_embeddings is None:
            tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        out["text_config"] = self.text_config.to_dict()
        return out


AutoConfig.register(PixtralVLMConfig.model_type, PixtralVLMConfig, exist_ok=True)

"""A tiny LLaVA-style vision-language model and its processor, built from configs (nothing downloaded).

The model is transformers' own ``LlavaForConditionalGeneration``: a tiny vision tower
(``CLIPVisionConfig`` or ``SiglipVisionConfig``), LLaVA's two-layer GELU projector and a tiny Llama
language model (core-kernels' :func:`~paperbricks.core_kernels.testing.tiny_llama_config` with
our sizes). The processor is transformers' ``LlavaProcessor`` around a CLIP image processor (PIL
backend) and an in-process word-level tokenizer (core-kernels'
:func:`~paperbricks.core_kernels.testing.tiny_tokenizer`) whose vocabulary is
:data:`paperbricks.mir.data.VOCAB_WORDS` plus an ``<image>`` special token, with a chat template
that renders ``{"type": "image"}`` entries as ``<image>``. The processor expands each ``<image>``
into ``(image_size / patch_size)²`` image tokens (the CLS feature is dropped for CLIP, LLaVA's
``"default"`` strategy; SigLIP has none).

Both save with ``save_pretrained`` and reload with ``LlavaForConditionalGeneration`` /
``AutoProcessor.from_pretrained(path, local_files_only=True)``, so a saved tiny model is a
stand-in for a real local checkpoint in the CLI and in tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "IMAGE_TOKEN",
    "TINY_VLM_CHAT_TEMPLATE",
    "TinyVLMConfig",
    "build_processor",
    "build_tiny_vlm",
]

logger = logging.getLogger(__name__)

#: The image placeholder the processor expands.
IMAGE_TOKEN = "<image>"

#: Jinja chat template of the tiny processor: string contents, or lists of
#: ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items, e.g.
#: ``<s><|user|> <image> what color is the shape ? </s> <|assistant|>``.
TINY_VLM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|> "
    "{% if message['content'] is string %}{{ message['content'] }} "
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> "
    "{% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}"
    "{% endfor %}{% endif %}{{ eos_token }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyVLMConfig:
    """Sizes of the tiny LLaVA-style model (every field has a small default).

    The number of image tokens per image is ``(image_size // patch_size) ** 2``.
    """

    vision_tower: Literal["clip", "siglip"] = "clip"  # which transformers vision encoder
    image_size: int = 32  # pixels per side (the processor resizes/crops to this)
    patch_size: int = 8  # vision patch side; 32/8 -> 16 image tokens
    vision_hidden_size: int = 32  # vision tower width
    vision_intermediate_size: int = 64  # vision MLP width
    vision_layers: int = 2  # vision encoder layers
    vision_heads: int = 2  # vision attention heads
    vision_feature_layer: int = -1  # which vision hidden state feeds the projector (LLaVA: -2)
    hidden_size: int = 64  # language model width
    intermediate_size: int = 128  # language model SwiGLU width
    num_layers: int = 2  # language model decoder layers
    num_heads: int = 4  # language model attention heads
    num_kv_heads: int = 2  # language model key/value heads (grouped-query attention)
    max_position_embeddings: int = 256  # longest sequence, image tokens included

    def __post_init__(self) -> None:
        if self.vision_tower not in ("clip", "siglip"):
            raise ValueError(
                f"TinyVLMConfig.vision_tower: expected 'clip' or 'siglip', got {self.vision_tower!r}"
            )
        for name in (
            "image_size",
            "patch_size",
            "vision_hidden_size",
            "vision_intermediate_size",
            "vision_layers",
            "vision_heads",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "max_position_embeddings",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TinyVLMConfig.{name}: expected an int >= 1, got {v!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"TinyVLMConfig.image_size: expected a multiple of patch_size={self.patch_size}, "
                f"got {self.image_size}"
            )
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(
                "TinyVLMConfig.vision_hidden_size: expected a multiple of vision_heads, got "
                f"{self.vision_hidden_size} and {self.vision_heads}"
            )
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                "TinyVLMConfig.hidden_size/num_heads/num_kv_heads: expected hidden_size divisible "
                f"by num_heads and num_heads by num_kv_heads, got {self.hidden_size}, "
                f"{self.num_heads}, {self.num_kv_heads}"
            )
        n_hidden = self.vision_layers + 1
        if not -n_hidden <= self.vision_feature_layer < n_hidden:
            raise ValueError(
                f"TinyVLMConfig.vision_feature_layer: expected an index into the {n_hidden} vision "
                f"hidden states, got {self.vision_feature_layer}"
            )

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per image in the language model's sequence."""
        return (self.image_size // self.patch_size) ** 2


def build_processor(config: TinyVLMConfig | None = None) -> Any:
    """The ``LlavaProcessor`` of the tiny model (tokenizer + image processor + chat template).

    Args:
        config: sizes (only ``image_size``, ``patch_size`` and ``vision_tower`` matter); default
            ``TinyVLMConfig()``.

    Returns:
        ``transformers.LlavaProcessor`` with ``image_token_id`` set; its tokenizer pads on the
        right and knows every word of :data:`paperbricks.mir.data.VOCAB_WORDS`.

    Examples:
        >>> proc = build_processor()
        >>> proc.tokenizer.convert_ids_to_tokens(proc.image_token_id)
        '<image>'
    """
    from transformers import LlavaProcessor

    from paperbricks.core_kernels.testing import tiny_tokenizer
    from paperbricks.core_kernels.testing.factories import TINY_SPECIAL_TOKENS

    from .data import VOCAB_WORDS

    config = TinyVLMConfig() if config is None else config
    if not isinstance(config, TinyVLMConfig):
        raise TypeError(f"config: expected a TinyVLMConfig, got {type(config).__name__}")
    tokenizer = tiny_tokenizer(
        VOCAB_WORDS, (*TINY_SPECIAL_TOKENS, IMAGE_TOKEN), chat_template=TINY_VLM_CHAT_TEMPLATE
    )
    tokenizer.padding_side = "right"
    image_processor = _image_processor(config.image_size)
    is_clip = config.vision_tower == "clip"
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.patch_size,
        vision_feature_select_strategy="default" if is_clip else "full",
        chat_template=TINY_VLM_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1 if is_clip else 0,
    )


def _image_processor(image_size: int) -> Any:
    # The PIL backend needs no torchvision; fall back to the default class on versions without it.
    try:
        from transformers.models.clip.image_processing_pil_clip import (
            CLIPImageProcessorPil as ImageProcessor,
        )
    except ImportError:  # pragma: no cover - depends on the transformers version
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def build_tiny_vlm(config: TinyVLMConfig | None = None, *, seed: int = 0) -> tuple[Any, Any]:
    """A randomly initialised tiny ``LlavaForConditionalGeneration`` and its processor.

    Initialisation draws from a forked copy of torch's global RNG seeded with ``seed``, so the
    caller's RNG state is untouched and the same seed gives the same weights.

    Args:
        config: sizes; default ``TinyVLMConfig()`` (CLIP 32-wide, 2 layers, 16 image tokens;
            Llama 64-wide, 2 layers; about 115k parameters).
        seed: initialisation seed. Default 0.

    Returns:
        ``(model, processor)``: the model in float32 on the CPU in eval mode, with
        ``config.image_token_id`` equal to ``processor.image_token_id``.

    Examples:
        >>> import torch
        >>> from paperbricks.mir.data import caption_pairs
        >>> model, proc = build_tiny_vlm(seed=0)
        >>> pair = caption_pairs(1, seed=0)[0]
        >>> msgs = [{"role": "user", "content": [{"type": "image"}]}]
        >>> prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
        >>> batch = proc(images=[pair.image], text=[prompt], return_tensors="pt")
        >>> int((batch["input_ids"] == proc.image_token_id).sum())
        16
        >>> model(**batch).logits.shape[-1] == len(proc.tokenizer)
        True
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SiglipVisionConfig,
    )

    from paperbricks.core_kernels.testing import tiny_llama_config

    config = TinyVLMConfig() if config is None else config
    if not isinstance(config, TinyVLMConfig):
        raise TypeError(f"config: expected a TinyVLMConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    processor = build_processor(config)
    tokenizer = processor.tokenizer
    vision_kwargs = dict(
        hidden_size=config.vision_hidden_size,
        intermediate_size=config.vision_intermediate_size,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
    )
    if config.vision_tower == "clip":
        vision = CLIPVisionConfig(projection_dim=config.vision_hidden_size, **vision_kwargs)
        strategy = "default"
    else:
        vision = SiglipVisionConfig(**vision_kwargs)
        strategy = "full"
    text = tiny_llama_config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        image_seq_length=config.num_image_tokens,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=strategy,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(llava)
    model.eval()
    logger.debug(
        "built a tiny LLaVA (%s, %d parameters)",
        config.vision_tower,
        sum(p.numel() for p in model.parameters()),
    )
    return model, processor

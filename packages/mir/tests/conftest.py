"""Shared test fixtures of the mir package."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

#: The tiny LLaVA of the tests: CLIP at 16 px with patch 4 -> 16 image tokens per image (CLS
#: dropped by the "default" feature strategy).
TINY_LLAVA_IMAGE_SIZE, TINY_LLAVA_PATCH = 16, 4


def _build_tiny_llava(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from paperbricks.core_kernels.testing import tiny_llama_config, tiny_tokenizer
    from paperbricks.core_kernels.testing.factories import TINY_SPECIAL_TOKENS

    size, patch = TINY_LLAVA_IMAGE_SIZE, TINY_LLAVA_PATCH
    tok = tiny_tokenizer(special_tokens=[*TINY_SPECIAL_TOKENS, "<image>"])
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=size,
        patch_size=patch,
        projection_dim=16,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=tiny_llama_config(vocab_size=len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(dtype).eval()
    ip = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    proc = LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, proc


@pytest.fixture(scope="session")
def make_tiny_llava() -> Callable[..., tuple[Any, Any]]:
    """Builds the tiny LLaVA and its processor: ``model, proc = make_tiny_llava(dtype)``."""
    return _build_tiny_llava

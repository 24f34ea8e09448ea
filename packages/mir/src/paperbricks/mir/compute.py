"""``compute_mir``: the MIR of a local HF vision-language model on image/text pairs (arXiv 2410.07167).

As in the paper, each sample is one image (or several) followed by an **unrelated** text: the
user turn holds the image placeholder(s), the assistant turn the text, and one prefill pass reads
the language model's hidden states. Vision rows are the expanded image-token positions, text rows
every position after the last image token (the template's assistant marker, the text, EOS).
Hidden states stream through :class:`paperbricks.mir.accumulator.MIRAccumulator` in two passes,
so memory does not grow with the number of samples.

Prompt templates (our own wording; the official code uses LLaVA's ``vicuna_v1`` conversation):

- ``"chat"``: the processor's chat template with ``[{"type": "image"}…]`` in the user turn and the
  text as the assistant turn (falls back to ``"plain"`` when the processor has no chat template);
- ``"vicuna_v1"``: ``"<system> USER: <image>\\n ASSISTANT: <text></s>"`` in LLaVA-1.5's layout;
- ``"plain"``: ``"<image>\\n<text>"``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from .accumulator import MIRAccumulator
from .masks import image_span_token_ids, resolve_image_token_id
from .metric import METHODS, MIRResult

__all__ = ["TEMPLATES", "build_prompt", "compute_mir"]

logger = logging.getLogger(__name__)

TEMPLATES = ("chat", "vicuna_v1", "plain")
_VICUNA_SYSTEM = (
    "A conversation between a user and an AI assistant that answers helpfully and politely."
)


def _image_token(processor: Any) -> str:
    token = getattr(processor, "image_token", None)
    if not isinstance(token, str) or not token:
        raise ValueError(
            f"processor: {type(processor).__name__} has no image_token string; "
            "compute_mir needs a HF multimodal processor (LLaVA, Pixtral, Aria, ...)"
        )
    return token


def _chat_template(processor: Any) -> str | None:
    # Only the processor's own template: VLM templates live there and render image items; a bare
    # tokenizer template usually expects string contents.
    template = getattr(processor, "chat_template", None)
    return template if isinstance(template, str) and template else None


def build_prompt(processor: Any, text: str, n_images: int = 1, template: str = "chat") -> str:
    """The prompt of one sample: ``n_images`` image placeholders, then ``text`` as the answer.

    Args:
        processor: a HF multimodal processor (provides ``image_token`` and maybe a chat template).
        text: the (unrelated) text.
        n_images: placeholders in the user turn (>= 1).
        template: ``"chat"`` (default), ``"vicuna_v1"`` or ``"plain"``.

    Returns:
        the prompt string (the processor expands each placeholder into image tokens).
    """
    if template not in TEMPLATES:
        raise ValueError(f"template: expected one of {TEMPLATES}, got {template!r}")
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images: expected an int >= 1, got {n_images!r}")
    token = _image_token(processor)
    if template == "chat" and _chat_template(processor) is not None:
        messages = [
            {"role": "user", "content": [{"type": "image"}] * n_images},
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
        ]
        return processor.apply_chat_template(messages, tokenize=False)
    if template == "vicuna_v1":
        eos = getattr(getattr(processor, "tokenizer", None), "eos_token", None) or ""
        return f"{_VICUNA_SYSTEM} USER: {token * n_images}\n ASSISTANT: {text}{eos}"
    return f"{token * n_images}\n{text}"


def _load_image(item: Any) -> Any:
    if isinstance(item, (str, Path)):
        from PIL import Image

        with Image.open(item) as im:
            return im.convert("RGB")
    return item


def compute_mir(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    texts: Sequence[str],
    *,
    num: int | None = None,
    template: Literal["chat", "vicuna_v1", "plain"] = "chat",
    method: str = "exact",
    device: torch.device | str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    layers: Sequence[int] | None = None,
    median: Literal["exact", "reservoir"] = "exact",
    image_token_id: int | None = None,
    **accumulator_kwargs: Any,
) -> MIRResult:
    """MIR of ``model`` over ``num`` image/text pairs, streamed in two passes.

    Args:
        model: a HF vision-language model (``LlavaForConditionalGeneration``,
            ``Mistral3ForConditionalGeneration``, ``AriaForConditionalGeneration``, ...), put in
            eval mode for the call.
        processor: its HF processor (expands image placeholders into image tokens).
        images: PIL images or image paths; an entry may be a list of them (several images in
            one sample).
        texts: strings, paired with ``images`` by position (the paper pairs unrelated ones).
        num: number of pairs to use (default ``min(len(images), len(texts))``); more than
            available is an error.
        template: ``"chat"`` (default), ``"vicuna_v1"`` or ``"plain"`` (see module docstring).
        method: Fréchet method: ``"exact"`` (default, = ``"eigh"`` here), ``"eigh"``,
            ``"eigvals"``, ``"sqrtm"`` or
            ``"official_fast"`` (bug-compatible; warns). ``"gram"`` needs in-memory rows and is
            refused here.
        device: where to run; default the model's current device (given, the model is moved).
        batch_size: samples per forward pass (default 8).
        progress: tqdm bars for both passes (default True).
        layers: hidden-state indices (``0 … L`` numbering); default ``1 … L``.
        median: ``"exact"`` (default) or ``"reservoir"`` (see :class:`MIRAccumulator`).
        image_token_id: default ``model.config.image_token_id``.
        **accumulator_kwargs: passed to :class:`MIRAccumulator` (``sigma``, ``memory_limit_bytes``,
            ``spill_dir``, ``last_hidden``, ``mask_fn`` ...).

    Returns:
        :class:`~paperbricks.mir.metric.MIRResult`.

    Examples:
        >>> from paperbricks.mir.compute import compute_mir  # doctest: +SKIP
        >>> res = compute_mir(model, processor, images, texts, num=100)  # doctest: +SKIP
        >>> res.mir, res.per_layer_fd  # doctest: +SKIP
    """
    if method not in METHODS or method == "gram":
        raise ValueError(
            f"method: expected one of {tuple(m for m in METHODS if m != 'gram')}, got {method!r}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts: expected a sequence of strings, got {type(texts).__name__}")
    if not isinstance(images, Sequence):
        raise TypeError(f"images: expected a sequence of images, got {type(images).__name__}")
    available = min(len(images), len(texts))
    if num is None:
        num = available
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num: expected a positive int, got {num!r}")
    if num > available:
        raise ValueError(
            f"num: asked for {num} pairs but only {len(images)} images and {len(texts)} texts given"
        )
    if template not in TEMPLATES:
        raise ValueError(f"template: expected one of {TEMPLATES}, got {template!r}")
    if device is not None:
        model.to(device)
    was_training = model.training
    model.eval()
    token_id = (
        resolve_image_token_id(model, image_token_id)
        if accumulator_kwargs.get("mask_fn") is None
        else image_token_id
    )
    span = accumulator_kwargs.pop("span_token_ids", None)
    if span is None and token_id is not None:
        span = image_span_token_ids(processor, token_id)
    n_batches = math.ceil(num / batch_size)

    def batches() -> Iterator[dict]:
        for start in range(0, num, batch_size):
            stop = min(start + batch_size, num)
            imgs, prompts = [], []
            for i in range(start, stop):
                item = images[i]
                group = list(item) if isinstance(item, (list, tuple)) else [item]
                imgs.append([_load_image(x) for x in group])
                prompts.append(build_prompt(processor, texts[i], len(group), template))
            single = all(len(g) == 1 for g in imgs)
            kwargs: dict[str, Any] = {"return_tensors": "pt", "padding": True}
            if template == "chat" and _chat_template(processor) is not None:
                kwargs["add_special_tokens"] = False  # the chat template already adds BOS
            enc = processor(images=[g[0] for g in imgs] if single else imgs, text=prompts, **kwargs)
            yield dict(enc)

    acc = MIRAccumulator(
        model,
        image_token_id=token_id,
        span_token_ids=span or (),
        layers=layers,
        median=median,
        **accumulator_kwargs,
    )
    try:
        result = acc.run(batches, method=method, progress=progress, total=n_batches)
    finally:
        acc.remove()
        model.train(was_training)
    result.extra.update({"num": num, "template": template})
    logger.info("MIR = %.4f over %d pairs (%s)", result.mir, num, method)
    return result

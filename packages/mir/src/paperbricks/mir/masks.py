"""Vision and text token masks for MIR, from *expanded* input ids (arXiv 2410.07167, §3 token split).

MIR compares the language model's hidden states at image-token positions (vision rows) with those
at the positions after the image (text rows: the template such as "ASSISTANT:", the text, EOS).
In transformers 5.x the processors of the LLaVA family (``LlavaProcessor``, LLaVA-NeXT ...),
Llava-Pixtral (``PixtralProcessor`` for ``Mistral3ForConditionalGeneration``) and Aria
(``AriaProcessor``) expand every image placeholder into one image token per visual feature before
the model sees the ids, and the model scatters the image features exactly where
``input_ids == image_token_id``. So:

- vision mask = ``input_ids == image_token_id`` (every image of a sample, however many);
- text mask = attended positions strictly after the last *image-span* token of the sample. The
  span tokens are the image token plus any structural tokens the processor inserts inside an
  image (Pixtral's ``[IMG_BREAK]`` / ``[IMG_END]``, which carry text embeddings, are neither vision
  nor text rows). A sample without image tokens contributes all its attended positions as text.

What differs from the official code: upstream (LLaVA-1.5 fork) builds the modality mask from the
placeholder positions in the *unexpanded* ids plus a hard-coded 576 features per image, so with
two images per sample the second image's span is offset by the first one's expansion and the mask
marks the wrong positions. Building it from the expanded ids has no such offset.

Other models plug in through a user mask function ``mask_fn(batch) -> (vision (B, T), text (B, T))``
(see :func:`paperbricks.mir.accumulator.MIRAccumulator`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

__all__ = [
    "MaskFn",
    "image_span_token_ids",
    "modality_masks",
    "resolve_image_token_id",
    "text_mask_after_images",
    "vision_mask",
]

#: A user-supplied mask function: ``mask_fn(batch) -> (vision_mask (B, T), text_mask (B, T))``.
MaskFn = Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]


def _check_ids(input_ids: object) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"input_ids: expected a (B, T) integer tensor, got {type(input_ids).__name__}"
        )
    if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(
            f"input_ids: expected a (B, T) integer tensor, got {input_ids.dtype} "
            f"{tuple(input_ids.shape)}"
        )
    return input_ids


def _as_id_list(name: str, ids: int | Iterable[int]) -> list[int]:
    if isinstance(ids, bool):
        raise TypeError(f"{name}: expected an int or a collection of ints, got {ids!r}")
    if isinstance(ids, int):
        return [ids]
    try:
        out = [int(i) for i in ids]
    except TypeError as exc:
        raise TypeError(f"{name}: expected an int or a collection of ints, got {ids!r}") from exc
    return out


def vision_mask(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """``(B, T)`` bool: the positions holding an image feature (``input_ids == image_token_id``).

    Args:
        input_ids: ``(B, T)`` integer ids *after* the processor expanded the image placeholders.
        image_token_id: the model's image token id (``model.config.image_token_id``).

    Examples:
        >>> import torch
        >>> vision_mask(torch.tensor([[1, 9, 9, 4, 9, 5]]), 9).int().tolist()
        [[0, 1, 1, 0, 1, 0]]
    """
    ids = _check_ids(input_ids)
    if isinstance(image_token_id, bool) or not isinstance(image_token_id, int):
        raise TypeError(f"image_token_id: expected an int, got {image_token_id!r}")
    return ids == image_token_id


def text_mask_after_images(
    input_ids: torch.Tensor,
    span_token_ids: int | Iterable[int],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, T)`` bool: attended positions strictly after the last image-span token of each row.

    Args:
        input_ids: ``(B, T)`` expanded integer ids.
        span_token_ids: the image token id, or the ids of every token inside an image span
            (image token plus e.g. Pixtral's ``[IMG_BREAK]``, ``[IMG_END]``).
        attention_mask: optional ``(B, T)`` (bool or 0/1); padding is never text. Either padding
            side works.

    A row without any span token contributes all its attended positions.

    Examples:
        >>> import torch
        >>> text_mask_after_images(torch.tensor([[1, 9, 9, 4, 9, 5, 6]]), 9).int().tolist()
        [[0, 0, 0, 0, 0, 1, 1]]
    """
    ids = _check_ids(input_ids)
    span = _as_id_list("span_token_ids", span_token_ids)
    in_span = torch.isin(ids, torch.tensor(span, dtype=ids.dtype, device=ids.device))  # (B, T)
    t = ids.shape[1]
    pos = torch.arange(t, device=ids.device).expand_as(ids)  # (B, T)
    last = torch.where(in_span, pos, torch.full_like(pos, -1)).amax(dim=1, keepdim=True)  # (B, 1)
    text = pos > last
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != tuple(
            ids.shape
        ):
            raise ValueError(
                f"attention_mask: expected a tensor of shape {tuple(ids.shape)}, got "
                f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
            )
        text = text & attention_mask.to(ids.device).bool()
    return text


def modality_masks(
    input_ids: torch.Tensor,
    image_token_id: int,
    attention_mask: torch.Tensor | None = None,
    *,
    span_token_ids: Iterable[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MIR token split: ``(vision (B, T), text (B, T))`` bool masks from expanded ids.

    Args:
        input_ids: ``(B, T)`` integer ids after image-placeholder expansion (what the processor
            returns and the model consumes).
        image_token_id: id of the image token (one per visual feature).
        attention_mask: optional ``(B, T)``; padded positions are excluded from both masks.
        span_token_ids: further ids that belong to an image span without being vision rows
            (Pixtral's ``[IMG_BREAK]``, ``[IMG_END]``); text starts after the last of them.

    Returns:
        ``(vision, text)``, disjoint ``(B, T)`` bool tensors.

    Examples:
        >>> import torch
        >>> ids = torch.tensor([[1, 9, 9, 4, 9, 9, 5, 6, 0]])  # two images, then text, then pad
        >>> v, t = modality_masks(ids, 9, torch.tensor([[1] * 8 + [0]]))
        >>> v.int().tolist(), t.int().tolist()
        ([[0, 1, 1, 0, 1, 1, 0, 0, 0]], [[0, 0, 0, 0, 0, 0, 1, 1, 0]])
    """
    vis = vision_mask(input_ids, image_token_id)
    span = [image_token_id, *_as_id_list("span_token_ids", span_token_ids)]
    text = text_mask_after_images(input_ids, span, attention_mask)
    if attention_mask is not None:
        vis = vis & attention_mask.to(vis.device).bool()
    return vis, text


def resolve_image_token_id(model: Any, image_token_id: int | None = None) -> int:
    """``image_token_id`` if given, else the model config's ``image_token_id`` / ``image_token_index``.

    Raises:
        ValueError: neither is available (pass ``image_token_id`` or a ``mask_fn``).
    """
    if image_token_id is not None:
        if isinstance(image_token_id, bool) or not isinstance(image_token_id, int):
            raise TypeError(f"image_token_id: expected an int, got {image_token_id!r}")
        return image_token_id
    config = getattr(model, "config", None)
    for attr in ("image_token_id", "image_token_index"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise ValueError(
        f"image_token_id: not given and {type(model).__name__}.config has no image_token_id / "
        "image_token_index; pass image_token_id= (or a mask_fn for other models)"
    )


def image_span_token_ids(processor: Any, image_token_id: int) -> list[int]:
    """Ids of the non-feature tokens inside an image span, read from a HF processor.

    transformers 5.x processors expose ``image_token_ids`` (Pixtral: ``[IMG]``, ``[IMG_BREAK]``,
    ``[IMG_END]``); everything there except ``image_token_id`` is returned (empty for LLaVA, Aria).
    """
    ids: list[int] = []
    for attr in ("image_token_ids",):
        value = getattr(processor, attr, None)
        if isinstance(value, (list, tuple)):
            ids.extend(int(i) for i in value if isinstance(i, int) and not isinstance(i, bool))
    for attr in ("image_break_token_id", "image_end_token_id", "image_start_token_id"):
        value = getattr(processor, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            ids.append(value)
    return sorted({i for i in ids if i != image_token_id})

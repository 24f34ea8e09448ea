"""Thin input helpers for Aria (arXiv 2410.05993, §2): image tokens, padded pixel batches.

The real preprocessing is HF's ``AriaImageProcessor`` (490/980 px, aspect-preserving resize with a
336 px floor on the short side, bicubic, zero padding to a square canvas, mean = std = 0.5,
optional split into crops). In transformers 5.x its default backend needs torchvision; without
it HF falls back to the numpy/PIL twin ``AriaImageProcessorPil``, which
:func:`image_processor` returns directly (same outputs, no torchvision needed). Nothing here
reimplements it.

What is here:

- :func:`expand_image_tokens`: every ``<|img|>`` (id 9) becomes n_q copies (n_q per image/crop);
- :func:`pad_images`: a list of (C, h, w) images -> one zero-padded ``pixel_values`` canvas batch
  and its boolean ``pixel_mask`` (what the processor emits; the pad value is the normalised 0,
  i.e. -1 with mean = std = 0.5, as in ``AriaImageProcessor``);
- :func:`random_pixel_batch`: seeded random images of given sizes on a canvas, for tests/benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "PAD_PIXEL_VALUE",
    "expand_image_tokens",
    "image_processor",
    "pad_images",
    "random_pixel_batch",
]

# A zero pixel after normalisation with mean = std = 0.5: (0 - 0.5) / 0.5.
PAD_PIXEL_VALUE = -1.0


def image_processor(**kwargs: Any):
    """HF's Aria image processor, the backend that needs no torchvision (``AriaImageProcessorPil``).

    Args:
        **kwargs: forwarded (``max_image_size`` 490|980, ``split_image``, ...).

    Examples:
        >>> import numpy as np
        >>> from PIL import Image
        >>> proc = image_processor()
        >>> img = Image.fromarray(np.zeros((200, 300, 3), dtype=np.uint8))
        >>> out = proc(images=[img], max_image_size=490, return_tensors="pt")
        >>> tuple(out["pixel_values"].shape), tuple(out["pixel_mask"].shape)
        ((1, 3, 490, 490), (1, 490, 490))
    """
    from transformers.models.aria.image_processing_pil_aria import AriaImageProcessorPil

    return AriaImageProcessorPil(**kwargs)


def _as_counts(num_queries_per_image: int | Sequence[int], n_images: int) -> list[int]:
    if isinstance(num_queries_per_image, bool):
        raise TypeError("num_queries_per_image: expected an int or a sequence of ints, got bool")
    if isinstance(num_queries_per_image, int):
        counts = [num_queries_per_image] * n_images
    elif isinstance(num_queries_per_image, torch.Tensor):
        counts = [int(c) for c in num_queries_per_image.flatten().tolist()]
    elif isinstance(num_queries_per_image, Sequence):
        counts = [int(c) for c in num_queries_per_image]
    else:
        raise TypeError(
            "num_queries_per_image: expected an int or a sequence of ints, got "
            f"{type(num_queries_per_image).__name__}"
        )
    if len(counts) != n_images:
        raise ValueError(
            f"num_queries_per_image: got {len(counts)} counts for {n_images} image tokens"
        )
    if any(c < 1 for c in counts):
        raise ValueError(f"num_queries_per_image: expected counts >= 1, got {counts}")
    return counts


def expand_image_tokens(
    input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
    num_queries_per_image: int | Sequence[int],
    *,
    image_token_index: int = 9,
    pad_token_id: int | None = None,
    padding_side: str = "left",
) -> Any:
    """Repeat every image token n_q times (one n_q per image or crop, in reading order).

    Args:
        input_ids: one sequence (1-D tensor or list of ints) or a batch (2-D tensor (B, T), or a
            list of lists). In a 2-D tensor, ``pad_token_id`` entries (if given) are dropped
            before expanding.
        num_queries_per_image: an int for every image, or one int per image token in the whole
            input in order (e.g. 128 for a 490 px image, 256 for 980 px; crops each count once).
        image_token_index: id of ``<|img|>``. Default 9.
        pad_token_id: pad id for batch outputs of unequal length (required then).
        padding_side: ``"left"`` (default; what generation wants) or ``"right"``.

    Returns:
        one sequence: a 1-D int64 tensor; a batch: ``(input_ids (B, T'), attention_mask (B, T'))``
        int64 tensors, padded on ``padding_side``.

    Examples:
        >>> expand_image_tokens([1, 9, 5], 3).tolist()
        [1, 9, 9, 9, 5]
        >>> ids, mask = expand_image_tokens([[1, 9, 5], [9, 9]], [2, 1, 2], pad_token_id=0)
        >>> ids.tolist(), mask.tolist()
        ([[1, 9, 9, 5], [0, 9, 9, 9]], [[1, 1, 1, 1], [0, 1, 1, 1]])
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 1:
            rows, single = [input_ids.tolist()], True
        elif input_ids.dim() == 2:
            rows = [
                [t for t in r if pad_token_id is None or t != pad_token_id]
                for r in input_ids.tolist()
            ]
            single = False
        else:
            raise ValueError(
                f"input_ids: expected a 1-D or 2-D tensor, got shape {tuple(input_ids.shape)}"
            )
    elif isinstance(input_ids, Sequence) and all(isinstance(t, int) for t in input_ids):
        rows, single = [list(input_ids)], True
    elif isinstance(input_ids, Sequence) and all(isinstance(r, Sequence) for r in input_ids):
        rows, single = [list(r) for r in input_ids], False
    else:
        raise TypeError(
            "input_ids: expected a tensor, a list of ints or a list of lists of ints, got "
            f"{type(input_ids).__name__}"
        )
    n_images = sum(r.count(image_token_index) for r in rows)
    counts = iter(_as_counts(num_queries_per_image, n_images))
    out_rows: list[list[int]] = []
    for r in rows:
        new: list[int] = []
        for t in r:
            new.extend([t] * next(counts) if t == image_token_index else [t])
        out_rows.append(new)
    if single:
        return torch.tensor(out_rows[0], dtype=torch.long)
    width = max(len(r) for r in out_rows)
    if any(len(r) != width for r in out_rows) and pad_token_id is None:
        raise ValueError(
            "pad_token_id: the expanded sequences have different lengths "
            f"{[len(r) for r in out_rows]}; pass a pad id"
        )
    ids = torch.full((len(out_rows), width), pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(out_rows), width), dtype=torch.long)
    for i, r in enumerate(out_rows):
        sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def pad_images(
    images: Sequence[torch.Tensor], canvas: int | tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (C, h, w) images (already normalised) bottom/right onto one canvas, as the processor does.

    Args:
        images: non-empty list of float tensors (C, h_i, w_i) with h_i, w_i <= the canvas.
        canvas: side S of a square canvas, or (H, W).

    Returns:
        ``pixel_values`` (I, C, H, W) float (pad value :data:`PAD_PIXEL_VALUE`) and
        ``pixel_mask`` (I, H, W) bool, True = real pixel.

    Examples:
        >>> px, mask = pad_images([torch.zeros(3, 28, 14)], 28)
        >>> px.shape, int(mask.sum()), float(px[0, 0, 0, 20])
        (torch.Size([1, 3, 28, 28]), 392, -1.0)
    """
    if not isinstance(images, Sequence) or not images:
        raise ValueError("images: expected a non-empty list of (C, h, w) tensors")
    hh, ww = (canvas, canvas) if isinstance(canvas, int) else tuple(canvas)
    c = images[0].shape[0] if isinstance(images[0], torch.Tensor) else None
    for i, im in enumerate(images):
        if not isinstance(im, torch.Tensor) or im.dim() != 3 or im.shape[0] != c:
            raise ValueError(
                f"images[{i}]: expected a (C={c}, h, w) tensor, got "
                f"{tuple(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__}"
            )
        if im.shape[1] > hh or im.shape[2] > ww or im.shape[1] < 1 or im.shape[2] < 1:
            raise ValueError(
                f"images[{i}]: size {tuple(im.shape[1:])} does not fit the canvas {(hh, ww)}"
            )
    px = torch.full((len(images), c, hh, ww), PAD_PIXEL_VALUE, dtype=images[0].dtype)
    mask = torch.zeros((len(images), hh, ww), dtype=torch.bool)
    for i, im in enumerate(images):
        px[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = True
    return px, mask


def random_pixel_batch(
    sizes: Sequence[tuple[int, int]],
    canvas: int | tuple[int, int],
    *,
    channels: int = 3,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normalised images of the given (h, w) sizes, padded onto a canvas (tests, benchmarks).

    Args:
        sizes: one (h, w) per image.
        canvas: square side or (H, W).
        channels: C. Default 3.
        generator / seed: randomness (pass one; ``seed`` builds a CPU generator). Default seed 0.

    Returns:
        ``(pixel_values (I, C, H, W), pixel_mask (I, H, W) bool)``; pixels uniform in [-1, 1].

    Examples:
        >>> px, mask = random_pixel_batch([(28, 28), (14, 28)], 28, seed=0)
        >>> px.shape, mask.sum((1, 2)).tolist()
        (torch.Size([2, 3, 28, 28]), [784, 392])
    """
    if generator is not None and seed is not None:
        raise ValueError("generator/seed: pass at most one of them")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    images = [torch.rand(channels, h, w, generator=generator) * 2 - 1 for h, w in sizes]
    return pad_images(images, canvas)

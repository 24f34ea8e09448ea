"""Pixtral image processing and the image-token layout (Pixtral 12B, arXiv:2410.07073, Sec. 2.1).

An image of ``width x height`` pixels is read at (almost) native resolution:

1. If its longer side exceeds ``max_image_size`` (1024), it is scaled by
   ``ratio = max(w / max_image_size, h / max_image_size)`` keeping the aspect ratio.
2. The patch grid is ``n_w = (w - 1) // p + 1``, ``n_h = (h - 1) // p + 1`` (p = 16), and the image is
   resized (bicubic) to exactly ``(p * n_w, p * n_h)`` pixels.
3. Pixels are rescaled to [0, 1] and normalised with the CLIP mean/std.
4. The decoder sees ``n_h * (n_w + 1)`` tokens: each patch row is ``[IMG] * n_w`` followed by
   ``[IMG_BREAK]``, and the very last ``[IMG_BREAK]`` is replaced by ``[IMG_END]``
   (1024 x 1024 -> 64 * 65 = 4160 tokens, 4096 of them ``[IMG]``).

What differs between the two implementations we follow (``rounding=``):

- ``"mistral"`` (mistral-common's ``ImageEncoder``, the official tokenizer): step 1 uses Python's
  ``round`` (round-half-to-even) on ``w / ratio`` and ``h / ratio``.
- ``"hf"`` (transformers' ``PixtralImageProcessor``): step 1 uses ``floor``, so the scaled side never
  exceeds the maximum. The two can differ by one patch row or column, e.g. 3072 x 2306 (w x h):
  ``round(768.67) = 769`` gives 49 rows / 3185 tokens, ``floor`` gives 48 rows / 3120 tokens.

Both conventions agree whenever no downscaling happens (longer side <= ``max_image_size``).
The resize kernel is PIL bicubic in both modes (mistral-common uses OpenCV ``INTER_CUBIC``, so pixels
differ slightly from the official pipeline; grids and token counts do not).
An image so thin that one side scales to zero pixels raises ``ValueError`` rather than being clamped
(both upstream implementations would produce an empty grid there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "ROUNDING_MODES",
    "PixtralImageProcessor",
    "expand_prompt",
    "image_grid",
    "image_token_layout",
    "num_image_tokens",
    "resized_size",
]

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP mean, used by Pixtral (RGB)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)  # CLIP std, used by Pixtral (RGB)
ROUNDING_MODES = ("mistral", "hf")
_ROUNDING_ALIASES = {"mistral": "mistral", "mistral_common": "mistral", "hf": "hf"}


def _check_rounding(rounding: str) -> str:
    if rounding not in _ROUNDING_ALIASES:
        raise ValueError(
            f"rounding: expected one of {ROUNDING_MODES} (or 'mistral_common'), got {rounding!r}"
        )
    return _ROUNDING_ALIASES[rounding]


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def resized_size(
    width: int, height: int, *, max_image_size: int = 1024, rounding: str = "mistral"
) -> tuple[int, int]:
    """Size ``(width, height)`` after the aspect-preserving downscale, before snapping to the patch grid.

    Args:
        width, height: image size in pixels (positive ints).
        max_image_size: longest allowed side (default 1024).
        rounding: ``"mistral"`` (Python ``round``, half to even; alias ``"mistral_common"``) or
            ``"hf"`` (``floor``). Default ``"mistral"``.

    Returns:
        ``(width, height)`` as ints; unchanged when the longer side is <= ``max_image_size``.

    Raises:
        ValueError: if a side scales to 0 pixels (aspect ratio more extreme than ``max_image_size : 1``).

    Examples:
        >>> resized_size(3072, 2306, rounding="mistral"), resized_size(3072, 2306, rounding="hf")
        ((1024, 769), (1024, 768))
    """
    width = _check_positive_int("width", width)
    height = _check_positive_int("height", height)
    max_image_size = _check_positive_int("max_image_size", max_image_size)
    mode = _check_rounding(rounding)
    ratio = max(width / max_image_size, height / max_image_size)
    if ratio > 1:
        fn = round if mode == "mistral" else math.floor
        new_w, new_h = int(fn(width / ratio)), int(fn(height / ratio))
        if new_w == 0 or new_h == 0:
            raise ValueError(
                f"image of width={width}, height={height} scales to {new_w}x{new_h} pixels with "
                f"max_image_size={max_image_size} (rounding={mode!r}); an aspect ratio above "
                f"{max_image_size}:1 leaves no patch on the short side"
            )
        width, height = new_w, new_h
    return width, height


def image_grid(
    width: int,
    height: int,
    *,
    patch_size: int = 16,
    max_image_size: int = 1024,
    rounding: str = "mistral",
) -> tuple[int, int]:
    """Patch grid ``(n_h, n_w)`` of an image: ``n = (side - 1) // patch_size + 1`` after downscaling.

    Args:
        width, height: image size in pixels (positive ints).
        patch_size: patch side in pixels (default 16).
        max_image_size: longest allowed side (default 1024).
        rounding: ``"mistral"`` or ``"hf"``, see :func:`resized_size`.

    Returns:
        ``(n_h, n_w)``: rows and columns of patches. The processed image is
        ``(patch_size * n_h, patch_size * n_w)`` pixels (H, W).

    Examples:
        >>> image_grid(1024, 1024)
        (64, 64)
        >>> image_grid(3072, 2306, rounding="mistral"), image_grid(3072, 2306, rounding="hf")
        ((49, 64), (48, 64))
    """
    patch_size = _check_positive_int("patch_size", patch_size)
    w, h = resized_size(width, height, max_image_size=max_image_size, rounding=rounding)
    return (h - 1) // patch_size + 1, (w - 1) // patch_size + 1


def num_image_tokens(
    width: int,
    height: int,
    *,
    patch_size: int = 16,
    max_image_size: int = 1024,
    rounding: str = "mistral",
) -> int:
    """Number of decoder tokens for one image: ``n_h * (n_w + 1)`` ([IMG] rows plus one break/end each).

    Args: as :func:`image_grid`.

    Examples:
        >>> num_image_tokens(1024, 1024)
        4160
        >>> num_image_tokens(3072, 2306), num_image_tokens(3072, 2306, rounding="hf")
        (3185, 3120)
    """
    n_h, n_w = image_grid(
        width, height, patch_size=patch_size, max_image_size=max_image_size, rounding=rounding
    )
    return n_h * (n_w + 1)


def image_token_layout(
    width: int,
    height: int,
    *,
    image_token: Any = "[IMG]",
    image_break_token: Any = "[IMG_BREAK]",
    image_end_token: Any = "[IMG_END]",
    patch_size: int = 16,
    max_image_size: int = 1024,
    rounding: str = "mistral",
) -> list[Any]:
    """The token sequence standing for one image, row-major.

    Each of the ``n_h`` rows is ``[image_token] * n_w + [image_break_token]``; the last
    ``image_break_token`` is replaced by ``image_end_token``. Tokens may be strings or ids (read the
    ids from your tokenizer; they differ between tokenizer versions).

    Args:
        width, height: image size in pixels.
        image_token, image_break_token, image_end_token: the three tokens (default the strings
            ``"[IMG]"``, ``"[IMG_BREAK]"``, ``"[IMG_END]"``).
        patch_size, max_image_size, rounding: as :func:`image_grid`.

    Returns:
        list of length ``n_h * (n_w + 1)``.

    Examples:
        >>> image_token_layout(32, 16)
        ['[IMG]', '[IMG]', '[IMG_END]']
        >>> image_token_layout(16, 32, image_token=10, image_break_token=12, image_end_token=13)
        [10, 12, 10, 13]
    """
    n_h, n_w = image_grid(
        width, height, patch_size=patch_size, max_image_size=max_image_size, rounding=rounding
    )
    row = [image_token] * n_w + [image_break_token]
    layout = row * n_h
    layout[-1] = image_end_token
    return layout


def _as_size(i: int, size: Any) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"image_sizes[{i}]: expected a (width, height) pair, got {size!r}")
    return size[0], size[1]


def expand_prompt(
    prompt: str | Sequence[int],
    image_sizes: Sequence[tuple[int, int]],
    *,
    placeholder: Any = None,
    image_token: Any = "[IMG]",
    image_break_token: Any = "[IMG_BREAK]",
    image_end_token: Any = "[IMG_END]",
    patch_size: int = 16,
    max_image_size: int = 1024,
    rounding: str = "mistral",
) -> str | list[int]:
    """Expand each image placeholder in a prompt into that image's token layout.

    Args:
        prompt: a string, or a sequence of token ids. Placeholders are matched in order with
            ``image_sizes``.
        image_sizes: one ``(width, height)`` pair per placeholder, in pixels of the *original* image.
        placeholder: the placeholder to replace (a substring for string prompts, an id for id
            prompts). Default: ``image_token`` (as HF's processor does: one ``[IMG]`` per image).
        image_token, image_break_token, image_end_token: as :func:`image_token_layout`; for id
            prompts they must be ints (read them from your tokenizer).
        patch_size, max_image_size, rounding: as :func:`image_grid`.

    Returns:
        the expanded string (layouts concatenated without separators) or a list of ids.

    Raises:
        ValueError: if the number of placeholders differs from ``len(image_sizes)``.
        TypeError: if token types do not match the prompt type.

    Examples:
        >>> expand_prompt("Describe [IMG]", [(32, 32)])
        'Describe [IMG][IMG][IMG_BREAK][IMG][IMG][IMG_END]'
        >>> expand_prompt([1, 10, 2], [(16, 16)], image_token=10, image_break_token=12,
        ...               image_end_token=13)
        [1, 10, 13, 2]
    """
    if placeholder is None:
        placeholder = image_token
    sizes = [_as_size(i, s) for i, s in enumerate(image_sizes)]
    kw = dict(patch_size=patch_size, max_image_size=max_image_size, rounding=rounding)
    tokens = {
        "image_token": image_token,
        "image_break_token": image_break_token,
        "image_end_token": image_end_token,
    }

    if isinstance(prompt, str):
        for name, tok in [("placeholder", placeholder), *tokens.items()]:
            if not isinstance(tok, str) or not tok:
                raise TypeError(f"{name}: expected a non-empty str for a str prompt, got {tok!r}")
        pieces = prompt.split(placeholder)
        if len(pieces) - 1 != len(sizes):
            raise ValueError(
                f"prompt has {len(pieces) - 1} placeholder(s) {placeholder!r} but image_sizes has "
                f"{len(sizes)} entries"
            )
        out = [pieces[0]]
        for (w, h), rest in zip(sizes, pieces[1:], strict=True):
            out.append("".join(image_token_layout(w, h, **tokens, **kw)))
            out.append(rest)
        return "".join(out)

    if isinstance(prompt, torch.Tensor):
        if prompt.dim() != 1:
            raise ValueError(
                f"prompt: expected a 1-D tensor of ids, got shape {tuple(prompt.shape)}"
            )
        prompt = prompt.tolist()
    if not isinstance(prompt, Sequence):
        raise TypeError(
            f"prompt: expected a str or a sequence of int ids, got {type(prompt).__name__}"
        )
    for name, tok in [("placeholder", placeholder), *tokens.items()]:
        if isinstance(tok, bool) or not isinstance(tok, (int, np.integer)):
            raise TypeError(f"{name}: expected an int id for an id prompt, got {tok!r}")
    n_placeholders = sum(1 for t in prompt if t == placeholder)
    if n_placeholders != len(sizes):
        raise ValueError(
            f"prompt has {n_placeholders} placeholder id(s) {placeholder} but image_sizes has "
            f"{len(sizes)} entries"
        )
    out_ids: list[int] = []
    it = iter(sizes)
    for t in prompt:
        if t == placeholder:
            w, h = next(it)
            out_ids.extend(int(x) for x in image_token_layout(w, h, **tokens, **kw))
        else:
            out_ids.append(int(t))
    return out_ids


def _to_hwc(image: Any, index: int) -> np.ndarray:
    """Any supported image -> (H, W, 3) RGB array, RGBA composited on white.

    uint8 and PIL inputs give uint8 (0..255); float inputs give float32 in [0, 1].
    """
    name = f"images[{index}]"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None

    if Image is not None and isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{name}: expected a non-empty image, got size {image.size}")
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8

    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            raise ValueError(f"{name}: expected a (C, H, W) tensor, got shape {tuple(image.shape)}")
        arr = image.detach().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"{name}: expected an (H, W, C) array, got shape {image.shape}")
        arr = image
    else:
        raise TypeError(
            f"{name}: expected a PIL.Image, an (H, W, C) numpy array or a (C, H, W) torch tensor, "
            f"got {type(image).__name__}"
        )
    if arr.shape[2] not in (3, 4):
        raise ValueError(
            f"{name}: expected 3 (RGB) or 4 (RGBA) channels, got {arr.shape[2]} "
            f"(array shape {arr.shape}; numpy arrays are (H, W, C), tensors (C, H, W))"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a non-empty image, got height={arr.shape[0]}, width={arr.shape[1]}"
        )
    if arr.dtype == np.uint8:
        if arr.shape[2] == 3:
            return arr
        rgba = arr.astype(np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:4] + (1.0 - rgba[..., 3:4])  # composite on white
        return np.round(rgb * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(
                f"{name}: float images must be finite and in [0, 1], got values outside"
            )
    else:
        raise TypeError(f"{name}: expected dtype uint8 or float in [0, 1], got {arr.dtype}")
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4]
        arr = arr[..., :3] * alpha + (1.0 - alpha)  # composite on white
    return arr


def _resize_bicubic(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL bicubic resize of a float (H, W, 3) image, channel by channel in mode 'F'."""
    from PIL import Image

    if arr.shape[0] == height and arr.shape[1] == width:
        return arr
    channels = [
        np.asarray(Image.fromarray(arr[..., c]).resize((width, height), Image.BICUBIC))
        for c in range(3)
    ]
    return np.stack(channels, axis=-1)  # (height, width, 3)


class PixtralImageProcessor:
    """Resize to the patch grid and normalise images for Pixtral.

    Args:
        patch_size: patch side in pixels (default 16).
        max_image_size: longest allowed side (default 1024).
        rounding: ``"mistral"`` (default, mistral-common's ``round``) or ``"hf"`` (``floor``).
        image_mean, image_std: per-channel RGB normalisation (default CLIP's, as Pixtral).

    Calling the processor on one image or a list returns a dict with ``pixel_values`` (a list of
    float32 tensors ``(3, 16 * n_h, 16 * n_w)``, one per image; images are *not* padded, ready for
    packing) and ``image_sizes`` (list of ``(H, W)`` of each processed image, HF's convention).

    Inputs: ``PIL.Image`` (any mode; RGBA/LA/transparent palettes composited on white), numpy
    ``(H, W, C)`` or torch ``(C, H, W)`` with C = 3 or 4, dtype uint8 (0..255) or float in [0, 1].
    Float images are resized in float (per channel, PIL bicubic); uint8 ones are resized as
    RGB images in 8 bits, like HF's PIL processor.

    Examples:
        >>> import numpy as np
        >>> proc = PixtralImageProcessor()
        >>> out = proc(np.zeros((40, 50, 3), dtype=np.uint8))
        >>> tuple(out["pixel_values"][0].shape), out["image_sizes"]
        ((3, 48, 64), [(48, 64)])
    """

    def __init__(
        self,
        *,
        patch_size: int = 16,
        max_image_size: int = 1024,
        rounding: str = "mistral",
        image_mean: Sequence[float] = IMAGE_MEAN,
        image_std: Sequence[float] = IMAGE_STD,
    ) -> None:
        self.patch_size = _check_positive_int("patch_size", patch_size)
        self.max_image_size = _check_positive_int("max_image_size", max_image_size)
        self.rounding = _check_rounding(rounding)
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(
                f"image_mean/image_std: expected 3 values each, got {len(image_mean)} and "
                f"{len(image_std)}"
            )
        if any(s <= 0 for s in image_std):
            raise ValueError(f"image_std: expected positive values, got {tuple(image_std)}")
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)

    def _grid_kw(self) -> dict[str, Any]:
        return dict(
            patch_size=self.patch_size, max_image_size=self.max_image_size, rounding=self.rounding
        )

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """``(n_h, n_w)`` for an image of ``width x height`` pixels (see :func:`image_grid`)."""
        return image_grid(width, height, **self._grid_kw())

    def num_tokens(self, width: int, height: int) -> int:
        """``n_h * (n_w + 1)`` (see :func:`num_image_tokens`)."""
        return num_image_tokens(width, height, **self._grid_kw())

    def preprocess(self, image: Any, *, _index: int = 0) -> torch.Tensor:
        """One image -> normalised float32 tensor ``(3, patch_size * n_h, patch_size * n_w)``."""
        arr = _to_hwc(image, _index)  # (H, W, 3), uint8 or float32 in [0, 1]
        height, width = arr.shape[:2]
        n_h, n_w = self.grid(width, height)
        out_h, out_w = n_h * self.patch_size, n_w * self.patch_size
        if arr.dtype == np.uint8:
            if (out_h, out_w) != (height, width):
                from PIL import Image

                rgb8 = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
                arr = np.asarray(rgb8.resize((out_w, out_h), Image.BICUBIC))
            arr = arr.astype(np.float32) / 255.0  # (H', W', 3)
        else:
            arr = _resize_bicubic(arr, out_w, out_h)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        arr = (arr - mean) / std  # (H', W', 3)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # (3, H', W')

    def __call__(self, images: Any) -> dict[str, Any]:
        """Process one image or a list of images; see the class docstring for the output."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("images: expected at least one image, got an empty list")
        pixel_values = [self.preprocess(im, _index=i) for i, im in enumerate(images)]
        sizes = [(int(p.shape[1]), int(p.shape[2])) for p in pixel_values]
        logger.debug("processed %d image(s) to sizes %s", len(images), sizes)
        return {"pixel_values": pixel_values, "image_sizes": sizes}

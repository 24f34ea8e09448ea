"""``QuantSpec``: the frozen description of one integer quantizer (bits, sign, granularity...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["GRANULARITIES", "Granularity", "QuantSpec", "scale_shape"]

Granularity = Literal["tensor", "channel", "group", "token", "head"]
GRANULARITIES: tuple[str, ...] = ("tensor", "channel", "group", "token", "head")


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize a tensor to ``bits``-bit integers (torchao-style config).

    Codes: symmetric specs use signed codes ``q ∈ [-2^(b-1), 2^(b-1) - 1]`` stored as ``int8``
    (``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with ``narrow_range``) and a zero point of 0; asymmetric
    specs use unsigned codes ``q ∈ [0, 2^b - 1]`` stored as ``uint8`` with an integer zero point.
    ``x ≈ (q - z)·s``.

    Granularity (which elements share one scale; the scale shape is :func:`scale_shape`):

    - ``"tensor"``: one scale, shape ``()``.
    - ``"channel"``: one per index of ``axis`` (default 0, the output channel of an ``(out, in)``
      weight); shape = ``x.shape`` with every other dim set to 1.
    - ``"head"``: like ``"channel"`` with ``axis`` defaulting to 1, the head axis of a
      ``(B, H, T, D)`` activation or KV cache.
    - ``"token"``: one per row of the last dim, shape ``(*x.shape[:-1], 1)``. Always dynamic.
    - ``"group"``: one per ``group_size`` consecutive elements of the last dim, shape
      ``(*x.shape[:-1], x.shape[-1] // group_size)``.

    Fields:
        bits: code width, 2..8 (codes are stored one per byte; see ``pack_int4`` for 4 bits).
        symmetric: signed codes with zero point 0 (True) or unsigned codes with a zero point.
        granularity: one of ``"tensor" | "channel" | "group" | "token" | "head"``.
        group_size: elements per group; required for (and only allowed with) ``"group"``.
        axis: the scale axis of ``"channel"``/``"head"``; None means 0 / 1 respectively.
        dynamic: True computes scales from each input (``fake_quant`` with ``scale=None``);
            False means a calibrated (static) scale must be passed in.
        clip_ratio: the range is shrunk to ``clip_ratio·max|x|`` (symmetric) or
            ``clip_ratio·[min, max]`` (asymmetric) before the scale is computed; in (0, 1].
        narrow_range: symmetric only; drop the code ``-2^(b-1)`` so the grid is symmetric.
        eps: floor on every scale, so an all-zero slice quantizes to 0 instead of dividing by 0.
        version: config schema version.
    """

    bits: int = 8  # code width in bits
    symmetric: bool = True  # signed codes and zero point 0, else unsigned codes + zero point
    granularity: str = "tensor"  # which elements share one scale
    group_size: int | None = None  # elements per group (granularity="group" only)
    axis: int | None = None  # scale axis for channel/head; None -> 0 (channel) or 1 (head)
    dynamic: bool = True  # scales from each input (True) or calibrated and passed in (False)
    clip_ratio: float = 1.0  # shrink the observed range before computing the scale
    narrow_range: bool = False  # symmetric: codes in [-(2^(b-1)-1), 2^(b-1)-1]
    eps: float = 1e-8  # floor on scales (an all-zero slice gets scale eps, codes 0)
    version: int = 1  # schema version of this config

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits: expected an int in [2, 8], got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise TypeError(f"symmetric: expected a bool, got {type(self.symmetric).__name__}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity: expected one of {GRANULARITIES}, got {self.granularity!r}"
            )
        if self.granularity == "group":
            if (
                isinstance(self.group_size, bool)
                or not isinstance(self.group_size, int)
                or self.group_size < 1
            ):
                raise ValueError(
                    f"group_size: expected a positive int for granularity='group', got {self.group_size!r}"
                )
        elif self.group_size is not None:
            raise ValueError(
                f"group_size: only allowed with granularity='group', got group_size={self.group_size!r} "
                f"with granularity={self.granularity!r}"
            )
        if self.axis is not None:
            if self.granularity not in ("channel", "head"):
                raise ValueError(
                    f"axis: only allowed with granularity 'channel' or 'head', got axis={self.axis!r} "
                    f"with granularity={self.granularity!r}"
                )
            if isinstance(self.axis, bool) or not isinstance(self.axis, int):
                raise TypeError(f"axis: expected an int, got {type(self.axis).__name__}")
        if self.granularity == "token" and not self.dynamic:
            raise ValueError(
                "dynamic: granularity='token' is dynamic by nature (one scale per incoming token); "
                "use granularity='tensor' or 'channel' for a static (calibrated) scale"
            )
        if not isinstance(self.clip_ratio, (int, float)) or not 0.0 < float(self.clip_ratio) <= 1.0:
            raise ValueError(f"clip_ratio: expected a float in (0, 1], got {self.clip_ratio!r}")
        if self.narrow_range and not self.symmetric:
            raise ValueError(
                "narrow_range: only meaningful for symmetric specs, got symmetric=False"
            )
        if not isinstance(self.eps, (int, float)) or not float(self.eps) > 0.0:
            raise ValueError(f"eps: expected a positive float, got {self.eps!r}")
        if self.version != 1:
            raise ValueError(f"version: this code reads QuantSpec version 1, got {self.version!r}")

    @property
    def qmin(self) -> int:
        """Smallest code."""
        if not self.symmetric:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow_range else 0)

    @property
    def qmax(self) -> int:
        """Largest code."""
        return 2**self.bits - 1 if not self.symmetric else 2 ** (self.bits - 1) - 1

    @property
    def code_dtype(self) -> torch.dtype:
        """``torch.int8`` for symmetric specs, ``torch.uint8`` for asymmetric ones."""
        return torch.int8 if self.symmetric else torch.uint8

    @property
    def resolved_axis(self) -> int | None:
        """The scale axis of channel/head granularity (None otherwise)."""
        if self.granularity == "channel":
            return 0 if self.axis is None else self.axis
        if self.granularity == "head":
            return 1 if self.axis is None else self.axis
        return None


def scale_shape(shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> tuple[int, ...]:
    """The shape of the scale (and zero point) tensor of ``spec`` for an input of ``shape``.

    Raises ``ValueError`` when the input's rank or last dim does not fit the granularity.
    """
    shape = tuple(int(d) for d in shape)
    g = spec.granularity
    if g == "tensor":
        return ()
    if len(shape) == 0:
        raise ValueError(f"x: granularity={g!r} needs at least 1 dim, got a 0-dim tensor")
    if g == "token":
        return (*shape[:-1], 1)
    if g == "group":
        gs = int(spec.group_size or 1)  # set for "group" by QuantSpec.__post_init__
        if shape[-1] % gs != 0:
            raise ValueError(
                f"x: last dim {shape[-1]} is not a multiple of group_size={gs} (shape {shape})"
            )
        return (*shape[:-1], shape[-1] // gs)
    axis = int(spec.resolved_axis or 0)  # channel/head always resolve to an int
    if not -len(shape) <= axis < len(shape):
        raise ValueError(
            f"axis: {axis} is out of range for an input of shape {shape} (granularity={g!r})"
        )
    axis %= len(shape)
    return tuple(d if i == axis else 1 for i, d in enumerate(shape))

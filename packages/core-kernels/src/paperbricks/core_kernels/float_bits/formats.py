"""Binary floating-point formats described by their field widths: :class:`FloatFormat` and presets.

A format with ``E`` exponent bits, ``M`` mantissa bits and bias ``b`` encodes a code
``(s, e, m)`` (sign, biased exponent field, mantissa field) as

    normal     (1 <= e <= e_top):  (-1)^s · 2^(e − b) · (1 + m / 2^M)
    subnormal  (e == 0):           (-1)^s · 2^(1 − b) · (m / 2^M)

IEEE-style formats (``finite=False``) reserve the all-ones exponent ``2^E − 1``: mantissa 0 is
±Inf and any other mantissa is NaN. Finite formats (``finite=True``, the "FN" formats such as
E4M3FN) have no Inf: the all-ones exponent holds normal numbers, except the all-ones mantissa,
which is NaN (the only NaN, with either sign).

Every format here is a subset of float32 (its normal exponents lie in float32's [-126, 127]), so
all of its values, subnormals included, are exact float32 numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["BF16", "E4M3FN", "E5M2", "FP16", "FP32", "FloatFormat", "e8m"]


@dataclass(frozen=True)
class FloatFormat:
    """A sign/exponent/mantissa binary float format (1 + ``exp_bits`` + ``man_bits`` bits).

    Args:
        exp_bits: exponent field width E, 2..8.
        man_bits: mantissa (fraction) field width M, 1..23.
        bias: exponent bias; default ``2^(E−1) − 1`` (the IEEE choice). The format's normal range
            must stay inside float32's: ``bias <= 127`` and the largest exponent ``<= 127``.
        finite: ``True`` for formats with no Inf encoding (E4M3FN style: the all-ones exponent
            holds normal numbers and only the all-ones mantissa there is NaN); ``False`` for
            IEEE-style formats (all-ones exponent: mantissa 0 is Inf, anything else NaN).
        name: display name only (not compared).

    Examples:
        >>> fmt = FloatFormat(4, 3, finite=True)
        >>> fmt == E4M3FN, fmt.max_value, fmt.min_subnormal
        (True, 448.0, 0.001953125)
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    finite: bool = False
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.exp_bits, int) or not 2 <= self.exp_bits <= 8:
            raise ValueError(f"exp_bits: expected an int in [2, 8], got {self.exp_bits!r}")
        if not isinstance(self.man_bits, int) or not 1 <= self.man_bits <= 23:
            raise ValueError(f"man_bits: expected an int in [1, 23], got {self.man_bits!r}")
        if not isinstance(self.finite, bool):
            raise TypeError(f"finite: expected a bool, got {type(self.finite).__name__}")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        elif not isinstance(self.bias, int):
            raise TypeError(f"bias: expected an int or None, got {type(self.bias).__name__}")
        if self.max_exp_field < 1:
            raise ValueError(f"exp_bits={self.exp_bits}, finite={self.finite}: no normal exponent")
        if self.emin < -126 or self.emax > 127:
            raise ValueError(
                f"bias: the format's normal exponents [{self.emin}, {self.emax}] must lie inside "
                f"float32's [-126, 127] (got bias={self.bias} for exp_bits={self.exp_bits}, "
                f"finite={self.finite})"
            )
        if not self.name:
            fn = "FN" if self.finite else ""
            default = self.bias == (1 << (self.exp_bits - 1)) - 1
            name = f"E{self.exp_bits}M{self.man_bits}{fn}" + ("" if default else f"B{self.bias}")
            object.__setattr__(self, "name", name)

    # --- derived constants (Python ints / floats) ----------------------------------------------

    @property
    def bits(self) -> int:
        """Total width of a code: 1 + exp_bits + man_bits."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def exp_all_ones(self) -> int:
        """The all-ones exponent field ``2^E − 1``."""
        return (1 << self.exp_bits) - 1

    @property
    def max_exp_field(self) -> int:
        """Largest exponent field holding finite numbers (``2^E − 1`` if finite else ``2^E − 2``)."""
        return self.exp_all_ones if self.finite else self.exp_all_ones - 1

    @property
    def max_man_at_top(self) -> int:
        """Largest mantissa field of a finite number at :attr:`max_exp_field`."""
        full = (1 << self.man_bits) - 1
        return full - 1 if self.finite else full

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number, ``1 − bias``."""
        return 1 - self.bias  # type: ignore[operator]

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite number."""
        return self.max_exp_field - self.bias  # type: ignore[operator]

    @property
    def max_value(self) -> float:
        """Largest finite magnitude."""
        return 2.0**self.emax * (1 + self.max_man_at_top / 2**self.man_bits)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal number ``2^emin``."""
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal number ``2^(emin − M)``."""
        return 2.0 ** (self.emin - self.man_bits)

    @property
    def has_inf(self) -> bool:
        """Whether ±Inf are encodable (IEEE-style formats)."""
        return not self.finite

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The torch dtype with exactly this encoding, if any (for parity checks and baselines)."""
        for dtype, fmt in _TORCH_TWINS:
            if fmt == self:
                return dtype
        return None

    def __repr__(self) -> str:
        return (
            f"FloatFormat({self.name}: exp_bits={self.exp_bits}, man_bits={self.man_bits}, "
            f"bias={self.bias}, finite={self.finite})"
        )


def e8m(k: int) -> FloatFormat:
    """The IEEE-style format with 8 exponent bits (bias 127) and ``k`` mantissa bits (1..23).

    ``e8m(7)`` is bfloat16 and ``e8m(23)`` float32; L-Mul uses it for its k-bit mantissa sweep.
    """
    if not isinstance(k, int) or not 1 <= k <= 23:
        raise ValueError(f"k: expected an int in [1, 23], got {k!r}")
    return FloatFormat(8, k, name=f"E8M{k}")


#: OCP FP8 E4M3FN: bias 7, no Inf, NaN = S.1111.111 (0x7F/0xFF), max 448.
E4M3FN = FloatFormat(4, 3, finite=True, name="E4M3FN")
#: OCP FP8 E5M2: bias 15, IEEE-style: Inf = S.11111.00, NaN = S.11111.{01,10,11}, max 57344.
E5M2 = FloatFormat(5, 2, name="E5M2")
#: bfloat16: bias 127, IEEE-style (Inf 0x7F80, NaN exponent 0xFF with mantissa ≠ 0).
BF16 = FloatFormat(8, 7, name="BF16")
#: IEEE binary16: bias 15, IEEE-style (Inf 0x7C00, NaN exponent 0x1F with mantissa ≠ 0), max 65504.
FP16 = FloatFormat(5, 10, name="FP16")
#: IEEE binary32: bias 127, IEEE-style (Inf 0x7F800000).
FP32 = FloatFormat(8, 23, name="FP32")

_TORCH_TWINS = (
    (torch.float8_e4m3fn, E4M3FN),
    (torch.float8_e5m2, E5M2),
    (torch.bfloat16, BF16),
    (torch.float16, FP16),
    (torch.float32, FP32),
)

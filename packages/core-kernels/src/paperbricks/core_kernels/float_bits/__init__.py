"""Float formats and exact rounding: field widths, encodings, round-to-nearest-even / truncation.

A :class:`FloatFormat` ``(exp_bits E, man_bits M, bias b, finite)`` encodes code ``(s, e, m)`` as
``(-1)^s · 2^(e − b) · (1 + m/2^M)`` (normal, ``e >= 1``) or ``(-1)^s · 2^(1 − b) · m/2^M``
(subnormal, ``e = 0``). Presets: :data:`E4M3FN` (no Inf, NaN = S.1111.111), :data:`E5M2`,
:data:`BF16`, :data:`FP16`, :data:`FP32` (IEEE-style: all-ones exponent is Inf/NaN) and
:func:`e8m` (8 exponent bits, k mantissa bits; used by L-Mul).

- :func:`round_to`: round to a format with explicit overflow (saturate), subnormal (keep/flush),
  Inf and NaN policies; ``impl="auto"|"reference"|"triton"`` (Triton: one elementwise kernel).
- :func:`decompose` / :func:`compose`: integer fields of values of a format, and back.
- :func:`to_codes` / :func:`from_codes` / :func:`all_codes`: integer codes (uint8/int16).
- :func:`round_to_reference`: the integer-arithmetic torch reference.
- :func:`fp32_bits` / :func:`fp32_from_bits`: float32 <-> bit patterns zero-extended in int64
  (torch twins of the Triton bit helpers).

RNE rounding equals torch's own ``float8_e4m3fn``, ``float8_e5m2``, ``bfloat16`` and ``float16``
casts bit for bit (see :func:`round_to` for which ``saturate`` matches which). Importing this
module imports no triton; ``_triton.py`` (kernels and reusable ``@triton.jit`` bit helpers) loads
on first use.
"""

from .formats import BF16, E4M3FN, E5M2, FP16, FP32, FloatFormat, e8m
from .ops import all_codes, compose, decompose, from_codes, round_to, to_codes
from .reference import fp32_bits, fp32_from_bits, round_to_reference

__all__ = [
    "BF16",
    "E4M3FN",
    "E5M2",
    "FP16",
    "FP32",
    "FloatFormat",
    "all_codes",
    "compose",
    "decompose",
    "e8m",
    "fp32_bits",
    "fp32_from_bits",
    "from_codes",
    "round_to",
    "round_to_reference",
    "to_codes",
]

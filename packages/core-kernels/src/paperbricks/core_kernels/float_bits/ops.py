"""Public float_bits operations: validation and ``impl`` dispatch around the reference."""

from __future__ import annotations

import torch

from ..devices import select_impl
from .formats import FloatFormat
from .reference import (
    _check_policy,
    _describe,
    compose_reference,
    decompose_reference,
    from_codes_reference,
    round_to_reference,
    to_codes_reference,
)

__all__ = ["all_codes", "compose", "decompose", "from_codes", "round_to", "to_codes"]

#: Input dtypes the Triton kernel reads directly (float64 always goes to the reference).
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_fmt(fmt: object) -> FloatFormat:
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt: expected a FloatFormat (e.g. E4M3FN), got {type(fmt).__name__}")
    return fmt


def _check_float(x: object, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got {_describe(x)}")
    return x


def round_to(
    x: torch.Tensor,
    fmt: FloatFormat,
    mode: str = "rne",
    subnormals: str = "keep",
    saturate: bool = True,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Round every element of ``x`` to the format ``fmt`` ("fake quantisation"), as float32.

    Rounding is exact (integer arithmetic on the bit patterns), one rounding step from the input:

    - ``mode="rne"``: nearest representable value, ties to the even mantissa (IEEE default);
      ``mode="trunc"``: toward zero (the largest representable magnitude ``<= |x|``).
    - Overflow (a finite x whose rounded magnitude exceeds ``fmt.max_value``): ``±max_value`` when
      ``saturate=True``. With ``saturate=False``, RNE overflows the IEEE way: ±Inf, or NaN in
      finite formats, which have no Inf; truncation never overflows (IEEE round-toward-zero gives
      ±max_value), so ``|round_to(x, mode="trunc")| <= |x|`` always.
    - ±Inf inputs: stay ±Inf in IEEE-style formats; in finite formats (E4M3FN) become ±max_value
      when ``saturate=True``, else NaN.
    - NaN inputs: canonical quiet float32 NaN (0x7FC00000) with the input's sign; payloads are
      not kept.
    - ``subnormals="keep"``: gradual underflow to the format's subnormals; ``"flush"``: any result
      below ``fmt.min_normal`` becomes a zero of the input's sign (flush after rounding, so a value
      just under min_normal that rounds up to it is kept). Zeros keep their sign.

    torch's own casts agree bit for bit with ``saturate=False`` for float8_e5m2, float16 and
    bfloat16, and with ``saturate=True`` for float8_e4m3fn (which saturates finite overflow and
    Inf to ±448).

    Args:
        x: floating tensor of any shape and float dtype. float16/bfloat16/float32 are exact in
            float32; float64 is rounded from its own bits (no double rounding via float32).
        fmt: target :class:`FloatFormat` (e.g. ``E4M3FN``, ``E5M2``, ``BF16``, ``e8m(3)``).
        mode: ``"rne"`` (default) or ``"trunc"``.
        subnormals: ``"keep"`` (default) or ``"flush"``.
        saturate: default True; see above.
        impl: ``"auto"`` (Triton for CUDA tensors of float32/16/bf16, else reference),
            ``"reference"`` or ``"triton"``.

    Returns:
        float32 tensor of x's shape whose values are all representable in ``fmt``. It does not
        track gradients (for fake-quant training wrap it in a straight-through estimator, e.g.
        ``x + (round_to(x, fmt) - x).detach()``).

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.float_bits import E4M3FN, round_to
        >>> round_to(torch.tensor([0.3, 460.0, 1000.0]), E4M3FN).tolist()
        [0.3125, 448.0, 448.0]
        >>> round_to(torch.tensor([0.3]), E4M3FN, mode="trunc")
        tensor([0.2812])
    """
    x = _check_float(x)
    fmt = _check_fmt(fmt)
    _check_policy(mode, subnormals, saturate)
    which = select_impl(
        impl,
        [x],
        op="float_bits.round_to",
        supported=x.dtype in TRITON_DTYPES,
        why_unsupported=f"the Triton kernel reads float32/float16/bfloat16, got {x.dtype}",
    )
    if which == "triton":
        from ._triton import round_to_triton

        return round_to_triton(x, fmt, mode, subnormals, saturate)
    return round_to_reference(x, fmt, mode, subnormals, saturate)


def decompose(x: torch.Tensor, fmt: FloatFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split values of ``fmt`` into their integer fields ``(sign, exponent, mantissa)``.

    Args:
        x: floating tensor whose values are all exactly representable in ``fmt`` (round them with
            :func:`round_to` first); any shape and float dtype.
        fmt: the format.

    Returns:
        Three int32 tensors of x's shape: sign (0/1), biased exponent field (0..2^E−1; 0 for zeros
        and subnormals), mantissa field (0..2^M−1). ±Inf gives the all-ones exponent and mantissa
        0; NaN the canonical NaN fields (all-ones exponent; mantissa MSB in IEEE-style formats,
        all-ones mantissa in finite formats).

    Raises:
        ValueError: when some value is not representable in ``fmt``.

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.float_bits import E4M3FN, decompose
        >>> [t.tolist() for t in decompose(torch.tensor([-1.5, 2.0**-9]), E4M3FN)]
        [[1, 0], [7, 0], [4, 1]]
    """
    return decompose_reference(_check_float(x), _check_fmt(fmt))


def compose(
    sign: torch.Tensor, exponent: torch.Tensor, mantissa: torch.Tensor, fmt: FloatFormat
) -> torch.Tensor:
    """Assemble float32 values from integer fields (the inverse of :func:`decompose`).

    Args:
        sign: integer tensor of 0/1.
        exponent: integer tensor of biased exponent fields in ``[0, 2^E − 1]``.
        mantissa: integer tensor of mantissa fields in ``[0, 2^M − 1]``.
        fmt: the format. The three tensors broadcast together.

    Returns:
        float32 tensor of the broadcast shape.

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.float_bits import E5M2, compose
        >>> compose(torch.tensor([0, 1]), torch.tensor([15, 31]), torch.tensor([1, 0]), E5M2)
        tensor([1.2500,   -inf])
    """
    return compose_reference(sign, exponent, mantissa, _check_fmt(fmt))


def to_codes(
    x: torch.Tensor,
    fmt: FloatFormat,
    mode: str = "rne",
    subnormals: str = "keep",
    saturate: bool = True,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Round ``x`` to ``fmt`` (as :func:`round_to`) and return the codes.

    Args:
        x, mode, subnormals, saturate, impl: as for :func:`round_to`.
        fmt: the format.

    Returns:
        Codes ``sign << (bits−1) | exponent << M | mantissa`` of x's shape: uint8 for formats of
        up to 8 bits, int16 up to 16 (for 16-bit formats the int16 holds the bit pattern, equal to
        ``y.view(torch.int16)`` of a float16/bfloat16 tensor), int32 up to 32.

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.float_bits import E4M3FN, to_codes
        >>> to_codes(torch.tensor([1.0, -448.0]), E4M3FN)
        tensor([ 56, 254], dtype=torch.uint8)
    """
    y = round_to(x, fmt, mode, subnormals, saturate, impl=impl)
    return to_codes_reference(y, fmt)


def from_codes(codes: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Decode integer codes of ``fmt`` to float32.

    Args:
        codes: integer tensor, any shape. Values must lie in ``[0, 2^bits)``, except when the
            dtype is exactly ``bits`` wide (int16 for a 16-bit format): then it is a bit pattern.
        fmt: the format.

    Returns:
        float32 tensor of the same shape; NaN codes decode to the canonical float32 NaN with the
        code's sign.

    Examples:
        >>> import torch
        >>> from paperbricks.core_kernels.float_bits import E4M3FN, all_codes, from_codes
        >>> from_codes(all_codes(E4M3FN), E4M3FN)[126:128]
        tensor([448.,  nan])
    """
    return from_codes_reference(codes, _check_fmt(fmt))


def all_codes(fmt: FloatFormat, device: torch.device | str | None = None) -> torch.Tensor:
    """Every code of a format of at most 16 bits, in increasing code order.

    Args:
        fmt: a format with ``fmt.bits <= 16`` (all 8-bit formats, FP16, BF16...).
        device: where to create the tensor (default CPU).

    Returns:
        ``2^bits`` codes in the dtype of :func:`to_codes` (uint8 0..255 for 8-bit formats; int16
        bit patterns 0x0000..0xFFFF for 16-bit ones).
    """
    fmt = _check_fmt(fmt)
    if fmt.bits > 16:
        raise ValueError(f"fmt: all_codes enumerates formats of at most 16 bits, got {fmt.bits}")
    codes = torch.arange(1 << fmt.bits, dtype=torch.int64, device=device)
    if fmt.bits == 16:
        codes = torch.where(codes >= 1 << 15, codes - (1 << 16), codes)
    return codes.to(torch.uint8 if fmt.bits <= 8 else torch.int16)

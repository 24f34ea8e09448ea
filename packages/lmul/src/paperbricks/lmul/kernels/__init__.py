"""Triton kernels for L-Mul, reached lazily.

:func:`lmul_triton` and :func:`lmul_matmul_triton` import ``_triton`` (which imports triton at
module level) only when called, so importing :mod:`paperbricks.lmul` or this subpackage never
imports triton nor touches CUDA. Inputs are validated by :mod:`paperbricks.lmul.ops`; the
kernels are described in ``_triton.py``.
"""

from __future__ import annotations

import torch

from paperbricks.core_kernels.float_bits import FloatFormat

__all__ = ["lmul_matmul_triton", "lmul_triton"]


def lmul_triton(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mantissa_bits: int,
    semantics: str,
    operand_rounding: str,
) -> torch.Tensor:
    """Element-wise L-Mul with the Triton kernel ``_lmul_fwd_kernel`` (broadcast shape, x's dtype)."""
    from paperbricks.core_kernels.devices import import_triton

    import_triton()
    from ._triton import lmul_fwd

    return lmul_fwd(x, y, mantissa_bits, semantics, operand_rounding)


def lmul_matmul_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    mantissa_bits: int,
    semantics: str,
    operand_rounding: str,
    accumulate: torch.dtype | FloatFormat,
) -> torch.Tensor:
    """L-Matmul (Bt, M, K) × (Bt, K, N) -> (Bt, M, N) with ``_lmul_matmul_fwd_kernel``."""
    from paperbricks.core_kernels.devices import import_triton

    import_triton()
    from ._triton import lmul_matmul_fwd

    return lmul_matmul_fwd(a, b, mantissa_bits, semantics, operand_rounding, accumulate)

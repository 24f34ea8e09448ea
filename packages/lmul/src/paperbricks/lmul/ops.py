"""Public L-Mul ops (arXiv 2410.00907): validation, ``impl`` dispatch and autograd.

- :func:`lmul`: element-wise L-Mul, broadcasting like ``torch.mul`` (Eqs. (1)–(3) of
  :mod:`.reference`), on float32/bfloat16/float16 containers;
- :func:`lmul_matmul` / :func:`lmul_bmm`: matrix products whose every scalar product is an L-Mul,
  summed in sequence over k in float32 (or float64, or a core-kernels ``FloatFormat`` with every
  partial sum rounded), with straight-through (``backward="exact"``) or L-Mul
  (``backward="lmul"``) gradients.

``impl="auto"`` runs the Triton kernels (:mod:`.kernels`) on CUDA tensors and the torch integer
reference elsewhere; both give identical bits. What differs from a plain ``torch.mul``/``matmul``:
the products are emulated exactly, so this is slower than cuBLAS — it is an emulator, not a speed-up.
"""

from __future__ import annotations

import logging
import math

import torch

from paperbricks.core_kernels.devices import select_impl
from paperbricks.core_kernels.float_bits import FloatFormat

from .config import (
    BACKWARDS,
    CONTAINERS,
    DEFAULT_CHUNK_SIZE,
    ROUNDINGS,
    SEMANTICS,
    check_accumulate,
)
from .reference import lmul_codes, lmul_constant, offset_bits

__all__ = ["lmul", "lmul_bmm", "lmul_codes", "lmul_constant", "lmul_matmul", "offset_bits"]

logger = logging.getLogger(__name__)


# --- validation ----------------------------------------------------------------------------------


def _check_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in CONTAINERS:
        raise TypeError(
            f"{name}: expected a float32, bfloat16 or float16 tensor (the L-Mul containers), "
            f"got {x.dtype}"
        )
    return x


def _check_pair(x: object, y: object, xn: str, yn: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _check_tensor(xn, x), _check_tensor(yn, y)
    if x.dtype != y.dtype:
        raise TypeError(f"{yn}: expected the same dtype as {xn} ({x.dtype}), got {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"{yn}: expected the same device as {xn} ({x.device}), got {y.device}")
    return x, y


def _check_options(
    dtype: torch.dtype, mantissa_bits: object, semantics: object, operand_rounding: object
) -> int:
    container = CONTAINERS[dtype]
    k = container.man_bits if mantissa_bits is None else mantissa_bits
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= container.man_bits:
        raise ValueError(
            f"mantissa_bits: expected None or an int in [1, {container.man_bits}] for {dtype} "
            f"operands, got {mantissa_bits!r}"
        )
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics: expected one of {SEMANTICS}, got {semantics!r}")
    if operand_rounding not in ROUNDINGS:
        raise ValueError(f"operand_rounding: expected one of {ROUNDINGS}, got {operand_rounding!r}")
    return k


def _broadcast(s1: tuple[int, ...], s2: tuple[int, ...]) -> tuple[int, ...] | None:
    """Broadcast shape of s1 and s2, or None (checked by hand: a failing torch.broadcast_shapes
    takes seconds to raise)."""
    n = max(len(s1), len(s2))
    p1, p2 = (1,) * (n - len(s1)) + tuple(s1), (1,) * (n - len(s2)) + tuple(s2)
    out = []
    for d1, d2 in zip(p1, p2, strict=True):
        if d1 != d2 and 1 not in (d1, d2):
            return None
        out.append(d2 if d1 == 1 else d1)
    return tuple(out)


# --- element-wise ----------------------------------------------------------------------------------


class _LMulFn(torch.autograd.Function):
    """L-Mul forward; straight-through backward (the gradients of the exact product x·y)."""

    @staticmethod
    def forward(ctx, x, y, k, semantics, rounding, which):  # type: ignore[override]
        ctx.save_for_backward(x, y)
        if which == "triton":
            from .kernels import lmul_triton

            return lmul_triton(
                x, y, mantissa_bits=k, semantics=semantics, operand_rounding=rounding
            )
        from .reference import lmul_reference

        return lmul_reference(x, y, mantissa_bits=k, semantics=semantics, operand_rounding=rounding)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, y = ctx.saved_tensors
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = (g * y).sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            gy = (g * x).sum_to_size(y.shape)
        return gx, gy, None, None, None, None


def lmul(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mantissa_bits: int | None = None,
    semantics: str = "bits",
    operand_rounding: str = "trunc",
    impl: str = "auto",
) -> torch.Tensor:
    """Element-wise L-Mul of ``x`` and ``y`` (broadcasting like ``torch.mul``).

    Operands are rounded to ``mantissa_bits`` = k mantissa bits in the container's exponent range
    (``e8m(k)`` for float32/bfloat16; E5Mk for float16), subnormals flushed, then multiplied by
    the integer field add ``field(x) + field(y) − C`` with offset ``2^−l(k)``. The result is exact
    in the container (see :mod:`.reference` for the special-value policy: zeros give signed
    zeros, underflow ±0, overflow ±Inf, NaN and Inf propagate). Autograd: straight-through
    (``∂/∂x = g·y``, ``∂/∂y = g·x`` of the exact product).

    Args:
        x: float32, bfloat16 or float16 tensor, any shape.
        y: tensor of the same dtype and device, broadcastable with ``x``.
        mantissa_bits: k in ``[1, container mantissa]`` (23 float32, 7 bfloat16, 10 float16);
            default ``None`` = the container's own.
        semantics: ``"bits"`` (default; integer adder, the mantissa carry bumps the exponent) or
            ``"equation"`` (the displayed formula ``(1 + x_m + y_m + 2^−l)·2^(x_e+y_e)``).
        operand_rounding: ``"trunc"`` (default) or ``"rne"`` (only matters when k is below the
            container's mantissa).
        impl: ``"auto"`` (Triton on CUDA, else reference), ``"reference"`` or ``"triton"``.

    Returns:
        Tensor of the broadcast shape and the inputs' dtype.

    Examples:
        >>> import torch
        >>> lmul(torch.tensor([1.0, 1.5, 3.0]), torch.tensor([1.0, 1.5, -5.0]))
        tensor([  1.0625,   2.1250, -14.5000])
        >>> lmul(torch.tensor([1.75]), torch.tensor([1.25]), semantics="equation")
        tensor([2.0625])
    """
    x, y = _check_pair(x, y, "x", "y")
    if _broadcast(x.shape, y.shape) is None:
        raise ValueError(f"y: shape {tuple(y.shape)} does not broadcast with x's {tuple(x.shape)}")
    k = _check_options(x.dtype, mantissa_bits, semantics, operand_rounding)
    which = select_impl(impl, [x, y], op="lmul.lmul")
    return _LMulFn.apply(x, y, k, semantics, operand_rounding, which)


# --- matrix products -------------------------------------------------------------------------------


def _matmul_forward(a, b, k, semantics, rounding, accumulate, which, chunk_size):
    """(Bt, M, K) ⊛ (Bt, K, N) -> (Bt, M, N) through the chosen implementation."""
    if which == "triton":
        from .kernels import lmul_matmul_triton

        return lmul_matmul_triton(
            a, b, mantissa_bits=k, semantics=semantics, operand_rounding=rounding,
            accumulate=accumulate,
        )  # fmt: skip
    from .reference import lmul_matmul_reference

    return lmul_matmul_reference(
        a, b, mantissa_bits=k, semantics=semantics, operand_rounding=rounding,
        accumulate=accumulate, chunk_size=chunk_size,
    )  # fmt: skip


class _LMulMatmulFn(torch.autograd.Function):
    """Batched L-Matmul on (Bt, M, K) × (Bt, K, N) with "exact" or "lmul" backward."""

    @staticmethod
    def forward(ctx, a, b, opts):  # type: ignore[override]
        ctx.save_for_backward(a, b)
        ctx.opts = opts
        return _matmul_forward(a, b, *opts[:-1])

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        a, b = ctx.saved_tensors
        k, semantics, rounding, accumulate, which, chunk_size, backward = ctx.opts
        g = g.to(a.dtype)
        bt_, at_ = b.transpose(-1, -2), a.transpose(-1, -2)
        ga = gb = None
        if backward == "exact":
            if ctx.needs_input_grad[0]:
                ga = torch.matmul(g, bt_)  # (Bt, M, K)
            if ctx.needs_input_grad[1]:
                gb = torch.matmul(at_, g)  # (Bt, K, N)
        else:
            fwd = (k, semantics, rounding, accumulate, which, chunk_size)
            if ctx.needs_input_grad[0]:
                ga = _matmul_forward(g.contiguous(), bt_.contiguous(), *fwd)
            if ctx.needs_input_grad[1]:
                gb = _matmul_forward(at_.contiguous(), g.contiguous(), *fwd)
        return ga, gb, None


def lmul_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    mantissa_bits: int | None = None,
    semantics: str = "bits",
    operand_rounding: str = "trunc",
    accumulate: torch.dtype | FloatFormat = torch.float32,
    backward: str = "exact",
    impl: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Matrix product with every scalar product an L-Mul: ``C_ij = Σ_k L-Mul(a_ik, b_kj)``.

    The operands are rounded once to k mantissa bits (as in :func:`lmul`); the products are
    summed **in sequence over k** (``acc ← fl(acc + p_k)``, k = 0..K−1, from +0) in the
    accumulation precision. The torch reference materialises at most ``max(chunk_size, N)``
    products at a time; the Triton kernel keeps a (BM, BN) fp32 accumulator per program and
    forms each (BM, BN) tile of integer field sums in registers. Both give identical bits.

    Args:
        a: (..., M, K) float32/bfloat16/float16.
        b: (..., K, N), same dtype and device; the batch dims ``...`` broadcast like
            ``torch.matmul`` (both need at least 2 dims).
        mantissa_bits, semantics, operand_rounding: as for :func:`lmul` (default: the
            container's full mantissa, "bits", "trunc").
        accumulate: ``torch.float32`` (default), ``torch.float64`` (reference only), or a
            core-kernels ``FloatFormat`` such as ``E4M3FN``: every partial sum is rounded to it
            (RNE; finite formats saturate, IEEE-style ones overflow to ±Inf, like torch's casts).
        backward: ``"exact"`` (default): straight-through, ``∂a = g·bᵀ`` and ``∂b = aᵀ·g``
            exactly; ``"lmul"``: ``∂a = lmul_matmul(g, bᵀ)``, ``∂b = lmul_matmul(aᵀ, g)`` with
            the same settings.
        impl: ``"auto"`` (Triton for CUDA tensors when the accumulation is float32 or a
            FloatFormat, else reference), ``"reference"`` or ``"triton"``.
        chunk_size: bound on the number of products the reference materialises (default 2^22).

    Returns:
        (..., M, N) in the inputs' dtype (the accumulator is cast to it once at the end).

    Examples:
        >>> import torch
        >>> a = torch.tensor([[1.0, 1.5]]); b = torch.tensor([[1.0], [1.5]])
        >>> lmul_matmul(a, b)  # 1.0625 + 2.125
        tensor([[3.1875]])
        >>> lmul_matmul(a, b, mantissa_bits=3).shape
        torch.Size([1, 1])
    """
    a, b = _check_pair(a, b, "a", "b")
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(
            f"a, b: expected at least 2 dims each ((..., M, K) and (..., K, N)), got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"b: expected shape (..., K={a.shape[-1]}, N) to match a's (..., M, K), got "
            f"{tuple(b.shape)}"
        )
    batch = _broadcast(a.shape[:-2], b.shape[:-2])
    if batch is None:
        raise ValueError(
            f"a, b: batch dims {tuple(a.shape[:-2])} and {tuple(b.shape[:-2])} do not broadcast"
        )
    k = _check_options(a.dtype, mantissa_bits, semantics, operand_rounding)
    accumulate = check_accumulate(accumulate)
    if backward not in BACKWARDS:
        raise ValueError(f"backward: expected one of {BACKWARDS}, got {backward!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    which = select_impl(
        impl,
        [a, b],
        op="lmul.lmul_matmul",
        supported=accumulate != torch.float64,
        why_unsupported="float64 accumulation runs in the torch reference only",
    )
    m, kk, n = a.shape[-2], a.shape[-1], b.shape[-1]
    bt = math.prod(batch)
    a3 = a.expand(*batch, m, kk).reshape(bt, m, kk)  # (Bt, M, K)
    b3 = b.expand(*batch, kk, n).reshape(bt, kk, n)  # (Bt, K, N)
    opts = (k, semantics, operand_rounding, accumulate, which, chunk_size, backward)
    out = _LMulMatmulFn.apply(a3, b3, opts)  # (Bt, M, N)
    return out.reshape(*batch, m, n)


def lmul_bmm(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """Batched L-Matmul like ``torch.bmm``: a (B, M, K), b (B, K, N) -> (B, M, N).

    Keyword arguments are those of :func:`lmul_matmul`.

    Examples:
        >>> import torch
        >>> lmul_bmm(torch.ones(2, 3, 4), torch.ones(2, 4, 5)).shape
        torch.Size([2, 3, 5])
    """
    for name, t in (("a", a), ("b", b)):
        if isinstance(t, torch.Tensor) and t.dim() != 3:
            raise ValueError(f"{name}: expected a 3-D (B, ., .) tensor, got shape {tuple(t.shape)}")
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape[0] != b.shape[0]:
        raise ValueError(f"b: expected batch size {a.shape[0]} like a, got {b.shape[0]}")
    return lmul_matmul(a, b, **kwargs)  # type: ignore[arg-type]

"""Public dispatching ops of ``quant``: ``int_matmul`` and the fused ``rms_norm_quant``."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..devices import select_impl
from .reference import int_matmul_reference, rms_norm_quant_reference

__all__ = ["INT_MATMUL_MAX_K", "int_matmul", "int_mm_supported", "rms_norm_quant"]

logger = logging.getLogger(__name__)

#: Largest inner dim for which an int8 x int8 product cannot overflow the int32 accumulator:
#: ``128 · 128 · K ≤ 2^31 − 1``.
INT_MATMUL_MAX_K = (2**31 - 1) // (128 * 128)

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def int_mm_supported(m: int, k: int, n: int, device: torch.device | str) -> bool:
    """Whether ``torch._int_mm`` accepts an ``(m, k) @ (k, n)`` int8 product on ``device`` as is.

    CPU (checked on torch 2.15): any non-empty shape. CUDA: ``m > 16`` and ``k``, ``n`` positive
    multiples of 8 (the checks in ``_int_mm_out_cuda``). Other devices: no.
    """
    dev = torch.device(device)
    if not hasattr(torch, "_int_mm") or min(m, k, n) <= 0:
        return False
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return m > 16 and k % 8 == 0 and n % 8 == 0
    return False


def int_matmul(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Exact int8 x int8 -> int32 matrix product ``a @ b``.

    ``backend="auto"`` uses ``torch._int_mm`` on CPU (any shape) and on CUDA (where shapes that
    break its constraints, ``M ≤ 16`` or ``K``/``N`` not multiples of 8, are zero-padded up to
    them, which leaves the product unchanged); elsewhere, or with ``backend="fallback"``, an
    exact float64 GEMM (every partial sum is an integer below 2^53) is used. Results are exact:
    the tests compare them with an int64 matmul.

    Args:
        a: ``int8`` ``(..., K)``; leading dims are flattened into ``M``.
        b: ``int8`` ``(K, N)``. On CUDA a column-major ``b`` (e.g. ``w.t()`` of a contiguous
            ``(N, K)`` weight) is the fast layout for ``torch._int_mm``.
        backend: ``"auto"`` | ``"int_mm"`` | ``"fallback"``.

    Returns:
        ``int32`` ``(..., N)``.

    Raises:
        ValueError: when ``K > INT_MATMUL_MAX_K`` (131071), where int32 could overflow.

    Examples:
        >>> a = torch.tensor([[1, -2, 3]], dtype=torch.int8)
        >>> b = torch.tensor([[1], [1], [127]], dtype=torch.int8)
        >>> int_matmul(a, b).tolist()
        [[380]]
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int8:
            raise TypeError(f"{name}: expected an int8 tensor, got {t.dtype}")
    if a.dim() < 1:
        raise ValueError("a: expected shape (..., K), got a 0-dim tensor")
    if b.dim() != 2:
        raise ValueError(f"b: expected shape (K, N), got {tuple(b.shape)}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"a, b: inner dims differ: a {tuple(a.shape)} vs b {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"a, b: on different devices ({a.device} vs {b.device})")
    if backend not in ("auto", "int_mm", "fallback"):
        raise ValueError(f"backend: expected 'auto', 'int_mm' or 'fallback', got {backend!r}")
    k, n = b.shape
    if k > INT_MATMUL_MAX_K:
        raise ValueError(
            f"a, b: K={k} exceeds {INT_MATMUL_MAX_K}, beyond which the int32 result can overflow"
        )
    a2 = a.reshape(-1, k)  # (M, K)
    m = a2.shape[0]
    dev = a.device
    usable = hasattr(torch, "_int_mm") and dev.type in ("cpu", "cuda") and min(m, k, n) > 0
    if backend == "int_mm" and not usable:
        raise ValueError(
            f"backend: 'int_mm' needs torch._int_mm on a CPU or CUDA device and non-empty shapes, "
            f"got device {dev} and (M, K, N) = {(m, k, n)}"
        )
    if backend == "fallback" or not usable:
        out = int_matmul_reference(a2, b)
    elif int_mm_supported(m, k, n, dev):
        out = torch._int_mm(a2, b)
    else:  # CUDA with shapes _int_mm rejects: zero-pad (exact) up to its constraints
        mp, kp, np_ = max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8
        a_p = F.pad(a2, (0, kp - k, 0, mp - m))
        b_p = F.pad(b, (0, np_ - n, 0, kp - k))
        out = torch._int_mm(a_p, b_p)[:m, :n]
    return out.reshape(*a.shape[:-1], n)


def _as_inv_scale(scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """``1 / scale`` as a 1-element float32 tensor (one fp32 division, as in ``quantize``)."""
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        s = torch.tensor([float(scale)], dtype=torch.float32, device=device)
        if not float(scale) > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
    elif isinstance(scale, torch.Tensor):
        if not scale.is_floating_point() or scale.numel() != 1:
            raise ValueError(
                f"scale: expected one float (a number or a 1-element float tensor) for static "
                f"per-tensor quantization, got {scale.dtype} of shape {tuple(scale.shape)}"
            )
        if scale.device != device:
            raise ValueError(f"scale: is on {scale.device} but x is on {device}")
        s = scale.detach().reshape(1).to(torch.float32)
    else:
        raise TypeError(f"scale: expected a float or a tensor, got {type(scale).__name__}")
    return 1.0 / s


def rms_norm_quant(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | float,
    eps: float = 1e-6,
    *,
    return_normed: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused RMSNorm + static per-tensor symmetric int8 quantization.

    ``y = x / sqrt(mean(x², -1) + eps) · weight`` (float32), then
    ``q = clamp(round(y · (1/scale)), -128, 127)`` with round-half-to-even. The codes are those
    of the float32 ``y``, before any rounding to ``x``'s dtype. With ``scale`` from a
    calibration of ``y`` (``calibrate_scale_zero(..., QuantSpec(dynamic=False))``) this is the
    activation quantizer in front of a W8A8 linear layer.

    Args:
        x: ``(..., D)`` float16/bfloat16/float32/float64 activations.
        weight: ``(D,)`` float RMSNorm weight.
        scale: the static (calibrated) scale, a positive number or a 1-element float tensor on
            ``x``'s device (a tensor avoids a host sync).
        eps: added to the mean square, default 1e-6.
        return_normed: also return the normed ``y`` in ``x``'s dtype.
        impl: ``"auto"`` (Triton for CUDA inputs) | ``"reference"`` | ``"triton"``.

    Returns:
        ``int8`` codes of ``x.shape``, or ``(codes, y)`` with ``return_normed``.

    Examples:
        >>> x = torch.tensor([[3.0, -4.0]])
        >>> rms_norm_quant(x, torch.ones(2), scale=1 / 64, impl="reference").tolist()
        [[54, -72]]
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOATS:
        raise TypeError(f"x: expected a float tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x: expected shape (..., D) with D > 0, got {tuple(x.shape)}")
    d = x.shape[-1]
    if not isinstance(weight, torch.Tensor) or weight.dtype not in _FLOATS:
        raise TypeError(
            f"weight: expected a float tensor, got {getattr(weight, 'dtype', type(weight).__name__)}"
        )
    if tuple(weight.shape) != (d,):
        raise ValueError(f"weight: expected shape ({d},), got {tuple(weight.shape)}")
    if not isinstance(eps, (int, float)) or not float(eps) >= 0.0:
        raise ValueError(f"eps: expected a float >= 0, got {eps!r}")
    inv = _as_inv_scale(scale, x.device)
    which = select_impl(impl, (x, weight, inv), op="quant.rms_norm_quant")
    x2 = x.reshape(-1, d)  # (N, D)
    if which == "triton":
        from ._triton import rms_norm_quant_triton

        x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
        q, y = rms_norm_quant_triton(x2, weight.contiguous(), inv, float(eps), return_normed)
    else:
        q, yf = rms_norm_quant_reference(x2, weight, inv.reshape(()), float(eps))
        y = yf.to(x.dtype) if return_normed else None
    q = q.reshape(x.shape)
    if return_normed and y is not None:
        return q, y.reshape(x.shape)
    return q

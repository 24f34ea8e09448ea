"""Public dispatching ops of ``quant``: integer GEMMs and the fused Triton-backed kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..devices import select_impl
from .reference import int_matmul_reference, quantize, rms_norm_quant_reference
from .spec import QuantSpec, scale_shape

__all__ = [
    "INT_MATMUL_MAX_K",
    "int_matmul",
    "int_mm_supported",
    "quantize_kv",
    "rms_norm_quant",
    "w8a8_matmul",
]

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
        if dev.type == "cuda":  # cuBLASLt wants each operand row- or column-major
            a2 = a2.contiguous()
            b = b if 1 in b.stride() else b.contiguous()
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


def _per_row_scale(
    scale: torch.Tensor, rows: int, lead: tuple[int, ...], name: str
) -> torch.Tensor:
    """A per-tensor or per-row scale as a float32 vector of 1 or ``rows`` elements."""
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise TypeError(
            f"{name}: expected a float tensor, got {getattr(scale, 'dtype', type(scale).__name__)}"
        )
    if scale.numel() == 1:
        return scale.reshape(1).to(torch.float32)
    if scale.numel() == rows and tuple(scale.shape) in ((*lead, 1), tuple(lead), (rows,)):
        return scale.reshape(rows).to(torch.float32)
    raise ValueError(
        f"{name}: expected one scale or one per row, shape () / (1,) / {(*lead, 1)} / {tuple(lead)}, "
        f"got {tuple(scale.shape)}"
    )


def w8a8_matmul(
    a: torch.Tensor,
    w: torch.Tensor,
    a_scale: torch.Tensor,
    w_scale: torch.Tensor,
    *,
    out_dtype: torch.dtype = torch.bfloat16,
    impl: str = "auto",
) -> torch.Tensor:
    """W8A8 linear layer: ``y = (a @ wᵀ) · s_a · s_wᵀ`` from int8 codes, int32-exact accumulation.

    The Triton kernel accumulates ``tl.dot`` int8 x int8 -> int32 tiles and applies the scales in
    the epilogue, in the same float32 order as the reference (``int_matmul`` then
    ``acc.float() · s_a · s_w``), so the two agree bit for bit. No bias: add it afterwards.

    Args:
        a: ``int8`` activation codes ``(..., K)`` (symmetric, e.g. per-token dynamic).
        w: ``int8`` weight codes ``(N, K)``, the ``nn.Linear`` layout.
        a_scale: float, one per tensor (``()``/``(1,)``) or one per token (``(..., 1)``).
        w_scale: float, one per tensor or one per output channel (``(N, 1)`` or ``(N,)``).
        out_dtype: output float dtype, default bfloat16.
        impl: ``"auto"`` (Triton for CUDA inputs) | ``"reference"`` | ``"triton"``.

    Returns:
        ``(..., N)`` tensor of ``out_dtype``.

    Examples:
        >>> a = torch.tensor([[1, 2]], dtype=torch.int8)
        >>> w = torch.tensor([[3, 4], [-1, 0]], dtype=torch.int8)
        >>> w8a8_matmul(a, w, torch.tensor(0.5), torch.tensor([1.0, 2.0]), out_dtype=torch.float32, impl="reference").tolist()
        [[5.5, -1.0]]
    """
    for name, t in (("a", a), ("w", w)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int8:
            raise TypeError(
                f"{name}: expected an int8 tensor, got {getattr(t, 'dtype', type(t).__name__)}"
            )
    if a.dim() < 1 or w.dim() != 2 or a.shape[-1] != w.shape[1]:
        raise ValueError(
            f"a, w: expected (..., K) and (N, K), got {tuple(a.shape)} and {tuple(w.shape)}"
        )
    if out_dtype not in _FLOATS:
        raise TypeError(f"out_dtype: expected a float dtype, got {out_dtype}")
    n, k = w.shape
    if k > INT_MATMUL_MAX_K:
        raise ValueError(f"a, w: K={k} exceeds {INT_MATMUL_MAX_K}, beyond which int32 can overflow")
    lead = tuple(a.shape[:-1])
    a2 = a.reshape(-1, k)  # (M, K)
    m = a2.shape[0]
    sa = _per_row_scale(a_scale, m, lead, "a_scale")
    sw = _per_row_scale(w_scale, n, (n,), "w_scale")
    for name, t in (("a_scale", sa), ("w_scale", sw), ("w", w)):
        if t.device != a.device:
            raise ValueError(f"{name}: is on {t.device} but a is on {a.device}")
    which = select_impl(impl, (a2, w, sa, sw), op="quant.w8a8_matmul")
    if which == "triton":
        from ._triton import w8a8_matmul_triton

        out = w8a8_matmul_triton(a2, w, sa.contiguous(), sw.contiguous(), out_dtype)
    else:
        acc = int_matmul(a2, w.t())  # (M, N) int32, exact
        out = (acc.to(torch.float32) * sa[:, None] * sw[None, :]).to(out_dtype)
    return out.reshape(*lead, n)


def quantize_kv(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None = None,
    spec: QuantSpec | None = None,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Static per-head quantization of a K or V cache (fused in Triton on CUDA).

    Same result as ``quantize(x, scale, zero, spec)`` with a ``"head"`` spec, bit for bit:
    ``q = clamp(round(x · (1/s_h)) + z_h, qmin, qmax)`` with one calibrated scale per head.

    Args:
        x: ``(B, H, T, D)`` float tensor (or any layout, with ``spec.axis`` naming the head axis).
        scale: ``(H,)`` positive float scales (or the keepdim shape ``scale_shape(x.shape, spec)``).
        zero: ``(H,)`` integer zero points for asymmetric specs; None means 0.
        spec: a ``granularity="head"`` spec; default ``QuantSpec(bits=8, granularity="head",
            dynamic=False)`` (symmetric int8, heads on axis 1).
        impl: ``"auto"`` (Triton for CUDA inputs) | ``"reference"`` | ``"triton"``.

    Returns:
        codes of ``x.shape`` (``int8`` symmetric, ``uint8`` asymmetric).

    Examples:
        >>> k = torch.tensor([[[[0.5, -1.0]], [[3.0, 2.0]]]])  # (B=1, H=2, T=1, D=2)
        >>> quantize_kv(k, torch.tensor([0.5, 0.25]), impl="reference").flatten().tolist()
        [1, -2, 12, 8]
    """
    spec = QuantSpec(bits=8, granularity="head", dynamic=False) if spec is None else spec
    if not isinstance(spec, QuantSpec) or spec.granularity != "head":
        raise ValueError(f"spec: expected a QuantSpec with granularity='head', got {spec!r}")
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOATS:
        raise TypeError(f"x: expected a float tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    target = scale_shape(x.shape, spec)  # validates the head axis
    axis = int(spec.resolved_axis or 0) % x.dim()
    h = x.shape[axis]
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise TypeError(f"scale: expected a float tensor of {h} per-head scales")
    if scale.numel() != h or tuple(scale.shape) not in ((h,), target):
        raise ValueError(f"scale: expected shape ({h},) or {target}, got {tuple(scale.shape)}")
    if zero is not None and (zero.numel() != h or tuple(zero.shape) not in ((h,), target)):
        raise ValueError(f"zero: expected shape ({h},) or {target}, got {tuple(zero.shape)}")
    if spec.symmetric and zero is not None and bool((zero != 0).any()):
        raise ValueError("zero: symmetric specs have zero point 0, got a non-zero zero point")
    which = select_impl(
        impl,
        (x, scale),
        op="quant.quantize_kv",
        supported=x.dtype != torch.float64,
        why_unsupported="float64 inputs are quantized in float64 by the reference only",
    )
    if which == "reference":
        return quantize(
            x, scale.reshape(target), None if zero is None else zero.reshape(target), spec
        )
    inv = 1.0 / scale.detach().reshape(h).to(torch.float32)
    z = (
        torch.zeros(h, dtype=torch.float32, device=x.device)
        if zero is None
        else zero.reshape(h).to(torch.float32)
    )
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1 :])
    from ._triton import quantize_kv_triton

    x3 = x.contiguous().reshape(outer, h, inner)  # (OUTER, H, INNER)
    q = quantize_kv_triton(x3, inv, z, spec.qmin, spec.qmax, spec.code_dtype)
    return q.reshape(x.shape)

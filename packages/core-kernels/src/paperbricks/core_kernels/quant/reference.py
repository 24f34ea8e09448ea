"""Plain-PyTorch quantization: scales, quantize/dequantize, fake-quant (STE), int4 packing, clip search.

Conventions (shared with the Triton kernels, so the two agree bit for bit):

- ``q = clamp(round(x · (1/s)) + z, qmin, qmax)`` and ``x̂ = (q − z) · s``, where ``1/s`` is one
  float32 division (float64 for float64 inputs) and ``round`` is ``torch.round``, i.e.
  **round-half-to-even**. This is the order ``torch.fake_quantize_per_tensor_affine`` uses, which
  the tests use as an outside oracle.
- Symmetric scales: ``s = max(clip · max|x| / qmax, eps)``, ``z = 0``.
- Asymmetric scales: ``lo = clip · min(min x, 0)``, ``hi = clip · max(max x, 0)``,
  ``s = max((hi − lo) / (qmax − qmin), eps)``, ``z = clamp(qmin − round(lo / s), qmin, qmax)``
  (the range always contains 0, so 0 is exactly representable).
- Arithmetic runs in float32 (float64 for float64 inputs) whatever the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from .spec import QuantSpec, scale_shape

__all__ = [
    "DEFAULT_CLIP_GRID",
    "ClipSearchResult",
    "calibrate_scale_zero",
    "compute_scale_zero",
    "dequantize",
    "fake_quant",
    "int_matmul_reference",
    "mse_clip_search",
    "pack_int4",
    "quantize",
    "rms_norm_quant_reference",
    "search_clip_ratio",
    "unpack_int4",
]

#: Clip ratios tried by :func:`search_clip_ratio` by default: 1.00, 0.99, ..., 0.50.
DEFAULT_CLIP_GRID: tuple[float, ...] = tuple(round(1.0 - 0.01 * i, 2) for i in range(51))

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------- helpers


def _check_float(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"{name}: expected a float16/bfloat16/float32/float64 tensor, got {x.dtype}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(x.shape)}")
    return x


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _grouped(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``x`` viewed so that its scale (in internal shape) broadcasts against it."""
    if spec.granularity == "group":
        gs = int(spec.group_size or 1)
        return x.reshape(*x.shape[:-1], x.shape[-1] // gs, gs)  # (..., D/g, g)
    return x


def _reduce_dims(xv: torch.Tensor, spec: QuantSpec) -> tuple[int, ...]:
    """Dims of the grouped view that one scale covers."""
    g = spec.granularity
    if g == "tensor":
        return tuple(range(xv.dim()))
    if g in ("token", "group"):
        return (xv.dim() - 1,)
    axis = int(spec.resolved_axis or 0) % xv.dim()
    return tuple(i for i in range(xv.dim()) if i != axis)


def _to_internal(t: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Canonical scale shape -> the shape that broadcasts against :func:`_grouped`."""
    return t.unsqueeze(-1) if spec.granularity == "group" else t


def _as_param(
    value: torch.Tensor | float | None,
    x: torch.Tensor,
    spec: QuantSpec,
    name: str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Turn a user-supplied scale / zero point into a tensor of the canonical scale shape."""
    target = scale_shape(x.shape, spec)
    if value is None:
        return torch.zeros(target, dtype=dtype, device=x.device)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full(target, float(value), dtype=dtype, device=x.device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor or a number, got {type(value).__name__}")
    if value.device != x.device:
        raise ValueError(f"{name}: is on {value.device} but x is on {x.device}")
    t = value.to(dtype)
    if tuple(t.shape) == target:
        return t
    if target == () and t.numel() == 1:
        return t.reshape(())  # a (1,) per-tensor scale
    axis = spec.resolved_axis
    if axis is not None and t.dim() == 1 and t.numel() == x.shape[axis]:
        return t.reshape(target)  # a (C,) per-channel vector
    shape = tuple(t.shape)
    if len(shape) <= len(target) and all(
        a in (1, b) for a, b in zip(reversed(shape), reversed(target), strict=False)
    ):
        return t.expand(
            target
        )  # broadcasts (checked by hand: torch.broadcast_shapes is slow to fail)
    raise ValueError(
        f"{name}: expected shape {target} (granularity={spec.granularity!r} for x of shape "
        f"{tuple(x.shape)}) or one that broadcasts to it, got {tuple(t.shape)}"
    )


def _scale_zero_from_range(
    lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec, ratio: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point from the observed per-slice ``[lo, hi]`` (any common shape)."""
    if spec.symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = (amax * ratio / spec.qmax).clamp_min(spec.eps)
        return scale, torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
    lo = lo.clamp_max(0.0) * ratio
    hi = hi.clamp_min(0.0) * ratio
    scale = ((hi - lo) / (spec.qmax - spec.qmin)).clamp_min(spec.eps)
    zero = (spec.qmin - torch.round(lo / scale)).clamp(spec.qmin, spec.qmax).to(torch.int32)
    return scale, zero


def _slice_range(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slice min and max of ``x`` in the canonical scale shape (compute dtype)."""
    xv = _grouped(x, spec).to(_compute_dtype(x))
    target = scale_shape(x.shape, spec)
    if spec.granularity == "tensor":
        return xv.amin().reshape(target), xv.amax().reshape(target)
    dims = _reduce_dims(xv, spec)
    return (
        xv.amin(dim=dims, keepdim=True).reshape(target),
        xv.amax(dim=dims, keepdim=True).reshape(target),
    )


def _check_ratio(
    clip_ratio: torch.Tensor | float | None, x: torch.Tensor, spec: QuantSpec
) -> torch.Tensor | float:
    if clip_ratio is None:
        return float(spec.clip_ratio)
    if isinstance(clip_ratio, torch.Tensor):
        return _as_param(clip_ratio, x, spec, "clip_ratio", _compute_dtype(x))
    if not isinstance(clip_ratio, (int, float)) or not 0.0 < float(clip_ratio) <= 1.0:
        raise ValueError(f"clip_ratio: expected a float in (0, 1] or a tensor, got {clip_ratio!r}")
    return float(clip_ratio)


# ----------------------------------------------------------------------------- scales


def compute_scale_zero(
    x: torch.Tensor,
    spec: QuantSpec,
    *,
    clip_ratio: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max scale and zero point of ``x`` for ``spec`` (the dynamic observer).

    Args:
        x: float tensor of any shape that fits ``spec.granularity``.
        spec: the quantizer.
        clip_ratio: overrides ``spec.clip_ratio``; a float in (0, 1] or a tensor of the scale
            shape (one ratio per slice, as returned by ``search_clip_ratio(per_slice=True)``).

    Returns:
        ``(scale, zero)``: ``scale`` float32 (float64 for float64 ``x``) and ``zero`` int32, both
        of shape :func:`scale_shape` ``(x.shape, spec)``; ``zero`` is all 0 for symmetric specs.

    Examples:
        >>> spec = QuantSpec(bits=8, granularity="channel")
        >>> s, z = compute_scale_zero(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), spec)
        >>> torch.allclose(s.flatten(), torch.tensor([2.0 / 127, 0.5 / 127])), z.shape
        (True, torch.Size([2, 1]))
    """
    _check_float(x, "x")
    ratio = _check_ratio(clip_ratio, x, spec)
    lo, hi = _slice_range(x.detach(), spec)
    return _scale_zero_from_range(lo, hi, spec, ratio)


def calibrate_scale_zero(
    batches: Iterable[torch.Tensor], spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Static (calibrated) scale and zero point: the min/max observer run over several batches.

    Every batch must give the same scale shape (for example ``(B, T, D)`` activations with a
    per-tensor or ``axis=-1`` per-channel spec, whatever ``B`` and ``T``). Returns the same as
    :func:`compute_scale_zero` on the running min and max.
    """
    lo: torch.Tensor | None = None
    hi: torch.Tensor | None = None
    for i, batch in enumerate(batches):
        _check_float(batch, f"batches[{i}]")
        b_lo, b_hi = _slice_range(batch.detach(), spec)
        if lo is None or hi is None:
            lo, hi = b_lo, b_hi
            continue
        if b_lo.shape != lo.shape:
            raise ValueError(
                f"batches[{i}]: gives scale shape {tuple(b_lo.shape)}, but earlier batches gave "
                f"{tuple(lo.shape)} (granularity={spec.granularity!r})"
            )
        lo, hi = torch.minimum(lo, b_lo), torch.maximum(hi, b_hi)
    if lo is None or hi is None:
        raise ValueError("batches: expected at least one calibration tensor, got none")
    return _scale_zero_from_range(lo, hi, spec, float(spec.clip_ratio))


# ----------------------------------------------------------------------------- (de)quantize


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero: torch.Tensor | float | None,
    spec: QuantSpec,
) -> torch.Tensor:
    """Integer codes ``q = clamp(round(x · (1/s)) + z, qmin, qmax)`` (round-half-to-even).

    Args:
        x: float tensor, any shape that fits ``spec.granularity``.
        scale: positive scale(s): a number or a tensor of shape ``scale_shape(x.shape, spec)``
            (a ``(C,)`` vector is accepted for channel/head granularity, and anything that
            broadcasts to the scale shape). Positivity is not checked (that would sync the device).
        zero: integer zero point(s), same shapes as ``scale``; None means 0.
        spec: the quantizer.

    Returns:
        codes of ``x.shape``: ``int8`` for symmetric specs, ``uint8`` for asymmetric ones.

    Examples:
        >>> quantize(torch.tensor([0.5, 1.5, 2.5, 100.0]), 1.0, None, QuantSpec(bits=4)).tolist()
        [0, 2, 2, 7]
    """
    _check_float(x, "x")
    cd = _compute_dtype(x)
    s = _to_internal(_as_param(scale, x, spec, "scale", cd), spec)
    z = _to_internal(_as_param(zero, x, spec, "zero", cd), spec)
    if spec.symmetric and zero is not None and bool((z != 0).any()):
        raise ValueError("zero: symmetric specs have zero point 0, got a non-zero zero point")
    xv = _grouped(x, spec).to(cd)
    q = (torch.round(xv * (1.0 / s)) + z).clamp(spec.qmin, spec.qmax)
    return q.reshape(x.shape).to(spec.code_dtype)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    zero: torch.Tensor | float | None,
    spec: QuantSpec,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``x̂ = (q − z) · s`` in ``dtype`` (computed in float32, or float64 when ``dtype`` is float64).

    Args:
        q: integer codes (any integer dtype; normally ``spec.code_dtype``).
        scale, zero: as in :func:`quantize`, shapes relative to ``q.shape``.
        spec: the quantizer.
        dtype: output float dtype, default float32.
    """
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q: expected a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"q: expected an integer tensor of codes, got {q.dtype}")
    if dtype not in _FLOATS:
        raise TypeError(f"dtype: expected a float dtype, got {dtype}")
    cd = torch.float64 if dtype == torch.float64 else torch.float32
    ref = torch.empty(q.shape, dtype=cd, device=q.device)  # shape/device carrier for _as_param
    s = _to_internal(_as_param(scale, ref, spec, "scale", cd), spec)
    z = _to_internal(_as_param(zero, ref, spec, "zero", cd), spec)
    qv = _grouped(q, spec).to(cd)
    return ((qv - z) * s).reshape(q.shape).to(dtype)


def fake_quant(
    x: torch.Tensor,
    spec: QuantSpec,
    scale: torch.Tensor | float | None = None,
    zero: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Quantize-dequantize ``x`` with a straight-through estimator (STE).

    Forward: ``x̂ = (clamp(round(x · (1/s)) + z, qmin, qmax) − z) · s``. Backward: ``∂x̂/∂x = 1``
    where ``round(x · (1/s)) + z`` lies in ``[qmin, qmax]`` and 0 where it was clipped (the
    gradient of ``torch.fake_quantize_per_tensor_affine``). No gradient reaches ``scale``/``zero``
    (use :class:`LearnableFakeQuant` to learn the scale).

    Args:
        x: float tensor (any float dtype; the output has the same dtype and shape).
        spec: the quantizer.
        scale: a calibrated scale (see :func:`quantize` for shapes). None computes it from ``x``
            (dynamic quantization, needs ``spec.dynamic``).
        zero: zero point to go with ``scale``; None means 0 (when ``scale`` is given) or the
            computed one (when ``scale`` is None).

    Examples:
        >>> x = torch.tensor([[0.1, -0.7, 1.3, 2.0]])
        >>> fake_quant(x, QuantSpec(bits=4, granularity="token")).mul(7 / 2).round().tolist()
        [[0.0, -2.0, 5.0, 7.0]]
    """
    _check_float(x, "x")
    cd = _compute_dtype(x)
    if scale is None:
        if zero is not None:
            raise ValueError("zero: given without scale; pass both, or neither for dynamic quant")
        if not spec.dynamic:
            raise ValueError(
                "scale: spec is static (dynamic=False), so a calibrated scale must be passed "
                "(see calibrate_scale_zero)"
            )
        s, z = compute_scale_zero(x.detach(), spec)
    else:
        s = _as_param(scale, x, spec, "scale", cd)
        z = _as_param(zero, x, spec, "zero", cd)
        if spec.symmetric and zero is not None and bool((z != 0).any()):
            raise ValueError("zero: symmetric specs have zero point 0, got a non-zero zero point")
    s = _to_internal(s.detach().to(cd), spec)
    z = _to_internal(z.detach().to(cd), spec)
    xv = _grouped(x, spec).to(cd)
    q = torch.round(xv.detach() * (1.0 / s)) + z
    inside = (q >= spec.qmin) & (q <= spec.qmax)
    xq = (q.clamp(spec.qmin, spec.qmax) - z) * s
    out = xq + (xv - xv.detach()) * inside  # value xq, gradient 1 inside the range
    return out.reshape(x.shape).to(x.dtype)


# ----------------------------------------------------------------------------- int4 packing


def pack_int4(codes: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """Pack 4-bit codes two per byte along the last dim.

    Nibble order: ``out[..., i] = (codes[..., 2i] & 0xF) | ((codes[..., 2i + 1] & 0xF) << 4)``,
    i.e. the even element goes to the low nibble and the odd element to the high nibble.

    Args:
        codes: ``int8`` codes in ``[-8, 7]`` (two's-complement nibbles) or ``uint8`` codes in
            ``[0, 15]``, shape ``(..., D)`` with ``D`` even.
        check: verify the code range (one device sync); an out-of-range code raises ``ValueError``.

    Returns:
        ``uint8`` tensor of shape ``(..., D // 2)``.

    Examples:
        >>> pack_int4(torch.tensor([1, -2], dtype=torch.int8)).tolist()  # 0xE1
        [225]
    """
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes: expected a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype not in (torch.int8, torch.uint8):
        raise TypeError(
            f"codes: expected int8 (in [-8, 7]) or uint8 (in [0, 15]), got {codes.dtype}"
        )
    if codes.dim() == 0 or codes.shape[-1] % 2 != 0:
        raise ValueError(
            f"codes: expected a last dim of even length, got shape {tuple(codes.shape)}"
        )
    lo_ok, hi_ok = (-8, 7) if codes.dtype == torch.int8 else (0, 15)
    if check and codes.numel() and bool(((codes < lo_ok) | (codes > hi_ok)).any()):
        raise ValueError(
            f"codes: {codes.dtype} codes must lie in [{lo_ok}, {hi_ok}] to fit a nibble, got "
            f"values in [{int(codes.min())}, {int(codes.max())}]"
        )
    nib = codes.to(torch.int16) & 0xF  # (..., D) two's-complement nibbles
    pairs = nib.reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)  # (..., D/2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, *, signed: bool = True) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: ``uint8 (..., D/2)`` -> codes ``(..., D)``.

    Args:
        packed: ``uint8`` bytes, low nibble = even element, high nibble = odd element.
        signed: True gives ``int8`` codes in ``[-8, 7]`` (nibbles sign-extended); False gives
            ``uint8`` codes in ``[0, 15]``.
    """
    if not isinstance(packed, torch.Tensor):
        raise TypeError(f"packed: expected a torch.Tensor, got {type(packed).__name__}")
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed: expected a uint8 tensor, got {packed.dtype}")
    if packed.dim() == 0:
        raise ValueError("packed: expected at least 1 dim, got a 0-dim tensor")
    p = packed.to(torch.int16)
    nib = torch.stack((p & 0xF, p >> 4), dim=-1)  # (..., D/2, 2)
    nib = nib.reshape(*packed.shape[:-1], packed.shape[-1] * 2)  # (..., D)
    if signed:
        return ((nib ^ 8) - 8).to(torch.int8)  # sign-extend the 4-bit two's complement
    return nib.to(torch.uint8)


# ----------------------------------------------------------------------------- matmul, fused norm


def int_matmul_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer product ``a @ b`` of int8 matrices, as int32 (through an exact float64 GEMM).

    Every partial sum is an integer of magnitude below ``2^14 · K < 2^53``, so the float64 product
    is exact; callers keep ``K`` small enough for int32 (see ``int_matmul``).
    """
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


def rms_norm_quant_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    inv_scale: torch.Tensor,
    eps: float,
    qmin: int = -128,
    qmax: int = 127,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm followed by static per-tensor symmetric quantization, in float32.

    ``y = x · (1 / sqrt(mean(x²) + eps)) · w`` (the RMSNorm; ``1/sqrt`` rather than ``rsqrt`` so
    every step is correctly rounded and a GPU kernel can reproduce it), then
    ``q = clamp(round(y · inv_scale), qmin, qmax)``.

    Args:
        x: ``(N, D)`` float tensor.
        weight: ``(D,)`` float tensor.
        inv_scale: 0-dim float32 tensor, ``1 / scale``.
        eps: added to the mean square.

    Returns:
        ``(codes int8 (N, D), y float32 (N, D))``.
    """
    xf = x.to(torch.float32)  # (N, D)
    ms = xf.square().mean(dim=-1, keepdim=True)  # (N, 1)
    r = 1.0 / torch.sqrt(ms + eps)  # (N, 1)
    y = xf * r * weight.to(torch.float32)  # (N, D)
    q = torch.round(y * inv_scale).clamp(qmin, qmax).to(torch.int8)
    return q, y


# ----------------------------------------------------------------------------- clip search


@dataclass(frozen=True)
class ClipSearchResult:
    """Outcome of a clip-ratio search.

    ``ratio``/``loss``: the best ratio and its loss (floats; tensors of the scale shape for a
    per-slice search). ``grid``: the ratios tried, ``(R,)``. ``losses``: ``(R,)``, or
    ``(R, *scale_shape)`` for a per-slice search.
    """

    ratio: float | torch.Tensor
    loss: float | torch.Tensor
    grid: torch.Tensor
    losses: torch.Tensor


def _check_grid(grid: Sequence[float] | torch.Tensor) -> list[float]:
    values = grid.tolist() if isinstance(grid, torch.Tensor) else list(grid)
    if not values:
        raise ValueError("grid: expected at least one clip ratio, got an empty grid")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0:
            raise ValueError(f"grid: every ratio must be a float in (0, 1], got {v!r}")
        out.append(float(v))
    return out


def mse_clip_search(
    objective: Callable[[float], float | torch.Tensor],
    grid: Sequence[float] | torch.Tensor = DEFAULT_CLIP_GRID,
) -> ClipSearchResult:
    """Grid search: the ratio in ``grid`` minimising ``objective(ratio)``.

    Ties go to the earliest grid entry (with the default descending grid, the widest range).

    Args:
        objective: maps a clip ratio to a scalar loss (a float or a 1-element tensor), for
            example the output MSE of a layer quantized with that ratio.
        grid: ratios to try, each in (0, 1]; default :data:`DEFAULT_CLIP_GRID` (1.00 ... 0.50).

    Examples:
        >>> mse_clip_search(lambda r: (r - 0.8) ** 2, [1.0, 0.9, 0.8, 0.7]).ratio
        0.8
    """
    if not callable(objective):
        raise TypeError(f"objective: expected a callable, got {type(objective).__name__}")
    ratios = _check_grid(grid)
    losses = []
    for r in ratios:
        v = objective(r)
        value = float(v.detach().reshape(()).item()) if isinstance(v, torch.Tensor) else float(v)
        if math.isnan(value):
            raise ValueError(f"objective: returned NaN at clip ratio {r}")
        losses.append(value)
    best = min(range(len(ratios)), key=lambda i: (losses[i], i))
    return ClipSearchResult(
        ratio=ratios[best],
        loss=losses[best],
        grid=torch.tensor(ratios, dtype=torch.float64),
        losses=torch.tensor(losses, dtype=torch.float64),
    )


def search_clip_ratio(
    x: torch.Tensor,
    spec: QuantSpec,
    grid: Sequence[float] | torch.Tensor = DEFAULT_CLIP_GRID,
    *,
    per_slice: bool = False,
) -> ClipSearchResult:
    """The clip ratio minimising the quantization MSE ``‖x − fake_quant(x)‖²`` of ``x``.

    Args:
        x: float tensor to quantize (a weight, or calibration activations).
        spec: the quantizer (its ``clip_ratio`` is ignored; the grid is searched instead).
        grid: ratios to try, each in (0, 1].
        per_slice: False searches one ratio for the whole tensor (through
            :func:`mse_clip_search`); True picks the best ratio for every scale slice separately
            (vectorised over slices), returning tensors of the scale shape that can be passed as
            ``compute_scale_zero(x, spec, clip_ratio=result.ratio)``.

    Examples:
        >>> x = torch.cat([torch.linspace(-1, 1, 999), torch.tensor([8.0])])
        >>> search_clip_ratio(x, QuantSpec(bits=4)).ratio < 1.0  # clipping the outlier pays
        True
    """
    _check_float(x, "x")
    ratios = _check_grid(grid)
    xd = x.detach()
    cd = _compute_dtype(x)
    xv = _grouped(xd, spec).to(cd)
    target = scale_shape(x.shape, spec)

    def slice_err(r: float) -> torch.Tensor:
        s, z = compute_scale_zero(xd, spec, clip_ratio=r)
        err = (_grouped(fake_quant(xd.to(cd), spec, s, z), spec) - xv).square()
        if spec.granularity == "tensor":
            return err.sum().reshape(target)
        return err.sum(dim=_reduce_dims(xv, spec), keepdim=True).reshape(target)

    if not per_slice:
        return mse_clip_search(lambda r: slice_err(r).sum() / x.numel(), ratios)
    slice_numel = x.numel() // max(1, math.prod(target))
    losses = torch.stack([slice_err(r) / slice_numel for r in ratios])  # (R, *scale_shape)
    best = losses.argmin(dim=0)  # first minimum along the grid
    grid_t = torch.tensor(ratios, dtype=cd, device=x.device)
    return ClipSearchResult(
        ratio=grid_t[best],
        loss=losses.gather(0, best.unsqueeze(0)).squeeze(0),
        grid=grid_t,
        losses=losses,
    )

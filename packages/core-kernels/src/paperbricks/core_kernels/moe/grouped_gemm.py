"""Grouped (per-expert) GEMM over expert-sorted tokens, forward and backward.

For tokens sorted by expert (``x`` (M, K), expert ``e`` owning rows ``[o_{e-1}, o_e)`` with
``offsets = (o_0, ..., o_{E-1})`` the cumulative block ends, ``o_{-1} = 0``, ``o_{E-1} = M``)::

    y[o_{e-1}:o_e] = x[o_{e-1}:o_e] @ w[e]                     w: (E, K, N)       (1)
    dx[o_{e-1}:o_e] = dy[o_{e-1}:o_e] @ w[e]ᵀ                                      (2)
    dw[e] = x[o_{e-1}:o_e]ᵀ @ dy[o_{e-1}:o_e]   (zeros for an expert with no rows) (3)

and the fused SwiGLU fc1 variant (``w1`` (E, K, 2I); first half of the columns is the gate)::

    h = grouped_mm(x, w1);  y = silu(h[:, :I]) * h[:, I:]                           (4)

Backends (``impl``):

- ``"reference"``: a loop over experts (reads the offsets on the host: the readable twin).
- ``"torch"``: ``torch.nn.functional.grouped_mm`` (or ``torch._grouped_mm``) for (1)-(3), where
  it exists and is legal (see :func:`torch_grouped_mm_unsupported_reason`).
- ``"triton"``: the kernels of ``_triton.py`` (expert lookup from the offsets on the device, no
  host sync); the SwiGLU variant applies the activation in the GEMM epilogue.
- ``"auto"``: on CUDA, ``"torch"`` for bfloat16 on SM80+ (where torch documents support), else
  ``"triton"``; on the CPU, ``"torch"`` when it is legal for the inputs (fp32/fp16/bf16, 16-byte
  aligned rows) and the reference loop otherwise.

Every backend runs (1)-(4) through one ``torch.autograd.Function`` with the same backward
equations, so gradients flow to ``x`` and ``w`` whatever the backend. Only the reference reads
the offsets on the host; the other paths never call ``.item()``/``.tolist()``.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

from ..devices import select_impl, triton_interpreted

__all__ = [
    "GroupedImpl",
    "grouped_mm",
    "grouped_swiglu",
    "resolve_grouped_impl",
    "swiglu",
    "torch_grouped_mm_unsupported_reason",
]

logger = logging.getLogger(__name__)

GroupedImpl = Literal["auto", "reference", "torch", "triton"]
_GROUPED_IMPLS = ("auto", "reference", "torch", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TORCH_GMM_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_warned: set[str] = set()


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` for ``h = [gate | up]`` split in half along the last dimension.

    Args:
        h: (..., 2I) pre-activations; the first ``I`` columns are the gate, the last ``I`` "up".

    Returns:
        (..., I) in ``h.dtype``.
    """
    if h.shape[-1] % 2:
        raise ValueError(
            f"h: expected an even last dimension (gate | up), got shape {tuple(h.shape)}"
        )
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def _torch_gmm():
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def torch_grouped_mm_unsupported_reason(x: torch.Tensor, w: torch.Tensor) -> str | None:
    """Why ``torch``'s grouped GEMM cannot take ``x`` (M, K) and ``w`` (E, K, N); None when it can.

    Checked against torch 2.15 (see docs/moe.md): the op exists as ``F.grouped_mm`` and
    ``torch._grouped_mm``; on the CPU it accepts float32/float16/bfloat16 (not float64) and
    needs every stride of both operands to be a multiple of 16 bytes (so K and N must be
    multiples of 4 in fp32, 8 in 16-bit types); on CUDA it is documented for bfloat16 on compute
    capability 8.0 or newer. Offsets must be int32.
    """
    if _torch_gmm() is None:
        return f"torch {torch.__version__} has neither F.grouped_mm nor torch._grouped_mm"
    if x.dtype not in _TORCH_GMM_DTYPES or w.dtype != x.dtype:
        return f"dtype {x.dtype}/{w.dtype} is not one of float32/float16/bfloat16 (both alike)"
    size = x.element_size()
    k, n = w.shape[1], w.shape[2]
    if (k * size) % 16 or (n * size) % 16:
        return f"K={k} and N={n} must give rows of a multiple of 16 bytes ({size}-byte elements)"
    if any((st * size) % 16 for st in w.stride() if st != 1):
        return f"w strides {tuple(w.stride())} must be multiples of 16 bytes (except the unit one)"
    if x.data_ptr() % 16 or w.data_ptr() % 16:
        return "data pointers must be 16-byte aligned"
    if x.device.type == "cuda":
        if torch.cuda.get_device_capability(x.device) < (8, 0):
            return "CUDA grouped_mm needs compute capability 8.0 or newer"
        if x.dtype != torch.bfloat16:
            return f"CUDA grouped_mm is documented for bfloat16 only, got {x.dtype}"
    elif x.device.type != "cpu":
        return f"device {x.device.type} is not supported"
    return None


def _validate(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor, op: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
        raise TypeError(f"{op}: x_sorted and w must be tensors, got {type(x)} and {type(w)}")
    if not isinstance(offsets, torch.Tensor):
        raise TypeError(f"{op}: offsets must be an int32 tensor, got {type(offsets)}")
    if x.dim() != 2:
        raise ValueError(f"{op}: x_sorted must be (M, K), got shape {tuple(x.shape)}")
    if w.dim() != 3:
        raise ValueError(f"{op}: w must be (E, K, N), got shape {tuple(w.shape)}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"{op}: w must be (E, K={x.shape[1]}, N) to match x_sorted (M, K), got {tuple(w.shape)}"
        )
    if x.dtype not in _FLOAT_DTYPES or w.dtype != x.dtype:
        raise TypeError(
            f"{op}: x_sorted and w must share a float dtype, got {x.dtype} and {w.dtype}"
        )
    if offsets.dtype != torch.int32 or offsets.shape != (w.shape[0],):
        raise ValueError(
            f"{op}: offsets must be int32 of shape (E,)=({w.shape[0]},) with cumulative block "
            f"ends, got {offsets.dtype} of shape {tuple(offsets.shape)}"
        )
    devices = {x.device, w.device, offsets.device}
    if len(devices) > 1:
        raise ValueError(f"{op}: x_sorted, w and offsets must be on one device, got {devices}")
    # Value checks read the offsets; only where that costs no device->host sync.
    if offsets.device.type == "cpu" and offsets.numel():
        if int(offsets[-1]) != x.shape[0]:
            raise ValueError(
                f"{op}: offsets[-1] must equal the number of rows M={x.shape[0]}, got "
                f"{int(offsets[-1])}"
            )
        if bool((offsets.diff() < 0).any()) or int(offsets[0]) < 0:
            raise ValueError(
                f"{op}: offsets must be non-decreasing and >= 0, got {offsets.tolist()}"
            )


def resolve_grouped_impl(
    impl: str, x: torch.Tensor, w: torch.Tensor, *, op: str = "grouped_mm"
) -> str:
    """Pick the backend for ``impl`` on these inputs: ``"reference"``, ``"torch"`` or ``"triton"``.

    ``"torch"`` and ``"triton"`` raise when they cannot run here; ``"auto"`` falls back (logged
    once per op) as described in the module docstring.
    """
    if impl not in _GROUPED_IMPLS:
        raise ValueError(f"impl: expected one of {_GROUPED_IMPLS}, got {impl!r}")
    if impl == "reference":
        return "reference"
    if impl == "torch":
        reason = torch_grouped_mm_unsupported_reason(x, w)
        if reason is not None:
            raise ValueError(f"{op}: impl='torch' cannot run on these inputs: {reason}")
        return "torch"
    triton_ok = x.dtype in _TRITON_DTYPES
    why = f"dtype {x.dtype} (Triton path takes float32/float16/bfloat16)"
    if impl == "triton":
        return select_impl("triton", (x, w), op=op, supported=triton_ok, why_unsupported=why)
    reason = torch_grouped_mm_unsupported_reason(x, w)
    if reason is None:
        return "torch"
    if x.device.type == "cuda":
        return select_impl("auto", (x, w), op=op, supported=triton_ok, why_unsupported=why)
    if op not in _warned:
        _warned.add(op)
        logger.info("%s: using the reference loop (torch grouped_mm: %s)", op, reason)
    return "reference"


# --- backends: y = x @ w per expert block, and dw ---------------------------------------------


def _ref_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    ends = offsets.tolist()  # host read: this is the readable reference loop
    starts = [0, *ends[:-1]]
    blocks = [x[s:e] @ w[i] for i, (s, e) in enumerate(zip(starts, ends, strict=True))]  # (m_e, N)
    return torch.cat(blocks, dim=0) if blocks else x.new_zeros(0, w.shape[2])


def _ref_dw(x: torch.Tensor, dy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    ends = offsets.tolist()
    starts = [0, *ends[:-1]]
    return torch.stack([x[s:e].T @ dy[s:e] for s, e in zip(starts, ends, strict=True)])  # (E, K, N)


def _torch_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return _torch_gmm()(x.contiguous(), w, offs=offsets)


def _torch_dw(x: torch.Tensor, dy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    # 2-D x 2-D form: the shared M dimension is split by the offsets, giving (E, K, N).
    return _torch_gmm()(x.contiguous().T, dy.contiguous(), offs=offsets)


def _mm(backend: str, x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    if backend == "reference":
        return _ref_mm(x, w, offsets)
    if backend == "torch":
        return _torch_mm(x, w, offsets)
    from ._triton import grouped_mm_triton

    return grouped_mm_triton(x, w, offsets, interpreted=triton_interpreted())[0]


def _dw(backend: str, x: torch.Tensor, dy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    if backend == "reference":
        return _ref_dw(x, dy, offsets)
    if backend == "torch":
        return _torch_dw(x, dy, offsets)
    from ._triton import grouped_mm_dw_triton

    return grouped_mm_dw_triton(
        x, dy.contiguous(), offsets, offsets.shape[0], interpreted=triton_interpreted()
    )


def _swiglu_grad(h: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """d(silu(g)·u)/dh for h = [g | u], in float32 or wider (returned in h.dtype)."""
    acc = torch.promote_types(h.dtype, torch.float32)
    g, u = h.to(acc).chunk(2, dim=-1)  # (M, I) each
    s = torch.sigmoid(g)
    dyf = dy.to(acc)
    dg = dyf * u * s * (1.0 + g * (1.0 - s))
    du = dyf * g * s
    return torch.cat([dg, du], dim=-1).to(h.dtype)  # (M, 2I)


class _GroupedMMFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, offsets, backend, use_swiglu, keep_h):
        if use_swiglu and backend == "triton":
            from ._triton import grouped_mm_triton

            y, h = grouped_mm_triton(
                x, w, offsets, swiglu=True, store_h=keep_h, interpreted=triton_interpreted()
            )
        elif use_swiglu:
            h = _mm(backend, x, w, offsets)  # (M, 2I)
            y = swiglu(h)
        else:
            y, h = _mm(backend, x, w, offsets), None
        ctx.backend = backend
        ctx.use_swiglu = use_swiglu
        ctx.save_for_backward(x, w, offsets, h)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, offsets, h = ctx.saved_tensors
        backend = ctx.backend
        dy = dy.contiguous()
        if ctx.use_swiglu:
            dy = _swiglu_grad(h, dy)  # (M, 2I)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _mm(backend, dy, w.transpose(-2, -1), offsets)  # (2)
        if ctx.needs_input_grad[1]:
            dw = _dw(backend, x, dy, offsets)  # (3)
        return dx, dw, None, None, None, None


def grouped_mm(
    x_sorted: torch.Tensor,
    w: torch.Tensor,
    offsets: torch.Tensor,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Multiply each expert's block of sorted tokens by that expert's weight matrix, eq. (1).

    Args:
        x_sorted: (M, K) tokens sorted by expert (e.g. from :func:`~.permute`), float32/16/bf16
            (float64 on the reference path).
        w: (E, K, N) stacked expert weights, same dtype as ``x_sorted``; a transposed view of
            an (E, N, K) ``nn.Linear``-style stack works too.
        offsets: (E,) int32 cumulative block ends (``offsets[-1] == M``; checked for CPU
            tensors only, since reading CUDA offsets would sync); experts may be empty.
        impl: ``"auto"`` (default), ``"reference"``, ``"torch"`` or ``"triton"``; see the module
            docstring.

    Returns:
        (M, N) in ``x_sorted.dtype``; differentiable with respect to ``x_sorted`` and ``w``.

    Examples:
        >>> import torch
        >>> x = torch.randn(6, 4)
        >>> w = torch.randn(3, 4, 8)
        >>> offsets = torch.tensor([2, 2, 6], dtype=torch.int32)  # expert 1 gets no tokens
        >>> y = grouped_mm(x, w, offsets, impl="reference")
        >>> torch.allclose(y[2:], x[2:] @ w[2])
        True
    """
    _validate(x_sorted, w, offsets, "grouped_mm")
    backend = resolve_grouped_impl(impl, x_sorted, w, op="grouped_mm")
    return _GroupedMMFn.apply(x_sorted, w, offsets, backend, False, False)


def grouped_swiglu(
    x_sorted: torch.Tensor,
    w1: torch.Tensor,
    offsets: torch.Tensor,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Fused SwiGLU fc1 over expert blocks, eq. (4): ``silu(x @ w1[e][:, :I]) * (x @ w1[e][:, I:])``.

    Args:
        x_sorted: (M, D) tokens sorted by expert.
        w1: (E, D, 2I) stacked fc1 weights; columns ``[:I]`` are the gate (through SiLU),
            columns ``[I:]`` the "up" projection.
        offsets: (E,) int32 cumulative block ends, as for :func:`grouped_mm`.
        impl: as for :func:`grouped_mm`; ``"triton"`` applies SiLU·up in the GEMM epilogue and
            writes the (M, 2I) pre-activation only when a gradient is needed.

    Returns:
        (M, I) in ``x_sorted.dtype``.

    Examples:
        >>> import torch
        >>> x, w1 = torch.randn(5, 4), torch.randn(2, 4, 6)
        >>> offsets = torch.tensor([3, 5], dtype=torch.int32)
        >>> grouped_swiglu(x, w1, offsets, impl="reference").shape
        torch.Size([5, 3])
    """
    _validate(x_sorted, w1, offsets, "grouped_swiglu")
    if w1.shape[2] % 2:
        raise ValueError(f"w1: expected (E, D, 2I) with an even last dim, got {tuple(w1.shape)}")
    backend = resolve_grouped_impl(impl, x_sorted, w1, op="grouped_swiglu")
    keep_h = torch.is_grad_enabled() and (x_sorted.requires_grad or w1.requires_grad)
    return _GroupedMMFn.apply(x_sorted, w1, offsets, backend, True, keep_h)

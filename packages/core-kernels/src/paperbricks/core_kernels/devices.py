"""Device, dtype and backend selection, and the lazy Triton import.

Importing any paperbricks module must never import triton or initialise CUDA: both are slow, and
triton reads ``TRITON_INTERPRET`` once, at import. Kernels therefore reach triton through
:func:`import_triton`, called inside the function that launches them, never at module level.
Every public op dispatches with ``impl="auto" | "reference" | "triton"`` through :func:`select_impl`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Literal

import torch

__all__ = [
    "Impl",
    "default_device",
    "has_cuda",
    "has_triton",
    "import_triton",
    "intra_op_threads",
    "resolve_device",
    "resolve_dtype",
    "select_impl",
    "triton_interpreted",
    "triton_runnable",
]

logger = logging.getLogger(__name__)

Impl = Literal["auto", "reference", "triton"]
_IMPLS = ("auto", "reference", "triton")
_warned: set[str] = set()

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def has_cuda() -> bool:
    """True when a CUDA device is usable (does not create a CUDA context)."""
    return torch.cuda.is_available()


def has_triton() -> bool:
    """True when the ``triton`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_runnable(device: torch.device | str | None = None) -> bool:
    """True when a Triton kernel can run on tensors living on ``device``.

    That needs triton installed and either a CUDA tensor or the interpreter (CPU tensors under
    ``TRITON_INTERPRET=1``).
    """
    if not has_triton():
        return False
    dev = torch.device(device) if device is not None else None
    if triton_interpreted():
        return dev is None or dev.type == "cpu"
    return has_cuda() and (dev is None or dev.type == "cuda")


def import_triton() -> ModuleType:
    """Import triton on demand, with a clear error when it is missing."""
    if not has_triton():
        raise ImportError(
            "this operation needs Triton, which is not installed; install it with "
            "`pip install triton` (Linux) or call the op with impl='reference'"
        )
    return importlib.import_module("triton")


def default_device() -> torch.device:
    """``cuda`` when available, else ``cpu``."""
    return torch.device("cuda" if has_cuda() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """Turn ``None``/``"auto"``/a string into a ``torch.device``; errors name the bad value."""
    if device is None or device == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}"
        ) from exc
    if dev.type == "cuda" and not has_cuda():
        raise ValueError(f"device: {device!r} was requested but CUDA is not available here")
    return dev


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept a ``torch.dtype`` or a common name (``"bf16"``, ``"float32"``...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype: expected a torch.dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


def select_impl(
    impl: str,
    tensors: Iterable[torch.Tensor],
    *,
    op: str,
    supported: bool = True,
    why_unsupported: str = "",
) -> Literal["reference", "triton"]:
    """Choose the implementation of ``op`` for these input tensors.

    ``"reference"`` is always honoured. ``"triton"`` raises when triton cannot run on the inputs
    (no CUDA and no interpreter) or when ``supported`` is False. ``"auto"`` picks Triton only for
    CUDA tensors with supported shapes and otherwise falls back to the reference, logging the
    reason once per op.
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl: expected one of {_IMPLS}, got {impl!r}")
    if impl == "reference":
        return "reference"
    devices = {t.device.type for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(devices)}")
    dev = next(iter(devices), "cpu")
    if impl == "triton":
        if not supported:
            raise ValueError(
                f"{op}: impl='triton' does not support these inputs: {why_unsupported}"
            )
        if not triton_runnable(dev):
            raise RuntimeError(
                f"{op}: impl='triton' needs triton and either CUDA tensors or TRITON_INTERPRET=1 "
                f"for CPU tensors (inputs are on {dev!r}, triton installed: {has_triton()}, "
                f"interpreter: {triton_interpreted()})"
            )
        return "triton"
    if dev == "cuda" and supported and has_triton():
        return "triton"
    if op not in _warned:
        _warned.add(op)
        reason = (
            why_unsupported
            if not supported
            else ("inputs are not on CUDA" if dev != "cuda" else "triton is not installed")
        )
        # On CUDA the fallback costs speed the user may expect, so it is a warning there.
        log = logger.warning if dev == "cuda" else logger.info
        log("%s: using the reference implementation (%s)", op, reason)
    return "reference"


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore.

    Tiny models (the reproductions' CPU runs) lose more to splitting each op across threads than
    they gain, most of all on a busy machine; ``with intra_op_threads(1): ...`` keeps them on one.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n: expected a positive int or None, got {n!r}")
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)

"""Benchmarks of RMSNorm (entry point ``core-kernels.norm``).

Every row times a candidate and a named baseline in the same run; the baseline is always torch's
own ``F.rms_norm`` in eager mode (for the residual rows: an eager ``x + r`` followed by it).

- On CUDA (bfloat16, N×D = 4096×4096, 16384×4096, 4096×8192; quick mode the first two): the
  Triton forward, forward+backward and fused residual forward vs eager torch. GB/s counts the
  minimal traffic: forward reads x and writes y (2·N·D elements); the residual forward reads x and
  r and writes y and h (4·N·D); forward+backward adds reading h and dy and writing dx (5·N·D).
- On the CPU the Triton interpreter would only time the interpreter, so there are no Triton rows:
  the torch reference (the path CPU users run) is compared with ``F.rms_norm``, float32, at
  N×D = 2048×1024 (quick) or also 8192×4096 (full). Quick mode takes a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .ops import rms_norm

__all__ = ["run"]

EPS = 1e-6


def _rows(
    n: int,
    d: int,
    dtype: torch.dtype,
    device: torch.device,
    impl: str,
    rep: int,
) -> list[BenchResult]:
    x = torch.randn(n, d, device=device, dtype=dtype)
    r = torch.randn(n, d, device=device, dtype=dtype)
    w = (1 + 0.1 * torch.randn(d, device=device)).to(dtype)
    dy = torch.randn(n, d, device=device, dtype=dtype)
    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    elt = x.element_size()
    dev = device.type
    label = "triton" if impl == "triton" else "torch reference"
    meta = {"N": n, "D": d, "dtype": str(dtype).removeprefix("torch."), "impl": impl}

    def fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], tuple[torch.Tensor, ...]]:
        return lambda: torch.autograd.grad(fn(), (xg, wg), dy)

    cases = [
        (
            f"rms_norm fwd {label} {n}x{d}",
            lambda: rms_norm(x, w, EPS, impl=impl),
            lambda: F.rms_norm(x, (d,), w, EPS),
            "F.rms_norm eager",
            2 * n * d * elt,
        ),
        (
            f"rms_norm fwd+bwd {label} {n}x{d}",
            fwd_bwd(lambda: rms_norm(xg, wg, EPS, impl=impl)),
            fwd_bwd(lambda: F.rms_norm(xg, (d,), wg, EPS)),
            "F.rms_norm eager fwd+bwd",
            5 * n * d * elt,
        ),
        (
            f"rms_norm+residual fwd {label} {n}x{d}",
            lambda: rms_norm(x, w, EPS, residual=r, impl=impl),
            lambda: F.rms_norm(x + r, (d,), w, EPS),
            "x + r, F.rms_norm eager",
            4 * n * d * elt,
        ),
    ]
    return [
        bench(
            fn,
            base,
            name=name,
            baseline_name=base_name,
            bytes_moved=float(nbytes),
            rep=rep,
            device=dev,
            meta=meta,
        )
        for name, fn, base, base_name, nbytes in cases
    ]


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the RMSNorm benchmarks on ``device`` (``"auto"``: CUDA when available).

    Args:
        quick: fewer shapes and repetitions (CPU quick mode takes a few seconds).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`BenchResult` per (operation, shape).
    """
    dev = resolve_device(device)
    out: list[BenchResult] = []
    if dev.type == "cuda":
        shapes = [(4096, 4096), (16384, 4096)] + ([] if quick else [(4096, 8192)])
        for n, d in shapes:
            out += _rows(n, d, torch.bfloat16, dev, "triton", rep=20 if quick else 100)
    else:
        shapes = [(2048, 1024)] + ([] if quick else [(8192, 4096)])
        for n, d in shapes:
            out += _rows(n, d, torch.float32, dev, "reference", rep=10 if quick else 30)
    return out

"""Benchmarks of ``round_to`` (entry point ``core-kernels.float_bits``).

Every row times a candidate and a named baseline in the same run, on float32 input of N elements,
for the formats with a native torch twin (E4M3FN, E5M2, BF16, FP16), with the ``saturate`` setting
that reproduces torch's cast (True for E4M3FN, False otherwise), so both sides compute the same
bits. GB/s counts the minimal traffic: read N float32 and write N float32 (8·N bytes).

- On CUDA (N = 2^26 quick, also 2^28 full): the Triton kernel vs the torch reference (integer
  arithmetic, ``impl="reference"``), and the Triton kernel vs torch's native round trip
  ``x.to(dtype).float()``.
- On the CPU the Triton interpreter would only time the interpreter, so there are no Triton rows:
  the torch reference (the path CPU users run) is compared with the native round trip, at
  N = 2^20 (quick) or also 2^24 (full). Quick mode takes a few seconds.
"""

from __future__ import annotations

import torch

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .formats import BF16, E4M3FN, E5M2, FP16
from .ops import round_to

__all__ = ["run"]

#: The benchmarked formats and their native torch twins.
FORMATS = (
    (E4M3FN, torch.float8_e4m3fn),
    (E5M2, torch.float8_e5m2),
    (BF16, torch.bfloat16),
    (FP16, torch.float16),
)


def _rows(n: int, device: torch.device, rep: int) -> list[BenchResult]:
    g = torch.Generator(device=device).manual_seed(0)
    out: list[BenchResult] = []
    dev = device.type
    for fmt, dtype in FORMATS:
        x = torch.randn(n, generator=g, device=device) * (fmt.max_value / 4)
        sat = fmt.finite  # torch's e4m3fn cast saturates; its IEEE-style casts overflow to Inf
        meta = {"N": n, "format": fmt.name, "saturate": sat, "input": "float32"}
        native = f"torch x.to({str(dtype).removeprefix('torch.')}).float()"
        cases = []
        if dev == "cuda":
            cases += [
                (
                    f"round_to {fmt.name} triton",
                    lambda x=x, fmt=fmt, sat=sat: round_to(x, fmt, saturate=sat, impl="triton"),
                    lambda x=x, fmt=fmt, sat=sat: round_to(x, fmt, saturate=sat, impl="reference"),
                    "torch reference (int64)",
                ),
                (
                    f"round_to {fmt.name} triton",
                    lambda x=x, fmt=fmt, sat=sat: round_to(x, fmt, saturate=sat, impl="triton"),
                    lambda x=x, dtype=dtype: x.to(dtype).float(),
                    native,
                ),
            ]
        else:
            cases.append(
                (
                    f"round_to {fmt.name} reference",
                    lambda x=x, fmt=fmt, sat=sat: round_to(x, fmt, saturate=sat, impl="reference"),
                    lambda x=x, dtype=dtype: x.to(dtype).float(),
                    native,
                )
            )
        for name, fn, base, base_name in cases:
            out.append(
                bench(
                    fn,
                    base,
                    name=name,
                    baseline_name=base_name,
                    bytes_moved=8.0 * n,
                    warmup=3 if dev == "cuda" else 1,
                    rep=rep,
                    device=dev,
                    meta=meta,
                )
            )
    return out


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the ``round_to`` benchmarks on ``device`` (``"auto"``: CUDA when available).

    Args:
        quick: fewer sizes and repetitions (CPU quick mode takes a few seconds).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`BenchResult` per (format, baseline, size).
    """
    dev = resolve_device(device)
    results: list[BenchResult] = []
    if dev.type == "cuda":
        for n in [1 << 26] + ([] if quick else [1 << 28]):
            results += _rows(n, dev, rep=20 if quick else 100)
    else:
        for n in [1 << 20] + ([] if quick else [1 << 24]):
            results += _rows(n, dev, rep=5 if quick else 20)
    return results

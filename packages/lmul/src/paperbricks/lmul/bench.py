"""Benchmarks of L-Mul and L-Matmul (entry point ``lmul.kernels``, ``paperbricks lmul bench``).

Every row times a candidate and a named baseline in the same run. L-Mul is emulated exactly with
integer arithmetic, so against native ``torch.mul``/``torch.matmul`` the ratio is a **cost of
emulation** (below 1), never a speed-up claim; the rows say so in their ``meta``.

- Always (the path CPU users run): the torch integer reference on the CPU, element-wise
  ``lmul`` vs ``torch.mul`` (N = 2^18 quick, also 2^22 full) and chunked ``lmul_matmul`` vs
  ``torch.matmul`` (64³ quick, also 256³ full), with products/s in ``meta``. No Triton rows on
  the CPU: the interpreter would only time the interpreter.
- On CUDA (``device="cuda"``, or ``"auto"`` with a GPU): the Triton L-Matmul vs the chunked torch
  emulation on the same GPU (the issue's bar: ≥ 10× faster, bit-identical; ``meta["bit_identical"]``
  checks it in the same run), 512³ quick, also 1024³ and 2048×1024×1024 full; the Triton
  element-wise kernel vs the torch reference (N = 2^24); and, for honesty, the Triton L-Matmul vs
  cuBLAS ``torch.matmul``.

TFLOP/s count one L-Mul plus one add per product (2·M·N·K). Quick mode on the CPU takes a few
seconds.
"""

from __future__ import annotations

import torch

from paperbricks.core_kernels.devices import resolve_device
from paperbricks.core_kernels.testing import BenchResult, bench

from .ops import lmul, lmul_matmul

__all__ = ["run"]

#: The L-Mul setting benchmarked (the paper's fp8-like one).
K_BITS = 3
_COST_NOTE = "cost of exact emulation vs the native op (ratio < 1 expected), not a speed-up"


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def _cpu_rows(quick: bool) -> list[BenchResult]:
    g = torch.Generator().manual_seed(0)
    out: list[BenchResult] = []
    for n in (1 << 18,) if quick else (1 << 18, 1 << 22):
        x, y = torch.randn(n, generator=g), torch.randn(n, generator=g)
        res = bench(
            lambda x=x, y=y: lmul(x, y, mantissa_bits=K_BITS, impl="reference"),
            lambda x=x, y=y: torch.mul(x, y),
            name=f"lmul reference N={n}",
            baseline_name="torch.mul",
            bytes_moved=12 * n,
            warmup=1,
            rep=5,
            device="cpu",
        )
        out.append(_with_rates(res, n, {"N": n, "note": _COST_NOTE}))
    for m, k, n in ((64, 64, 64),) if quick else ((64, 64, 64), (256, 256, 256)):
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        res = bench(
            lambda a=a, b=b: lmul_matmul(a, b, mantissa_bits=K_BITS, impl="reference"),
            lambda a=a, b=b: torch.matmul(a, b),
            name=f"lmul_matmul reference {m}x{k}x{n}",
            baseline_name="torch.matmul",
            flops=2.0 * m * n * k,
            warmup=1,
            rep=3,
            device="cpu",
        )
        out.append(_with_rates(res, m * n * k, {"shape": (m, k, n), "note": _COST_NOTE}))
    return out


def _with_rates(res: BenchResult, products: int, meta: dict) -> BenchResult:
    """Attach products/s of candidate and baseline and the L-Mul setting to ``meta``."""
    meta = {
        **meta,
        "mantissa_bits": K_BITS,
        "semantics": "bits",
        "products": products,
        "products_per_s": products / (res.ms * 1e-3),
        "baseline_products_per_s": products / (res.baseline_ms * 1e-3),
    }
    return BenchResult(**{**res.as_dict(), "meta": meta})


def _cuda_rows(quick: bool, device: torch.device) -> list[BenchResult]:
    g = torch.Generator(device=device).manual_seed(0)
    out: list[BenchResult] = []
    shapes = (
        [(512, 512, 512)] if quick else [(512, 512, 512), (1024, 1024, 1024), (2048, 1024, 1024)]
    )
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=g, device=device)
        b = torch.randn(k, n, generator=g, device=device)
        kw = {"mantissa_bits": K_BITS}
        tri = lmul_matmul(a, b, impl="triton", **kw)
        ref = lmul_matmul(a, b, impl="reference", chunk_size=1 << 24, **kw)
        meta = {"shape": (m, k, n), "bit_identical": _same_bits(tri, ref)}
        res = bench(
            lambda a=a, b=b, kw=kw: lmul_matmul(a, b, impl="triton", **kw),
            lambda a=a, b=b, kw=kw: lmul_matmul(a, b, impl="reference", chunk_size=1 << 24, **kw),
            name=f"lmul_matmul triton {m}x{k}x{n}",
            baseline_name="chunked torch emulation (same GPU)",
            flops=2.0 * m * n * k,
            warmup=1,
            rep=3 if quick else 5,
            device="cuda",
        )
        out.append(_with_rates(res, m * n * k, meta))
        res = bench(
            lambda a=a, b=b, kw=kw: lmul_matmul(a, b, impl="triton", **kw),
            lambda a=a, b=b: torch.matmul(a, b),
            name=f"lmul_matmul triton {m}x{k}x{n}",
            baseline_name="cuBLAS torch.matmul (fp32)",
            flops=2.0 * m * n * k,
            warmup=2,
            rep=10,
            device="cuda",
        )
        out.append(_with_rates(res, m * n * k, {"shape": (m, k, n), "note": _COST_NOTE}))
    n = 1 << 24
    x = torch.randn(n, generator=g, device=device)
    y = torch.randn(n, generator=g, device=device)
    tri = lmul(x, y, mantissa_bits=K_BITS, impl="triton")
    ref = lmul(x, y, mantissa_bits=K_BITS, impl="reference")
    res = bench(
        lambda: lmul(x, y, mantissa_bits=K_BITS, impl="triton"),
        lambda: lmul(x, y, mantissa_bits=K_BITS, impl="reference"),
        name=f"lmul triton N={n}",
        baseline_name="torch reference (int64, same GPU)",
        bytes_moved=12 * n,
        device="cuda",
    )
    out.append(_with_rates(res, n, {"N": n, "bit_identical": _same_bits(tri, ref)}))
    return out


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the L-Mul benchmarks; see the module docstring for the rows.

    Args:
        quick: small sizes only (a few seconds on the CPU); ``False`` adds larger ones.
        device: ``"auto"`` (CUDA rows when a GPU is present), ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`BenchResult` per row; ``meta`` holds products/s, the shape, the L-Mul setting
        and, for Triton rows, whether the result was bit-identical to the torch reference.

    Examples:
        >>> rows = run(quick=True, device="cpu")  # doctest: +SKIP
        >>> print("\\n".join(r.row() for r in rows))  # doctest: +SKIP
    """
    dev = resolve_device(device)
    rows = _cpu_rows(quick)
    if dev.type == "cuda":
        rows += _cuda_rows(quick, dev)
    return rows

"""Benchmarks of the Hadamard transforms (entry point ``core-kernels.hadamard``).

Rows (each times the candidate and a named baseline in the same run):

- on CUDA (fp16, 2^26 elements per call, as in ``fast-hadamard-transform``'s README): the Triton
  FWHT vs ``x.clone()`` (memcpy-like, same bytes: the speed bar is the ratio to memcpy), vs the
  torch butterfly, and vs a dense ``x @ H.T`` for n ≤ 4096; ``had_transform`` for the model widths
  11008 = 344·32 and 14336 = 28·512 vs ``x.clone()`` and vs a dense ``x @ H.T``.
- on the CPU the Triton interpreter would only measure the interpreter, so Triton rows are
  skipped: the torch butterfly is compared with a dense ``x @ H.T`` and with ``x.clone()``, and
  the reference ``had_transform`` (n = 11008) with ``x.clone()``. Quick mode finishes in a few
  seconds on a 2-core machine.

GB/s counts one read and one write of x.
"""

from __future__ import annotations

import torch

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .constructions import hadamard_matrix, hadamard_size_plan
from .ops import fwht, had_transform

__all__ = ["run"]


def _bytes(x: torch.Tensor) -> float:
    return 2.0 * x.numel() * x.element_size()


def _run_cpu(quick: bool) -> list[BenchResult]:
    dev = "cpu"
    total = 2**18 if quick else 2**22  # elements per call
    rep = 10 if quick else 20
    out: list[BenchResult] = []
    for n in (256, 1024, 4096):
        x = torch.randn(max(1, total // n), n)  # (M, n)
        h = hadamard_matrix(n, dtype=torch.float32)
        meta = {"n": n, "rows": x.shape[0], "dtype": "float32"}
        out.append(
            bench(
                lambda x=x: fwht(x, impl="reference"),
                lambda x=x, h=h: x @ h.T,
                name=f"fwht torch butterfly n={n}",
                baseline_name="dense x@H.T",
                bytes_moved=_bytes(x),
                rep=rep,
                device=dev,
                meta=meta,
            )
        )
        out.append(
            bench(
                lambda x=x: fwht(x, impl="reference"),
                lambda x=x: x.clone(),
                name=f"fwht torch butterfly n={n}",
                baseline_name="x.clone() memcpy",
                bytes_moved=_bytes(x),
                rep=rep,
                device=dev,
                meta=meta,
            )
        )
    n = 11008
    x = torch.randn(max(1, total // n), n)
    out.append(
        bench(
            lambda: had_transform(x, impl="reference"),
            lambda: x.clone(),
            name=f"had_transform ref n={n} (K={hadamard_size_plan(n)[0]})",
            baseline_name="x.clone() memcpy",
            bytes_moved=_bytes(x),
            rep=rep,
            device=dev,
            meta={"n": n, "rows": x.shape[0], "dtype": "float32"},
        )
    )
    return out


def _run_cuda(quick: bool, device: torch.device) -> list[BenchResult]:
    dtype = torch.float16
    total = 2**24 if quick else 2**26
    rep = 20 if quick else 100
    out: list[BenchResult] = []
    sizes = (
        (256, 1024, 4096, 32768) if quick else (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    )
    for n in sizes:
        x = torch.randn(total // n, n, device=device, dtype=dtype)  # (M, n)
        meta = {"n": n, "rows": x.shape[0], "dtype": "float16"}

        def tri(x=x):
            return fwht(x, impl="triton")

        kw = {"bytes_moved": _bytes(x), "rep": rep, "device": "cuda", "meta": meta}
        out.append(
            bench(
                tri,
                lambda x=x: x.clone(),
                name=f"fwht triton n={n}",
                baseline_name="x.clone() memcpy",
                **kw,
            )
        )
        out.append(
            bench(
                tri,
                lambda x=x: fwht(x, impl="reference"),
                name=f"fwht triton n={n}",
                baseline_name="torch butterfly",
                **kw,
            )
        )
        if n <= 4096:
            h = hadamard_matrix(n, dtype=dtype, device=device)
            out.append(
                bench(
                    tri,
                    lambda x=x, h=h: x @ h.T,
                    name=f"fwht triton n={n}",
                    baseline_name="dense x@H.T",
                    **kw,
                )
            )
    for n in (11008, 14336):
        x = torch.randn(total // n, n, device=device, dtype=dtype)
        k = hadamard_size_plan(n)[0]
        meta = {"n": n, "K": k, "rows": x.shape[0], "dtype": "float16"}
        kw = {"bytes_moved": _bytes(x), "rep": rep, "device": "cuda", "meta": meta}

        def had(x=x):
            return had_transform(x, impl="triton")

        out.append(
            bench(
                had,
                lambda x=x: x.clone(),
                name=f"had_transform n={n} K={k}",
                baseline_name="x.clone() memcpy",
                **kw,
            )
        )
        h = hadamard_matrix(n, dtype=dtype, device=device)
        out.append(
            bench(
                had,
                lambda x=x, h=h: x @ h.T,
                name=f"had_transform n={n} K={k}",
                baseline_name="dense x@H.T",
                **kw,
            )
        )
        del h
    return out


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the Hadamard benchmarks; see the module docstring for the rows.

    Args:
        quick: smaller problems and fewer repetitions (CPU quick mode: a few seconds).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`~paperbricks.core_kernels.testing.BenchResult` per row.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return _run_cuda(quick, dev)
    return _run_cpu(quick)

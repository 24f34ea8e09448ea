"""Grouped-GEMM benchmark: per-expert backends against the loop and against one dense matmul.

For each size (E experts, N tokens × top-k copies, fc1 shape D → I) the token copies are routed
to experts at random (uneven counts) and every available backend of :func:`grouped_mm` is timed
against two named baselines in the same run:

- ``loop``: the per-expert loop (``impl="reference"``), what most MoE code does;
- ``dense``: one ``(N·k, D) @ (D, I)`` matmul, the same FLOPs with no grouping (the ceiling).

Rows report the candidate's TFLOP/s (``2·N·k·D·I`` FLOPs per call) and the speed-up.

- ``device="cuda"``: bfloat16, E ∈ {8, 64}, N ∈ {4096, 16384} (quick: N = 4096 only), top-8,
  D = 2048, I ∈ {768, 1408}; backends Triton and ``torch`` grouped_mm (when legal).
- CPU: float32 at small sizes (E ∈ {8, 64}, N = 256, top-2, D = 256, I = 128); the ``torch``
  grouped_mm CPU kernel is timed when it runs; the Triton interpreter is *not* timed (its times
  mean nothing), so CPU rows are ``torch`` vs loop, ``torch`` vs dense and loop vs dense.
"""

from __future__ import annotations

import logging

import torch

from ..devices import has_triton, resolve_device
from ..testing import BenchResult, bench
from .grouped_gemm import grouped_mm, torch_grouped_mm_unsupported_reason

__all__ = ["run"]

logger = logging.getLogger(__name__)


def _case(
    e: int, n: int, k: int, d: int, i: int, device: torch.device, dtype: torch.dtype, seed: int
):
    g = torch.Generator(device="cpu").manual_seed(seed)
    m = n * k
    expert = torch.randint(0, e, (m,), generator=g)
    counts = torch.bincount(expert, minlength=e)
    offsets = counts.cumsum(0).to(torch.int32).to(device)
    x = torch.randn(m, d, generator=g).to(device=device, dtype=dtype)
    w = (torch.randn(e, d, i, generator=g) / d**0.5).to(device=device, dtype=dtype)
    w_dense = w[0].clone()
    return x, w, offsets, w_dense


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time the grouped-GEMM backends; see the module docstring for sizes and baselines.

    Args:
        quick: fewer sizes and repetitions (default True).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`~paperbricks.core_kernels.testing.BenchResult` per (size, candidate, baseline).
    """
    dev = resolve_device(device)
    on_cuda = dev.type == "cuda"
    if on_cuda:
        dtype = torch.bfloat16
        sizes = [
            (e, n, 8, 2048, i)
            for e in (8, 64)
            for n in ((4096,) if quick else (4096, 16384))
            for i in (768, 1408)
        ]
        warmup, rep = (3, 10) if quick else (10, 50)
    else:
        dtype = torch.float32
        sizes = [(8, 256, 2, 256, 128), (64, 256, 2, 256, 128)]
        warmup, rep = (2, 10) if quick else (3, 30)
    results: list[BenchResult] = []
    for seed, (e, n, k, d, i) in enumerate(sizes):
        x, w, offsets, w_dense = _case(e, n, k, d, i, dev, dtype, seed)
        flops = 2.0 * n * k * d * i
        meta = {"E": e, "N": n, "k": k, "D": d, "I": i, "dtype": str(dtype).removeprefix("torch.")}
        tag = f"E={e} N={n}x{k} D={d} I={i}"

        def loop(x=x, w=w, offsets=offsets):
            return grouped_mm(x, w, offsets, impl="reference")

        def dense(x=x, w_dense=w_dense):
            return x @ w_dense

        candidates = []
        if torch_grouped_mm_unsupported_reason(x, w) is None:
            candidates.append("torch")
        else:
            logger.info(
                "moe bench: torch grouped_mm skipped: %s", torch_grouped_mm_unsupported_reason(x, w)
            )
        if on_cuda and has_triton():
            candidates.append("triton")
        with torch.no_grad():
            for impl in candidates:

                def cand(x=x, w=w, offsets=offsets, impl=impl):
                    return grouped_mm(x, w, offsets, impl=impl)

                for base_name, base in (("loop", loop), ("dense matmul", dense)):
                    results.append(
                        bench(
                            cand,
                            base,
                            name=f"grouped_mm[{impl}] {tag}",
                            baseline_name=base_name,
                            flops=flops,
                            warmup=warmup,
                            rep=rep,
                            device=dev.type,
                            meta={**meta, "impl": impl},
                        )
                    )
            results.append(
                bench(
                    loop,
                    dense,
                    name=f"grouped_mm[loop] {tag}",
                    baseline_name="dense matmul",
                    flops=flops,
                    warmup=warmup,
                    rep=rep,
                    device=dev.type,
                    meta={**meta, "impl": "reference"},
                )
            )
    return results


if __name__ == "__main__":  # pragma: no cover - manual runs
    for r in run(quick=True):
        print(r.row())

"""Benchmark ``pixtral.packed-attention``: packed variable-length attention vs dense-mask SDPA.

Pixtral packs a batch's images into one sequence with a block-diagonal mask (paper §2.1). The
obvious implementation (HF eager/SDPA) builds a dense (N, N) additive mask over all N patches; the
candidate here is core-kernels :func:`~paperbricks.core_kernels.attention.varlen_attention` with
``cu_seqlens`` (no N×N tensor anywhere). Both are timed in the same run with
:func:`~paperbricks.core_kernels.testing.bench`, and the peak memory of one call is recorded in
each row's ``meta``:

- **CUDA** (``device="cuda"``): 8 mixed-size images up to 1024² (64×64 patches), 16 heads × 64,
  bf16, the Triton varlen kernel (``impl="auto"``) vs SDPA with a dense boolean block mask;
  peak memory from ``torch.cuda.max_memory_allocated`` (measured).
- **CPU** (quick): 4 small images (≤ 12×12 patches), 4 heads × 32, float32; the Triton kernel
  would only run in the interpreter (meaningless timings), so the candidate is varlen's torch path
  (one SDPA call per image). CPU peak memory is the **analytic** size of the extra tensors each
  path materialises (the dense path's N² mask and H·N² scores vs the per-image H·n_i² scores):
  ``tracemalloc`` does not see torch's CPU allocator, so it would report ~0 for both.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from paperbricks.core_kernels.attention import segment_ids, varlen_attention
from paperbricks.core_kernels.devices import resolve_device
from paperbricks.core_kernels.testing import BenchResult, bench

__all__ = ["image_grids", "run"]

logger = logging.getLogger(__name__)


def image_grids(quick: bool, cuda: bool) -> list[tuple[int, int]]:
    """Patch grids (n_h, n_w) of the benchmarked batch of mixed-size images."""
    if cuda:
        return [(64, 64), (48, 64), (64, 32), (32, 32), (16, 64), (40, 24), (64, 48), (8, 8)]
    if quick:
        return [(12, 12), (6, 10), (9, 4), (3, 12)]
    return [(32, 32), (24, 32), (32, 16), (16, 16), (8, 32), (20, 12)]


def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
    seg = segment_ids(cu, q.shape[2])
    mask = seg[:, None] == seg[None, :]  # (N, N) block-diagonal
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _peak_cuda(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time packed varlen attention against dense-mask SDPA over one batch of mixed-size images.

    Args:
        quick: small sizes and few repetitions (CPU: < 10 s). Default True.
        device: "auto" (CUDA when available), "cuda" or "cpu".

    Returns:
        One :class:`BenchResult`; ``meta`` holds the grids, N, heads, dtype, attention FLOPs of
        both paths and ``peak_bytes`` / ``baseline_peak_bytes`` (``peak_kind`` says measured or
        analytic).

    Examples:
        >>> [r.row() for r in run(quick=True, device="cpu")]  # doctest: +SKIP
    """
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    grids = image_grids(quick, cuda)
    h, d = (16, 64) if cuda else (4, 32)
    dtype = torch.bfloat16 if cuda else torch.float32
    lens = [a * b for a, b in grids]
    n = sum(lens)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=dtype, generator=g) for _ in range(3))
    esize = q.element_size()
    flops_packed = 4.0 * h * d * sum(x * x for x in lens)
    flops_dense = 4.0 * h * d * n * n

    def packed() -> torch.Tensor:
        return varlen_attention(q, k, v, cu, max_seqlen=max(lens))

    def dense() -> torch.Tensor:
        return _dense(q, k, v, cu)

    with torch.no_grad():
        out_p, out_d = packed(), dense()
        max_diff = (out_p.float() - out_d.float()).abs().max().item()
        if cuda:
            peak, base_peak, kind = _peak_cuda(packed), _peak_cuda(dense), "measured"
        else:
            peak = h * sum(x * x for x in lens) * 4 + out_p.numel() * esize
            base_peak = n * n + h * n * n * 4 + out_d.numel() * esize
            kind = "analytic"
        res = bench(
            packed,
            dense,
            name=f"varlen attention {len(grids)} imgs N={n}",
            baseline_name="sdpa dense block mask",
            flops=flops_packed,
            warmup=2 if quick else 5,
            rep=5 if quick else 20,
            device=dev.type,
            meta={
                "grids": grids,
                "N": n,
                "heads": h,
                "head_dim": d,
                "dtype": str(dtype),
                "flops_packed": flops_packed,
                "flops_dense": flops_dense,
                "peak_bytes": int(peak),
                "baseline_peak_bytes": int(base_peak),
                "peak_kind": kind,
                "max_abs_diff": max_diff,
            },
        )
    logger.info("%s  peak %d vs %d bytes (%s)", res.row(), peak, base_peak, kind)
    return [res]

"""Attention benchmark: the Triton FA2 kernels against torch SDPA and the naive reference.

Registered as ``core-kernels.attention`` (entry-point group ``paperbricks.benchmarks``).

On CUDA (bf16, head dims 64 and 128, B·T = 16k tokens and H·D = 2048 as in the FlashAttention-2
paper's sweep, causal and not):

- ``triton fwd`` vs ``sdpa[flash] fwd``: torch SDPA restricted to its FlashAttention backend;
- ``triton fwd+bwd`` vs ``sdpa[flash] fwd+bwd``;
- ``triton fwd`` vs ``reference fwd`` (the einsum reference, float32 softmax) for T <= 2048,
  where its (B, H, T, T) score matrix still fits comfortably;
- ``triton varlen fwd`` vs ``sdpa dense block-diag mask fwd``: 8 packed sequences of unequal
  length, against SDPA with a dense boolean (N, N) mask (efficient backend).

TFLOP/s use 4·B·H·T·S·D for the forward, ×2.5 for forward+backward, halved when causal.

On CPU the Triton kernels would run in the interpreter, whose timings mean nothing, so quick
mode reports only torch paths at a small size: the reference vs SDPA (math backend) forward, and
per-segment SDPA (``sdpa_attention`` with ``cu_seqlens``) vs one SDPA call with a dense
block-diagonal mask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .ops import attention
from .reference import attention_reference, sdpa_attention, segment_ids

__all__ = ["run"]

logger = logging.getLogger(__name__)


def _flops(b: int, h: int, t: int, s: int, d: int, causal: bool, backward: bool) -> float:
    f = 4.0 * b * h * t * s * d
    if backward:
        f *= 2.5
    return f / 2 if causal else f


def _sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _fwd_bwd(
    fn: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        o = fn(q, k, v)
        torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
        return o

    return step


def _packed(n_seq: int, total: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    cuts = torch.randperm(total - 1, generator=g)[: n_seq - 1] + 1
    bounds = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([total])])
    return bounds.to(device=device, dtype=torch.int32)


def _dense_block_mask(cu: torch.Tensor, n: int) -> torch.Tensor:
    seg = segment_ids(cu, n)
    return seg[:, None] == seg[None, :]  # (N, N)


def _bench_dense(
    b: int,
    h: int,
    t: int,
    d: int,
    causal: bool,
    dev: torch.device,
    dtype: torch.dtype = torch.bfloat16,
) -> list[BenchResult]:
    """Triton vs SDPA's flash backend (fwd, fwd+bwd) and vs the reference (fwd, T <= 2048)."""
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (
        torch.randn(b, h, t, d, device=dev, dtype=dtype, generator=g).requires_grad_()
        for _ in range(3)
    )
    meta = {"B": b, "H": h, "T": t, "D": d, "causal": causal, "dtype": str(dtype)}
    tag = f"T={t} D={d}{' causal' if causal else ''}"
    fwd_flops = _flops(b, h, t, t, d, causal, False)

    def tri(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
        return attention(q_, k_, v_, causal=causal, impl="triton")

    def flash(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
        return _sdpa_flash(q_, k_, v_, causal)

    results = []
    with torch.no_grad():
        results.append(
            bench(
                lambda: tri(q, k, v),
                lambda: flash(q, k, v),
                name=f"triton fwd {tag}",
                baseline_name="sdpa[flash] fwd",
                flops=fwd_flops,
                device=dev.type,
                meta=meta,
            )
        )
        if t <= 2048:
            results.append(
                bench(
                    lambda: tri(q, k, v),
                    lambda: attention_reference(q, k, v, causal=causal),
                    name=f"triton fwd {tag}",
                    baseline_name="reference fwd",
                    flops=fwd_flops,
                    device=dev.type,
                    meta=meta,
                )
            )
    results.append(
        bench(
            _fwd_bwd(tri, q, k, v),
            _fwd_bwd(flash, q, k, v),
            name=f"triton fwd+bwd {tag}",
            baseline_name="sdpa[flash] fwd+bwd",
            flops=_flops(b, h, t, t, d, causal, True),
            device=dev.type,
            meta=meta,
        )
    )
    return results


def _run_cuda(quick: bool) -> list[BenchResult]:
    dev = torch.device("cuda")
    lengths = (1024, 4096) if quick else (1024, 2048, 4096, 8192)
    results: list[BenchResult] = []
    for d in (64, 128):
        for t in lengths:
            for causal in (False, True):
                results += _bench_dense(max(1, 16384 // t), 2048 // d, t, d, causal, dev)
    results.append(_bench_varlen(8192 if quick else 16384, 16, 128, dev))
    return results


def _bench_varlen(
    n: int, h: int, d: int, dev: torch.device, dtype: torch.dtype = torch.bfloat16
) -> BenchResult:
    """Packed sequences: the Triton kernel against SDPA with a dense block-diagonal mask."""
    cu = _packed(8, n, dev)
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=dtype, generator=g) for _ in range(3))
    mask = _dense_block_mask(cu, n)
    lens = (cu[1:] - cu[:-1]).double()
    flops = float(4.0 * h * d * (lens**2).sum())
    with torch.no_grad():
        return bench(
            lambda: attention(q, k, v, cu_seqlens=cu, impl="triton"),
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            name=f"triton varlen fwd N={n} D={d} 8 seqs",
            baseline_name="sdpa dense block-diag mask fwd",
            flops=flops,
            device=dev.type,
            meta={"N": n, "H": h, "D": d, "n_seq": 8, "dtype": str(dtype)},
        )


def _run_cpu(quick: bool) -> list[BenchResult]:
    b, h, t, d = (1, 8, 512, 64) if quick else (2, 8, 1024, 64)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for _ in range(3))
    results = []
    with torch.no_grad():
        for causal in (False, True):
            results.append(
                bench(
                    lambda c=causal: attention_reference(q, k, v, causal=c),
                    lambda c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c),
                    name=f"reference fwd T={t} D={d}{' causal' if causal else ''}",
                    baseline_name="sdpa (cpu) fwd",
                    flops=_flops(b, h, t, t, d, causal, False),
                    device="cpu",
                    meta={"B": b, "H": h, "T": t, "D": d, "causal": causal, "dtype": "fp32"},
                )
            )
        n = 2048 if quick else 4096
        cu = _packed(8, n, torch.device("cpu"))
        qp, kp, vp = (torch.randn(1, h, n, d, generator=g) for _ in range(3))
        mask = _dense_block_mask(cu, n)
        lens = (cu[1:] - cu[:-1]).double()
        results.append(
            bench(
                lambda: sdpa_attention(qp, kp, vp, cu_seqlens=cu),
                lambda: F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask),
                name=f"per-segment sdpa N={n} D={d} 8 seqs",
                baseline_name="sdpa dense block-diag mask",
                flops=float(4.0 * h * d * (lens**2).sum()),
                device="cpu",
                meta={"N": n, "H": h, "D": d, "n_seq": 8, "dtype": "fp32"},
            )
        )
    return results


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the attention benchmarks; see the module docstring for what is compared.

    Args:
        quick: fewer and smaller shapes (CPU: 15–25 s on a shared 2-core machine; CUDA: T in {1k, 4k}).
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.

    Returns:
        One :class:`~paperbricks.core_kernels.testing.BenchResult` per row.
    """
    dev = resolve_device(device)
    results = _run_cuda(quick) if dev.type == "cuda" else _run_cpu(quick)
    for r in results:
        logger.info("%s", r.row())
    return results

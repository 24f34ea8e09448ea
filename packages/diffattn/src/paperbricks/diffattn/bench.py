"""Benchmark of the fused differential attention kernel (registered as ``diffattn.fused``).

What is compared, in the same run and on the same inputs (bottom-right causal, GQA off, λ one per
layer, RMSNorm with gain and the (1 − λ_init) scale, i.e. the paper's full head epilogue):

**CUDA** (bf16; component head dim D ∈ {64, 128} with Dv = 2D; T ∈ {1k, 2k, 4k, 8k}, quick:
{1k, 4k}; B·T = 16k tokens and H·2D = 2048, a 2048-wide model):

- ``fused fwd`` / ``fused fwd+bwd`` (``impl="triton"``) against **the official flashdiff_1
  semantics**: two torch SDPA calls sharing the 2D-wide V, ``O1 − λ·O2`` and a separate RMSNorm
  (``diff_attention_sdpa(..., attn_impl="reference")``: torch SDPA picks its own backend, and
  the norm is plain torch ops as in the official ``RMSNorm``);
- for D = 64 (Dv = 128, within core-kernels' FA2 limits) also against two core-kernels Triton FA2
  calls plus core-kernels' fused RMSNorm, so the gain of the single V pass and the fused epilogue
  is measured against the same kernel family.

TFLOP/s count both maps: ``B·H·T·S·(4D + 4Dv)`` for the forward (two QKᵀ, two PV), ×2.5 with the
backward, halved when causal.

**CPU**: the Triton kernel would run in the interpreter, whose timings mean nothing, so no Triton
row is timed here; quick mode compares the flashdiff_1 path (two SDPA calls + norm) against the
float32 reference that materialises both (T, S) maps, forward and forward+backward, at T = 256
(1024 when not quick), fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from paperbricks.core_kernels.devices import resolve_device
from paperbricks.core_kernels.testing import BenchResult, bench

from .ops import diff_attention
from .reference import diff_attention_reference, diff_attention_sdpa

__all__ = ["run"]

logger = logging.getLogger(__name__)

_LAMBDA_INIT = 0.2


def _flops(b: int, h: int, t: int, s: int, d: int, dv: int, causal: bool, backward: bool) -> float:
    f = 4.0 * b * h * t * s * (d + dv)
    if backward:
        f *= 2.5
    return f / 2 if causal else f


def _inputs(
    b: int, h: int, t: int, d: int, dv: int, dev: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=dev, dtype=dtype, generator=g).requires_grad_()

    q1, q2, k1, k2 = rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d)
    v = rand(b, h, t, dv)
    lam = torch.tensor(0.5, device=dev, requires_grad=True)
    w = torch.ones(dv, device=dev, dtype=dtype, requires_grad=True)
    return q1, q2, k1, k2, v, lam, w


Op = Callable[..., torch.Tensor]


def _fwd(fn: Op, xs: tuple[torch.Tensor, ...]) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        with torch.no_grad():
            return fn(*xs)

    return step


def _fwd_bwd(fn: Op, xs: tuple[torch.Tensor, ...]) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        y = fn(*xs)
        torch.autograd.grad(y, xs, torch.ones_like(y))
        return y

    return step


def _fused(causal: bool) -> Op:
    def fn(q1, q2, k1, k2, v, lam, w):
        return diff_attention(q1, q2, k1, k2, v, lam, causal=causal, norm_weight=w,
                              lambda_init=_LAMBDA_INIT, impl="triton")  # fmt: skip

    return fn


def _two_calls(causal: bool, attn_impl: str) -> Op:
    def fn(q1, q2, k1, k2, v, lam, w):
        return diff_attention_sdpa(q1, q2, k1, k2, v, lam, causal=causal, normalize=True,
                                   norm_weight=w, lambda_init=_LAMBDA_INIT,
                                   attn_impl=attn_impl)  # fmt: skip

    return fn


def _reference(causal: bool) -> Op:
    def fn(q1, q2, k1, k2, v, lam, w):
        return diff_attention_reference(q1, q2, k1, k2, v, lam, causal=causal, normalize=True,
                                        norm_weight=w, lambda_init=_LAMBDA_INIT)  # fmt: skip

    return fn


def _pair(
    cand: Op, base: Op, xs: tuple[torch.Tensor, ...], *, name: str, base_name: str,
    flops: tuple[float, float], device: str, meta: dict, rep: int,
) -> list[BenchResult]:  # fmt: skip
    """Forward and forward+backward rows of ``cand`` against ``base``."""
    fwd = bench(_fwd(cand, xs), _fwd(base, xs), name=f"{name} fwd", baseline_name=f"{base_name} fwd",
                flops=flops[0], device=device, meta=meta, rep=rep)  # fmt: skip
    fb = bench(_fwd_bwd(cand, xs), _fwd_bwd(base, xs), name=f"{name} fwd+bwd",
               baseline_name=f"{base_name} fwd+bwd", flops=flops[1], device=device, meta=meta,
               rep=rep)  # fmt: skip
    return [fwd, fb]


def _run_cuda(quick: bool) -> list[BenchResult]:
    dev = torch.device("cuda")
    lengths = (1024, 4096) if quick else (1024, 2048, 4096, 8192)
    causal = True
    results: list[BenchResult] = []
    for d in (64, 128):
        dv = 2 * d
        h = 2048 // dv
        for t in lengths:
            b = max(1, 16384 // t)
            xs = _inputs(b, h, t, d, dv, dev, torch.bfloat16)
            meta = {"B": b, "H": h, "T": t, "D": d, "Dv": dv, "causal": causal, "dtype": "bf16"}
            flops = tuple(_flops(b, h, t, t, d, dv, causal, bw) for bw in (False, True))
            tag = f"T={t} D={d} Dv={dv}"
            results += _pair(_fused(causal), _two_calls(causal, "reference"), xs,
                             name=f"fused {tag}", base_name="2×sdpa+rmsnorm (flashdiff_1)",
                             flops=flops, device="cuda", meta=meta, rep=20)  # fmt: skip
            if dv <= 128:
                results += _pair(_fused(causal), _two_calls(causal, "triton"), xs,
                                 name=f"fused {tag}", base_name="2×core FA2+fused rmsnorm",
                                 flops=flops, device="cuda", meta=meta, rep=20)  # fmt: skip
            del xs
    return results


def _run_cpu(quick: bool) -> list[BenchResult]:
    b, h, t, d = (1, 4, 256, 32) if quick else (1, 8, 1024, 32)
    dv = 2 * d
    xs = _inputs(b, h, t, d, dv, torch.device("cpu"), torch.float32)
    results: list[BenchResult] = []
    for causal in (True, False):
        meta = {"B": b, "H": h, "T": t, "D": d, "Dv": dv, "causal": causal, "dtype": "fp32"}
        flops = tuple(_flops(b, h, t, t, d, dv, causal, bw) for bw in (False, True))
        tag = f"T={t} D={d} Dv={dv}{' causal' if causal else ''}"
        results += _pair(_two_calls(causal, "reference"), _reference(causal), xs,
                         name=f"2×sdpa+rmsnorm {tag}", base_name="reference (2 maps)",
                         flops=flops, device="cpu", meta=meta, rep=5)  # fmt: skip
    return results


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the differential attention benchmarks; the module docstring says what is compared.

    Args:
        quick: fewer and smaller shapes (CPU: about 10 s on a shared 2-core machine; CUDA:
            T ∈ {1k, 4k} instead of {1k, 2k, 4k, 8k}).
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.

    Returns:
        One :class:`~paperbricks.core_kernels.testing.BenchResult` per row (forward and
        forward+backward for each shape and baseline).

    Examples:
        >>> from paperbricks.diffattn.bench import run
        >>> rows = run(quick=True, device="cpu")  # doctest: +SKIP
        >>> print(rows[0].row())  # doctest: +SKIP
    """
    dev = resolve_device(device)
    results = _run_cuda(quick) if dev.type == "cuda" else _run_cpu(quick)
    for r in results:
        logger.info("%s", r.row())
    return results

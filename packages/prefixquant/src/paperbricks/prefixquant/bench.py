"""Benchmark ``prefixquant.w8a8``: static per-tensor W8A8 (PrefixQuant) vs fp matmul vs dynamic W8A8.

One prefill-shaped step of a decoder layer's input side, ``y = Linear(RMSNorm(x))`` with
``x`` ``(M, K)`` tokens × hidden and the linear ``K -> N`` (q/k/v-sized ``N = K`` and
gate/up-sized ``N = 11008`` for ``K = 4096``), timed three ways in the same run with
core-kernels :func:`~paperbricks.core_kernels.testing.bench`:

- **static W8A8** (the candidate, PrefixQuant's path): :class:`~.real.RealQuantRMSNorm` (fused
  RMSNorm + static per-tensor int8 quant) then :class:`~.real.W8A8Linear` (int8 × int8 -> int32
  GEMM with the ``s_x · s_w`` epilogue);
- **fp matmul** (baseline 1): ``F.rms_norm`` + ``F.linear`` in fp16 on CUDA (cuBLAS), fp32 on CPU;
- **dynamic W8A8** (baseline 2, QuaRot-style): ``F.rms_norm``, per-token absmax + quantization,
  then the same int8 GEMM with per-token scales.

Devices and sizes:

- **CUDA** (``device="cuda"``): ``M`` = 2048 (quick) or 2048 and 8192 (``quick=False``),
  ``K`` = 4096, ``N`` = 4096 and 11008, fp16 activations; the static path runs the Triton
  fused-norm kernel and the Triton int8 GEMM (``impl="auto"``), the dynamic path the same Triton
  GEMM. A third row times the static path with the GEMM on cuBLAS int8 (``torch._int_mm``, via
  ``impl="reference"``) against fp16. Goal from the issue: ≥ 1.5× over fp16 cuBLAS.
- **CPU**: the Triton interpreter would only measure Python, so there are no Triton rows: the
  candidate is the torch reference path (``rms_norm_quant`` reference + ``torch._int_mm``,
  oneDNN) against fp32 ``F.linear``, at ``M`` = 256 × ``K`` = 512 -> ``N`` = 512 and 1376 (quick,
  a few seconds) or ``M`` = 1024 × 1024 -> 1024 and 2752.

Each row's ``meta`` records the shape, dtype, implementation and the relative RMS error of the
candidate against the fp output (a sanity check that the timed path computes the layer).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from paperbricks.core_kernels.devices import resolve_device
from paperbricks.core_kernels.testing import BenchResult, bench

from .real import RealQuantRMSNorm, W8A8Linear

__all__ = ["bench_shapes", "run"]

logger = logging.getLogger(__name__)


def bench_shapes(quick: bool, cuda: bool) -> list[tuple[int, int, int]]:
    """The ``(M, K, N)`` shapes timed: tokens, hidden, output features."""
    if cuda:
        ms = (2048,) if quick else (2048, 8192)
        return [(m, 4096, n) for m in ms for n in (4096, 11008)]
    if quick:
        return [(256, 512, 512), (256, 512, 1376)]
    return [(1024, 1024, 1024), (1024, 1024, 2752)]


def _rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    r = ref.float()
    return float((out.float() - r).norm() / r.norm().clamp_min(1e-30))


def _rows(m: int, k: int, n: int, dev: torch.device, quick: bool) -> list[BenchResult]:
    cuda = dev.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(m, k, device=dev, dtype=dtype, generator=g)  # (M, K) residual stream
    gamma = (torch.rand(k, device=dev, generator=g) + 0.5).to(dtype)  # (K,)
    w = (torch.randn(n, k, device=dev, generator=g) / k**0.5).to(dtype)  # (N, K)
    eps = 1e-6
    with torch.no_grad():
        h_ref = F.rms_norm(x.float(), (k,), gamma.float(), eps)  # calibration of the static scale
        a_scale = 2.0 * h_ref.abs().amax() / 255.0
        w_scale = 2.0 * w.float().abs().amax(1, keepdim=True) / 255.0  # (N, 1)
    impl = "auto"
    norm = RealQuantRMSNorm(k, eps, a_bits=8, impl=impl).to(dev)
    with torch.no_grad():
        norm.weight.copy_(gamma.float())
        norm.act_scale.copy_(a_scale)
    lin = W8A8Linear.from_float(w.float(), w_scale, act_scale=a_scale, impl=impl)
    lin_dyn = W8A8Linear.from_float(w.float(), w_scale, a_mode="dynamic", impl=impl)

    def static() -> torch.Tensor:
        return lin(norm(x))

    def fp() -> torch.Tensor:
        return F.linear(F.rms_norm(x, (k,), gamma, eps), w)

    def dynamic() -> torch.Tensor:
        return lin_dyn(F.rms_norm(x, (k,), gamma, eps))

    kind = "triton" if cuda else "torch reference (_int_mm)"
    fp_name = "fp16 rms_norm + cuBLAS linear" if cuda else "fp32 rms_norm + linear"
    if cuda:
        warmup, rep = (3, 10) if quick else (5, 30)
    else:  # sub-millisecond calls on a shared CPU: many repetitions make the median robust
        warmup, rep = (5, 50) if quick else (5, 100)
    with torch.no_grad():
        y_fp, y_st, y_dy = fp(), static(), dynamic()
        meta = {
            "M": m,
            "K": k,
            "N": n,
            "dtype": str(dtype),
            "impl": kind,
            "rel_err_static": _rel_err(y_fp, y_st),
            "rel_err_dynamic": _rel_err(y_fp, y_dy),
        }
        flops = 2.0 * m * k * n
        shape = f"{m}x{k}->{n}"
        rows = [
            bench(
                static,
                fp,
                name=f"W8A8 static {shape}",
                baseline_name=fp_name,
                flops=flops,
                warmup=warmup,
                rep=rep,
                device=dev.type,
                meta=meta,
            ),
            bench(
                static,
                dynamic,
                name=f"W8A8 static {shape}",
                baseline_name="W8A8 dynamic per-token",
                flops=flops,
                warmup=warmup,
                rep=rep,
                device=dev.type,
                meta=meta,
            ),
        ]
        if cuda:
            # Same static path with the GEMM on cuBLAS int8 (torch._int_mm) and a torch epilogue:
            # the H200 run of 2026-11-27 put the Triton int8 GEMM at 117-264 TOP/s, far below
            # the card's int8 peak, so the next GPU run measures the cuBLAS alternative beside it.
            lin_cublas = W8A8Linear.from_float(
                w.float(), w_scale, act_scale=a_scale, impl="reference"
            )

            def static_cublas() -> torch.Tensor:
                return lin_cublas(norm(x))

            meta_cublas = {
                **meta,
                "impl": "fused norm (triton) + torch._int_mm",
                "rel_err_static": _rel_err(y_fp, static_cublas()),
            }
            rows.append(
                bench(
                    static_cublas,
                    fp,
                    name=f"W8A8 static (cuBLAS int8) {shape}",
                    baseline_name=fp_name,
                    flops=flops,
                    warmup=warmup,
                    rep=rep,
                    device=dev.type,
                    meta=meta_cublas,
                )
            )
    return rows


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time the static W8A8 path against fp matmul and the dynamic per-token W8A8 path.

    Args:
        quick: small sizes and few repetitions (CPU: a few seconds). Default True.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.

    Returns:
        Two :class:`BenchResult` per shape (static vs fp, static vs dynamic); ``meta`` holds
        ``M``, ``K``, ``N``, ``dtype``, ``impl`` and the relative errors of both quantized paths
        against the fp output.

    Examples:
        >>> for r in run(quick=True, device="cpu"):  # doctest: +SKIP
        ...     print(r.row())
    """
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    results: list[BenchResult] = []
    for m, k, n in bench_shapes(quick, dev.type == "cuda"):
        logger.info("prefixquant.w8a8: M=%d K=%d N=%d on %s", m, k, n, dev)
        results.extend(_rows(m, k, n, dev, quick))
    return results

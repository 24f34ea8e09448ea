"""Benchmarks of ``quant`` (entry point ``core-kernels.quant``; run by ``paperbricks bench``).

On CUDA (``device="cuda"``, realistic sizes, bf16):

- the fused Triton ``rms_norm_quant`` against the unfused torch path (``F.rms_norm`` then a
  static per-tensor ``quantize``) and against a dynamic per-token quant after the norm, at
  N = 4096 and 16384 tokens x D = 4096 (GB/s counts reading x and w and writing the int8 codes);
- ``int_matmul`` (``torch._int_mm``) against fp32 and bf16 ``torch.matmul`` of the same shape;
- the Triton ``w8a8_matmul`` (int8 GEMM with the scale epilogue fused) against ``int_matmul``
  followed by the torch epilogue, and against a bf16 ``F.linear``, at M = 4096 (and 16384) x 4096².

On the CPU the Triton kernel would run in the interpreter, whose timings mean nothing, so its rows
are skipped: the unfused torch static path is timed against torch dynamic per-token quantization
(the baseline named in the speed-bar table), ``int_matmul`` against fp32 matmul and against its
own exact float64 fallback, and the reference ``w8a8_matmul`` against an fp32 ``F.linear``.
Quick mode finishes in about 20 s on a busy 2-core CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .ops import int_matmul, rms_norm_quant, w8a8_matmul
from .reference import compute_scale_zero, quantize
from .spec import QuantSpec

__all__ = ["run"]

_STATIC = QuantSpec(bits=8, dynamic=False)
_TOKEN = QuantSpec(bits=8, granularity="token")


def _norm_quant_rows(
    n: int, d: int, dtype: torch.dtype, dev: torch.device, fused: bool
) -> list[BenchResult]:
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, d, generator=g, device=dev).to(dtype)
    w = (torch.rand(d, generator=g, device=dev) + 0.5).to(dtype)
    scale = torch.tensor([4.0 / 127], device=dev)
    eps = 1e-6

    def unfused_static() -> torch.Tensor:
        return quantize(F.rms_norm(x, (d,), w, eps), scale, None, _STATIC)

    def unfused_dynamic() -> torch.Tensor:
        y = F.rms_norm(x, (d,), w, eps)
        s, z = compute_scale_zero(y, _TOKEN)
        return quantize(y, s, z, _TOKEN)

    meta = {"N": n, "D": d, "dtype": str(dtype).removeprefix("torch.")}
    moved = n * d * x.element_size() + d * w.element_size() + n * d  # read x, w; write int8
    rows = []
    if fused:

        def fused_fn() -> torch.Tensor:
            return rms_norm_quant(x, w, scale, eps, impl="triton")

        for base_name, base in (
            ("torch rms_norm+static quant", unfused_static),
            ("torch rms_norm+per-token quant", unfused_dynamic),
        ):
            rows.append(
                bench(
                    fused_fn,
                    base,
                    name=f"rms_norm_quant triton N={n}",
                    baseline_name=base_name,
                    bytes_moved=moved,
                    meta=meta,
                    device=dev.type,
                )
            )
    else:
        rows.append(
            bench(
                unfused_static,
                unfused_dynamic,
                name=f"torch rms_norm+static quant N={n}",
                baseline_name="torch rms_norm+per-token quant",
                bytes_moved=moved,
                meta=meta,
                device=dev.type,
            )
        )
    return rows


def _int_mm_rows(m: int, k: int, n: int, dev: torch.device, cuda: bool) -> list[BenchResult]:
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randint(-128, 128, (m, k), generator=g, device=dev, dtype=torch.int8)
    w = torch.randint(-128, 128, (n, k), generator=g, device=dev, dtype=torch.int8)
    b = w.t()  # column-major (K, N): the fast layout for torch._int_mm on CUDA
    af, bf = a.float(), b.float()
    meta = {"M": m, "K": k, "N": n}
    flops = 2.0 * m * k * n
    rows = [
        bench(
            lambda: int_matmul(a, b),
            lambda: af @ bf,
            name=f"int_matmul {m}x{k}x{n}",
            baseline_name="fp32 matmul",
            flops=flops,
            meta=meta,
            device=dev.type,
        )
    ]
    if cuda:
        ah, bh = a.bfloat16(), b.bfloat16()
        rows.append(
            bench(
                lambda: int_matmul(a, b),
                lambda: ah @ bh,
                name=f"int_matmul {m}x{k}x{n}",
                baseline_name="bf16 matmul",
                flops=flops,
                meta=meta,
                device=dev.type,
            )
        )
    else:
        rows.append(
            bench(
                lambda: int_matmul(a, b),
                lambda: int_matmul(a, b, backend="fallback"),
                name=f"int_matmul {m}x{k}x{n}",
                baseline_name="exact fp64 fallback",
                flops=flops,
                meta=meta,
                device=dev.type,
            )
        )
    return rows


def _w8a8_rows(m: int, k: int, n: int, dev: torch.device, cuda: bool) -> list[BenchResult]:
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randint(-128, 128, (m, k), generator=g, device=dev, dtype=torch.int8)
    w = torch.randint(-128, 128, (n, k), generator=g, device=dev, dtype=torch.int8)
    sa = torch.rand(m, 1, generator=g, device=dev) / 100
    sw = torch.rand(n, 1, generator=g, device=dev) / 100
    meta = {"M": m, "K": k, "N": n, "out": "bf16"}
    flops = 2.0 * m * k * n
    impl = "triton" if cuda else "reference"

    def cand() -> torch.Tensor:
        return w8a8_matmul(a, w, sa, sw, impl=impl)

    if cuda:
        xh, wh = a.bfloat16(), w.bfloat16()
        baselines = [
            (
                "int_matmul + torch scale epilogue",
                lambda: w8a8_matmul(a, w, sa, sw, impl="reference"),
            ),
            ("bf16 F.linear", lambda: F.linear(xh, wh)),
        ]
    else:
        xf, wf = a.float(), w.float()
        baselines = [("fp32 F.linear", lambda: F.linear(xf, wf))]
    return [
        bench(
            cand,
            fn,
            name=f"w8a8_matmul {impl} {m}x{k}x{n}",
            baseline_name=name,
            flops=flops,
            meta=meta,
            device=dev.type,
        )
        for name, fn in baselines
    ]


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time the quant ops against their named baselines; see the module docstring."""
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    rows: list[BenchResult] = []
    if cuda:
        for n in (4096,) if quick else (4096, 16384):
            rows += _norm_quant_rows(n, 4096, torch.bfloat16, dev, fused=True)
        for m in (4096,) if quick else (4096, 16384):
            rows += _int_mm_rows(m, 4096, 4096, dev, cuda=True)
            rows += _w8a8_rows(m, 4096, 4096, dev, cuda=True)
    else:
        rows += _norm_quant_rows(2048 if quick else 8192, 1024, torch.float32, dev, fused=False)
        s = 256 if quick else 1024
        rows += _int_mm_rows(s, s, s, dev, cuda=False)
        rows += _w8a8_rows(s, s, s, dev, cuda=False)
    return rows

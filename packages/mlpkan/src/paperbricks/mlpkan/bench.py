"""Benchmark of the fused KAN basis-GEMM against eager FasterKAN (materialised basis), same run.

Registered as ``mlpkan.kan-gemm`` (``paperbricks bench``, ``paperbricks mlpkan bench``). Every row
times a full :class:`~paperbricks.mlpkan.kan.KANLayer` step — LayerNorm, basis, GEMM, forward and
backward (input and weight gradients) — so the candidate and the baseline differ only in how
``y = Φ(u) Wᵀ`` is computed.

- ``device="cuda"`` (the issue's target size): N = 65,536 tokens, in = 192, G = 8 (RSWAF), out = 96,
  float32 and bfloat16. Candidate ``impl="triton"`` (basis computed inside the GEMM's K loop,
  never stored) against baseline ``impl="reference"`` (eager FasterKAN: the (N, in·G) basis is
  materialised, saved for backward, and multiplied by cuBLAS). ``meta`` carries the peak memory of
  one forward+backward and the activation memory held between forward and backward (both
  ``torch.cuda.max_memory_allocated``/``memory_allocated`` deltas, MiB) for both. The full run
  (``quick=False``) adds a grouped row: 4 KAN experts behind top-2 routing (2·N token copies,
  uneven counts) against the eager grouped path (materialised basis + core-kernels
  ``grouped_mm``).
- CPU: the Triton interpreter's times mean nothing, so no Triton rows are timed. Quick mode times
  the eager KAN layer (materialised basis) against a parameter-matched MLP (``in → h → out``,
  GELU, the faster-kan README's comparison) at N = 4096, in = 64, G = 8, out = 32, float32,
  forward+backward and forward only; ``meta`` gives the analytic size of the materialised basis
  versus the fused kernel's saved input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from paperbricks.core_kernels.devices import resolve_device
from paperbricks.core_kernels.testing import BenchResult, bench

from .kan import KANLayer, grouped_kan_linear

__all__ = ["run"]

logger = logging.getLogger(__name__)

_MIB = 2.0**20
# (N, in, G, out) of the CPU rows.
_CPU_QUICK_SIZE = (4096, 64, 8, 32)
_CPU_FULL_SIZE = (16_384, 192, 8, 96)


def _step(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], torch.Tensor]:
    def fn() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x)
        y.backward(dy)
        return y

    return fn


def _cuda_memory(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, float]:
    """Peak memory of one fwd+bwd and memory held between forward and backward (MiB)."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = module(x)
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - base
    y.backward(dy)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del y
    return {"peak_mib": peak / _MIB, "activation_mib": held / _MIB}


class _Grouped(nn.Module):
    def __init__(self, weight: torch.Tensor, offsets: torch.Tensor, grid: torch.Tensor, impl: str):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.offsets, self.grid, self.impl = offsets, grid, impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grouped_kan_linear(
            x, self.weight, self.offsets, grid=self.grid, inv_denominator=1 / 0.33, impl=self.impl
        )


def _cuda_rows(quick: bool, dev: torch.device) -> list[BenchResult]:
    n, n_in, g, n_out = 65_536, 192, 8, 96
    warmup, rep = (3, 10) if quick else (10, 50)
    flops = 3 * 2.0 * n * n_in * g * n_out  # forward GEMM + dx GEMM + dW GEMM
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        gen = torch.Generator(device="cpu").manual_seed(0)
        fused = KANLayer(n_in, n_out, impl="triton", device=dev, dtype=dtype)
        fused.reset_parameters(torch.Generator(device=dev).manual_seed(0))
        eager = KANLayer(n_in, n_out, impl="reference", device=dev, dtype=dtype)
        eager.load_state_dict(fused.state_dict())
        x = torch.randn(n, n_in, generator=gen).to(dev, dtype).requires_grad_(True)
        dy = torch.randn(n, n_out, generator=gen).to(dev, dtype)
        meta: dict[str, Any] = {"N": n, "in": n_in, "G": g, "out": n_out, "dtype": str(dtype)}
        for tag, mod in (("fused", fused), ("eager", eager)):
            for key, val in _cuda_memory(mod, x, dy).items():
                meta[f"{tag}_{key}"] = round(val, 1)
        meta["activation_ratio"] = round(
            meta["eager_activation_mib"] / max(meta["fused_activation_mib"], 1e-9), 2
        )
        results.append(
            bench(
                _step(fused, x, dy),
                _step(eager, x, dy),
                name=f"KANLayer fused fwd+bwd {meta['dtype'][6:]}",
                baseline_name="eager FasterKAN (materialised basis)",
                flops=flops,
                warmup=warmup,
                rep=rep,
                device="cuda",
                meta=meta,
            )
        )
    if not quick:
        gen = torch.Generator(device="cpu").manual_seed(1)
        experts, m = 4, 2 * n
        counts = torch.bincount(torch.randint(0, experts, (m,), generator=gen), minlength=experts)
        offsets = counts.cumsum(0).to(torch.int32).to(dev)
        grid = torch.linspace(-2, 2, g, device=dev)
        w = (torch.randn(experts, n_out, n_in * g, generator=gen) * 0.03).to(dev, torch.bfloat16)
        x = torch.randn(m, n_in, generator=gen).to(dev, torch.bfloat16).requires_grad_(True)
        dy = torch.randn(m, n_out, generator=gen).to(dev, torch.bfloat16)
        fused_g = _Grouped(w.clone(), offsets, grid, "triton")
        eager_g = _Grouped(w.clone(), offsets, grid, "reference")
        meta = {"E": experts, "M": m, "in": n_in, "G": g, "out": n_out, "dtype": "bfloat16"}
        for tag, mod in (("fused", fused_g), ("eager", eager_g)):
            for key, val in _cuda_memory(mod, x, dy).items():
                meta[f"{tag}_{key}"] = round(val, 1)
        results.append(
            bench(
                _step(fused_g, x, dy),
                _step(eager_g, x, dy),
                name="grouped KAN fused fwd+bwd bf16",
                baseline_name="eager basis + grouped_mm",
                flops=3 * 2.0 * m * n_in * g * n_out,
                warmup=warmup,
                rep=rep,
                device="cuda",
                meta=meta,
            )
        )
    return results


def _cpu_rows(quick: bool) -> list[BenchResult]:
    n, n_in, g, n_out = _CPU_QUICK_SIZE if quick else _CPU_FULL_SIZE
    warmup, rep = (2, 5) if quick else (3, 20)
    gen = torch.Generator().manual_seed(0)
    kan = KANLayer(n_in, n_out, num_grids=g, impl="reference")
    kan.reset_parameters(gen)
    kan_params = sum(p.numel() for p in kan.parameters() if p.requires_grad)
    hidden = max(1, round((kan_params - n_out) / (n_in + 1 + n_out)))  # in·h + h + h·out + out
    mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))
    with torch.no_grad():
        for p in mlp.parameters():
            p.uniform_(-(p.shape[-1] ** -0.5), p.shape[-1] ** -0.5, generator=gen)
    x = torch.randn(n, n_in, generator=gen).requires_grad_(True)
    dy = torch.randn(n, n_out, generator=gen)
    meta = {
        "N": n,
        "in": n_in,
        "G": g,
        "out": n_out,
        "dtype": "float32",
        "kan_params": kan_params,
        "mlp_hidden": hidden,
        "mlp_params": sum(p.numel() for p in mlp.parameters()),
        "materialised_basis_mib": round(n * n_in * g * 4 / _MIB, 2),
        "fused_saved_input_mib": round(n * n_in * 4 / _MIB, 2),
        "triton": "not timed on CPU (interpreter)",
    }
    flops = 2.0 * n * n_in * g * n_out
    rows = [
        bench(
            _step(kan, x, dy),
            _step(mlp, x, dy),
            name="KANLayer eager fwd+bwd",
            baseline_name="param-matched MLP",
            flops=3 * flops,
            warmup=warmup,
            rep=rep,
            device="cpu",
            meta=meta,
        )
    ]
    with torch.no_grad():
        rows.append(
            bench(
                lambda: kan(x),
                lambda: mlp(x),
                name="KANLayer eager fwd",
                baseline_name="param-matched MLP",
                flops=flops,
                warmup=warmup,
                rep=rep,
                device="cpu",
                meta=meta,
            )
        )
    return rows


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time the fused KAN GEMM against eager FasterKAN; see the module docstring for the rows.

    Args:
        quick: fewer repetitions, and on the CPU smaller sizes (default True).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`~paperbricks.core_kernels.testing.BenchResult` per row.

    Examples:
        >>> rows = run(quick=True, device="cpu")  # doctest: +SKIP
        >>> print(rows[0].row())  # doctest: +SKIP
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick: expected a bool, got {type(quick).__name__}")
    dev = resolve_device(device)
    results = _cuda_rows(quick, dev) if dev.type == "cuda" else _cpu_rows(quick)
    for r in results:
        logger.info("%s", r.row())
    return results

"""Test and benchmark utilities shared by every paperbricks package.

- :func:`assert_close`: the RMS error-ratio check ``‖out − ref‖ / ‖ref‖ ≤ ratio`` used by every
  fused-vs-reference test (after checking ``out`` for NaN/Inf), reporting the worst element.
- :func:`assert_bitwise_equal`: exact equality with the first mismatch printed as hex codes.
- :func:`gradcheck_f64`: ``torch.autograd.gradcheck`` in float64.
- :func:`assert_lean_import`: a subprocess check that importing a module imports no triton and
  initialises no CUDA.
- :func:`bench`: time a candidate against a *named* baseline in the same run.
- :data:`requires_cuda`, :func:`require_gpu`: GPU gating (``REQUIRE_GPU=1`` turns skips into failures).
- :func:`triton_interpreted`, :func:`interpreter_env`: running Triton kernels on the CPU.
- :func:`tiny_llama_config`, :func:`tiny_tokenizer`, :func:`synthetic_text`: offline tiny
  factories (from :mod:`.factories`; transformers/tokenizers are imported only when called).

The pytest plugin (``paperbricks.core_kernels.testing.plugin``) is registered as a ``pytest11``
entry point, so every package's tests get the markers, the RNG-restoring fixture, ``seeded``,
``nan_poison``, ``HF_HUB_OFFLINE=1`` and ``TRITON_INTERPRET=1`` on CPU runs automatically.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..devices import triton_interpreted
from .factories import synthetic_text, tiny_llama_config, tiny_tokenizer

__all__ = [
    "DEFAULT_RATIOS",
    "BenchResult",
    "assert_bitwise_equal",
    "assert_close",
    "assert_lean_import",
    "bench",
    "gradcheck_f64",
    "interpreter_env",
    "require_gpu",
    "requires_cuda",
    "rms_error_ratio",
    "synthetic_text",
    "tiny_llama_config",
    "tiny_tokenizer",
    "triton_interpreted",
]

#: Default RMS error ratios by the dtype of the output under test.
DEFAULT_RATIOS: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def require_gpu() -> bool:
    """True when ``REQUIRE_GPU=1``: a skipped ``gpu`` test is then a failure."""
    return os.environ.get("REQUIRE_GPU", "0") == "1"


def requires_cuda(test: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a test as needing CUDA (the ``gpu`` marker).

    The plugin skips it without CUDA, and fails it instead under ``REQUIRE_GPU=1``.
    """
    import pytest

    return pytest.mark.gpu(test)


def rms_error_ratio(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``‖out − ref‖₂ / ‖ref‖₂`` in float64 (``‖out − ref‖₂`` when ``ref`` is all zeros)."""
    r = ref.detach().to(torch.float64)
    o = out.detach().to(torch.float64)
    err = torch.linalg.vector_norm(o - r).item()
    base = torch.linalg.vector_norm(r).item()
    return err / base if base > 0 else err


def assert_close(
    name: str,
    ref: torch.Tensor,
    out: torch.Tensor,
    ratio: float | None = None,
) -> None:
    """Assert that ``out`` matches ``ref`` to an RMS error ratio.

    Args:
        name: what is compared, used in the message (``"dq"``, ``"forward"``).
        ref: the reference tensor (any float dtype; compared in float64).
        out: the tensor under test, same shape as ``ref``.
        ratio: the largest allowed ``‖out − ref‖ / ‖ref‖``; defaults by ``out.dtype``
            (:data:`DEFAULT_RATIOS`).

    Raises:
        AssertionError: on a shape mismatch, on NaN/Inf in ``out`` where ``ref`` is finite, or
            when the ratio is exceeded; the message names the worst element.

    Examples:
        >>> import torch
        >>> assert_close("x", torch.ones(3), torch.ones(3))
    """
    if ref.shape != out.shape:
        raise AssertionError(
            f"{name}: shape mismatch, ref {tuple(ref.shape)} vs out {tuple(out.shape)}"
        )
    if ratio is None:
        ratio = DEFAULT_RATIOS.get(out.dtype, 1e-5)
    r = ref.detach().to(torch.float64).cpu()
    o = out.detach().to(torch.float64).cpu()
    bad = ~torch.isfinite(o) & torch.isfinite(r)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{name}: {int(bad.sum())} non-finite values in out where ref is finite; "
            f"first at {idx}: out={o[idx].item()} ref={r[idx].item()}"
        )
    mismatch_nonfinite = (~torch.isfinite(r)) & ~((r == o) | (r.isnan() & o.isnan()))
    if mismatch_nonfinite.any():
        idx = tuple(int(i) for i in mismatch_nonfinite.nonzero()[0])
        raise AssertionError(f"{name}: ref is {r[idx].item()} at {idx} but out is {o[idx].item()}")
    finite = torch.isfinite(r)
    rr = torch.where(finite, r, torch.zeros_like(r))
    oo = torch.where(finite, o, torch.zeros_like(o))
    got = rms_error_ratio(rr, oo)
    if not got <= ratio:
        diff = (oo - rr).abs()
        flat = int(diff.argmax()) if diff.numel() else 0
        idx = (
            tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
            if diff.dim()
            else ()
        )
        raise AssertionError(
            f"{name}: RMS error ratio {got:.3e} exceeds {ratio:.1e}; worst element at {idx}: "
            f"out={oo[idx].item():.8g} ref={rr[idx].item():.8g} (|diff|={diff[idx].item():.3e})"
        )


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, name: str = "tensor") -> None:
    """Assert two tensors have identical bits; report the first mismatch as hex codes."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise AssertionError(
            f"{name}: shape/dtype mismatch {tuple(a.shape)}/{a.dtype} vs {tuple(b.shape)}/{b.dtype}"
        )
    nbytes = a.element_size()
    int_dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[nbytes]
    ai = a.detach().contiguous().cpu().view(int_dtype).to(torch.int64)
    bi = b.detach().contiguous().cpu().view(int_dtype).to(torch.int64)
    mask = (1 << (8 * nbytes)) - 1
    diff = ai != bi
    if diff.any():
        idx = tuple(int(i) for i in diff.nonzero()[0])
        raise AssertionError(
            f"{name}: {int(diff.sum())} of {diff.numel()} elements differ; first at {idx}: "
            f"0x{int(ai[idx]) & mask:0{2 * nbytes}x} ({a[idx].item()!r}) vs "
            f"0x{int(bi[idx]) & mask:0{2 * nbytes}x} ({b[idx].item()!r})"
        )


def gradcheck_f64(fn: Callable[..., Any], *inputs: torch.Tensor, **kwargs: Any) -> bool:
    """``torch.autograd.gradcheck`` with every floating input cast to float64 and requiring grad."""
    cast = tuple(
        t.detach().to(torch.float64).requires_grad_(True)
        if isinstance(t, torch.Tensor) and t.is_floating_point()
        else t
        for t in inputs
    )
    return torch.autograd.gradcheck(fn, cast, **kwargs)


_LEAN_IMPORT_CHECK = r"""
import importlib, json, sys
importlib.import_module(sys.argv[1])
cuda_init = False
if "torch" in sys.modules:
    import torch
    cuda_init = bool(torch.cuda.is_initialized())
print(json.dumps({"triton": "triton" in sys.modules, "cuda_initialized": cuda_init}))
"""


def assert_lean_import(module: str) -> None:
    """Import ``module`` in a fresh interpreter; fail if that imported triton or initialised CUDA."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _LEAN_IMPORT_CHECK, module],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"importing {module} failed:\n{proc.stderr}")
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    if state["triton"]:
        raise AssertionError(
            f"importing {module} imported triton; import it lazily via devices.import_triton"
        )
    if state["cuda_initialized"]:
        raise AssertionError(f"importing {module} initialised CUDA")


@contextmanager
def interpreter_env() -> Iterator[None]:
    """Run the enclosed Triton launches in the CPU interpreter.

    ``TRITON_INTERPRET`` is read when triton is imported, so this only works before the first
    ``import triton`` of the process (the pytest plugin sets it at start-up for CPU runs). Raises
    ``RuntimeError`` when triton was already imported in compiled mode.
    """
    if "triton" in sys.modules and not triton_interpreted():
        raise RuntimeError(
            "triton was already imported without TRITON_INTERPRET=1; set it before the first "
            "import (e.g. in the environment) to run kernels in the interpreter"
        )
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if old is None and "triton" not in sys.modules:
            os.environ.pop("TRITON_INTERPRET", None)
        elif old is not None:
            os.environ["TRITON_INTERPRET"] = old


@dataclass(frozen=True)
class BenchResult:
    """One candidate-vs-baseline timing. Times are medians in milliseconds."""

    name: str
    baseline: str
    ms: float
    baseline_ms: float
    speedup: float  # baseline_ms / ms: > 1 means the candidate is faster
    device: str
    tflops: float | None = None  # achieved by the candidate, when ``flops`` was given
    gbps: float | None = None  # achieved by the candidate, when ``bytes_moved`` was given
    baseline_tflops: float | None = None
    baseline_gbps: float | None = None
    meta: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> str:
        extra = ""
        if self.tflops is not None:
            extra += f"  {self.tflops:.2f} TFLOP/s"
        if self.gbps is not None:
            extra += f"  {self.gbps:.1f} GB/s"
        return (
            f"{self.name:<32} {self.ms:10.4f} ms  vs {self.baseline} {self.baseline_ms:10.4f} ms  "
            f"x{self.speedup:6.2f}{extra}"
        )


def _device_of(fn_out: Any) -> str:
    return "cuda" if isinstance(fn_out, torch.Tensor) and fn_out.is_cuda else "cpu"


def _time_ms(fn: Callable[[], Any], device: str, warmup: int, rep: int) -> float:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(rep):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(rep):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    name: str,
    baseline_name: str,
    flops: float | None = None,
    bytes_moved: float | None = None,
    warmup: int = 3,
    rep: int = 10,
    device: str | None = None,
    meta: dict[str, Any] | None = None,
) -> BenchResult:
    """Time ``fn`` against ``baseline`` in the same run and return the ratio.

    Both callables take no arguments. On CUDA the median of ``rep`` CUDA-event timings is used;
    on the CPU the median of ``rep`` ``perf_counter`` timings. ``device`` is inferred from what
    ``fn`` returns when not given.

    Args:
        flops: floating-point operations of one call, to report TFLOP/s.
        bytes_moved: bytes read plus written by one call, to report GB/s.
    """
    if rep < 1 or warmup < 0:
        raise ValueError(f"rep must be >= 1 and warmup >= 0, got rep={rep}, warmup={warmup}")
    if device is None:
        device = _device_of(fn())
    ms = _time_ms(fn, device, warmup, rep)
    base_ms = _time_ms(baseline, device, warmup, rep)
    dev_name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)"

    def rate(amount: float | None, t_ms: float, unit: float) -> float | None:
        return None if amount is None else amount / (t_ms * 1e-3) / unit

    return BenchResult(
        name=name,
        baseline=baseline_name,
        ms=ms,
        baseline_ms=base_ms,
        speedup=base_ms / ms if ms > 0 else float("inf"),
        device=dev_name,
        tflops=rate(flops, ms, 1e12),
        gbps=rate(bytes_moved, ms, 1e9),
        baseline_tflops=rate(flops, base_ms, 1e12),
        baseline_gbps=rate(bytes_moved, base_ms, 1e9),
        meta=meta,
    )

"""Smoke test of the benchmark entry point (quick mode on the CPU: torch reference rows only)."""

from __future__ import annotations

from paperbricks.core_kernels.testing import BenchResult
from paperbricks.lmul.bench import run


def test_quick_cpu_run():
    rows = run(quick=True, device="cpu")
    assert [r.baseline for r in rows] == ["torch.mul", "torch.matmul"]
    for r in rows:
        assert isinstance(r, BenchResult)
        assert r.ms > 0 and r.baseline_ms > 0
        assert r.meta is not None and r.meta["products_per_s"] > 0
        assert r.meta["mantissa_bits"] == 3 and "not a speed-up" in r.meta["note"]
        assert "reference" in r.name  # no interpreter timings on the CPU

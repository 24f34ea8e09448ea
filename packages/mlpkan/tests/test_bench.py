"""Smoke tests of the KAN GEMM benchmark (`mlpkan.kan-gemm`)."""

import importlib.metadata as md

import pytest

from paperbricks.core_kernels.devices import has_cuda
from paperbricks.core_kernels.testing import BenchResult, requires_cuda
from paperbricks.mlpkan import bench


def test_bench_cpu_rows_at_tiny_size(monkeypatch):
    monkeypatch.setattr(bench, "_CPU_QUICK_SIZE", (64, 6, 8, 5))
    rows = bench.run(quick=True, device="cpu")
    assert [r.name for r in rows] == ["KANLayer eager fwd+bwd", "KANLayer eager fwd"]
    for r in rows:
        assert isinstance(r, BenchResult)
        assert r.baseline == "param-matched MLP"
        assert r.ms > 0 and r.baseline_ms > 0
        assert r.meta["materialised_basis_mib"] == pytest.approx(64 * 6 * 8 * 4 / 2**20, abs=0.01)
        # The parameter-matched MLP is within one hidden unit of the KAN layer's budget.
        assert abs(r.meta["mlp_params"] - r.meta["kan_params"]) <= 6 + 1 + 5


@pytest.mark.slow
def test_bench_cpu_quick_default_size():
    rows = bench.run(quick=True, device="cpu")
    assert len(rows) == 2 and rows[0].meta["N"] == 4096


def test_bench_entry_point_and_errors():
    eps = {ep.name: ep.value for ep in md.entry_points(group="paperbricks.benchmarks")}
    assert eps["mlpkan.kan-gemm"] == "paperbricks.mlpkan.bench:run"
    with pytest.raises(TypeError, match="quick"):
        bench.run(quick="yes", device="cpu")
    if not has_cuda():
        with pytest.raises(ValueError, match="device"):
            bench.run(quick=True, device="cuda")


@requires_cuda
def test_gpu_bench_reports_memory():
    rows = bench.run(quick=True, device="cuda")
    assert len(rows) == 2
    for r in rows:
        assert r.meta["N"] == 65_536
        # The fused layer keeps only the (N, in) input for backward, not the (N, in·G) basis.
        assert r.meta["fused_activation_mib"] < r.meta["eager_activation_mib"]

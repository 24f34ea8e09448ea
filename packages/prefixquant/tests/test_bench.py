"""The W8A8 benchmark runs, times the three paths in one run, and the timed paths compute the layer."""

from __future__ import annotations

import pytest

from paperbricks.core_kernels.testing import BenchResult, requires_cuda
from paperbricks.prefixquant import bench


def test_bench_rows_small(monkeypatch):
    monkeypatch.setattr(bench, "bench_shapes", lambda quick, cuda: [(32, 64, 48)])
    rows = bench.run(quick=True, device="cpu")
    assert len(rows) == 2 and all(isinstance(r, BenchResult) for r in rows)
    assert [r.baseline for r in rows] == ["fp32 rms_norm + linear", "W8A8 dynamic per-token"]
    for r in rows:
        assert r.name == "W8A8 static 32x64->48"
        assert r.ms > 0 and r.baseline_ms > 0 and r.speedup > 0
        meta = r.meta or {}
        assert (meta["M"], meta["K"], meta["N"]) == (32, 64, 48)
        # the timed int8 paths compute the fp layer up to 8-bit quantization error
        assert 0 < meta["rel_err_static"] < 0.05
        assert 0 < meta["rel_err_dynamic"] < 0.05


def test_bench_shapes_and_device_errors():
    assert bench.bench_shapes(True, False) == [(256, 512, 512), (256, 512, 1376)]
    assert all(k == 4096 for _, k, _ in bench.bench_shapes(False, True))
    assert {n for _, _, n in bench.bench_shapes(True, True)} == {4096, 11008}
    with pytest.raises(ValueError, match="device"):
        bench.run(device="tpu")


@pytest.mark.slow
def test_bench_quick_cpu_full_run():
    rows = bench.run(quick=True, device="cpu")
    assert len(rows) == 4


@requires_cuda
def test_bench_cuda_quick():
    rows = bench.run(quick=True, device="cuda")
    assert (
        len(rows) == 6
    )  # per shape: static vs fp16, static vs dynamic, cuBLAS-int8 static vs fp16
    assert all((r.meta or {})["rel_err_static"] < 0.05 for r in rows)

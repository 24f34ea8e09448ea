"""Smoke test of the packed-attention benchmark (no timed assertions)."""

from paperbricks.core_kernels.testing import requires_cuda
from paperbricks.pixtral.bench import image_grids, run


def test_bench_quick_cpu_runs_and_paths_agree():
    (res,) = run(quick=True, device="cpu")
    m = res.meta
    assert m["N"] == sum(a * b for a, b in image_grids(True, False))
    assert m["max_abs_diff"] < 1e-4  # the two paths compute the same attention
    assert m["flops_packed"] < m["flops_dense"]
    assert m["peak_bytes"] < m["baseline_peak_bytes"]
    assert res.ms > 0 and res.baseline_ms > 0


@requires_cuda
def test_bench_cuda_runs():
    (res,) = run(quick=True, device="cuda")
    assert res.meta["peak_kind"] == "measured"
    assert res.meta["max_abs_diff"] < 5e-2  # bf16

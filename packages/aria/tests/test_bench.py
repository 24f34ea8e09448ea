"""aria.moe benchmark: rows, FLOP accounting and that the timed backends compute the same layer."""

from __future__ import annotations

import pytest
import torch

from paperbricks.aria import bench
from paperbricks.core_kernels.testing import requires_cuda


def test_shapes_are_arias_on_cuda():
    s = bench.moe_shapes(quick=True, cuda=True)
    assert (s["d"], s["inter"], s["experts"], s["k"], s["tokens"]) == (2560, 1664, 64, 6, 4096)
    assert s["dtype"] == torch.bfloat16
    assert bench.moe_shapes(quick=False, cuda=True)["tokens"] == 16384


def test_run_cpu_tiny(monkeypatch):
    tiny = dict(d=32, inter=16, experts=8, k=2, tokens=40, dtype=torch.float32)
    monkeypatch.setattr(bench, "moe_shapes", lambda quick, cuda: tiny)
    rows = bench.run(quick=True, device="cpu")
    assert [(r.name, r.baseline) for r in rows] == [
        ("moe grouped[auto] fwd T=40", "loop fwd"),
        ("moe grouped[auto] fwd T=40", "dense fwd"),
        ("moe grouped[auto] fwd+bwd T=40", "loop fwd+bwd"),
        ("moe grouped[auto] fwd+bwd T=40", "dense fwd+bwd"),
    ]
    fwd = 6.0 * 40 * 2 * 32 * 16 + 2.0 * 40 * 32 * 8
    assert rows[0].meta["flops"] == fwd and rows[2].meta["flops"] == 3 * fwd
    for r in rows:
        assert r.ms > 0 and r.baseline_ms > 0 and r.tflops is not None
        assert r.device.startswith("cpu")
        # grouped and loop backends give the same layer output (float32)
        assert r.meta["max_abs_diff_grouped_vs_loop"] < 1e-4


def test_bad_device():
    with pytest.raises((ValueError, RuntimeError)):
        bench.run(quick=True, device="tpu")


@requires_cuda
def test_run_cuda_quick():
    rows = bench.run(quick=True, device="cuda")
    assert len(rows) == 8  # fwd / fwd+bwd x impl auto / triton x loop / dense
    for r in rows:
        # BenchResult.device names the card (torch.cuda.get_device_name()), as gpu-check reports it.
        assert r.device == torch.cuda.get_device_name() and r.tflops is not None and r.tflops > 0
        assert r.meta["max_abs_diff_grouped_vs_loop"] < 0.5  # bf16 outputs of O(1) magnitude

"""The benchmark compares like with like, and its CPU quick run produces well-formed rows."""

from __future__ import annotations

import pytest
import torch

from paperbricks.core_kernels.testing import assert_close
from paperbricks.diffattn import bench


@pytest.mark.parametrize("causal", [True, False])
def test_benchmarked_ops_compute_the_same_thing(causal):
    # The fused kernel (interpreter), the flashdiff_1 baseline and the reference get the bench's
    # own inputs and must agree, forward and backward, or the speed-up would compare different ops.
    xs = bench._inputs(1, 2, 19, 8, 16, torch.device("cpu"), torch.float32)
    outs = {}
    for name, fn in (("fused", bench._fused(causal)),
                     ("two_calls", bench._two_calls(causal, "reference")),
                     ("reference", bench._reference(causal))):  # fmt: skip
        y = fn(*xs)
        grads = torch.autograd.grad(y, xs, torch.ones_like(y))
        outs[name] = (y, grads)
    for name in ("fused", "two_calls"):
        assert_close(f"{name} Y", outs["reference"][0], outs[name][0])
        for i, (r, g) in enumerate(zip(outs["reference"][1], outs[name][1], strict=True)):
            assert_close(f"{name} grad {i}", r, g, ratio=1e-4)


def test_flops_count_both_maps():
    # Two QKᵀ (2·T·S·D each) and two PV (2·T·S·Dv each) per head; causal halves it.
    assert bench._flops(1, 1, 10, 10, 4, 8, False, False) == 2 * (2 * 100 * 4 + 2 * 100 * 8)
    assert bench._flops(2, 3, 10, 10, 4, 8, True, True) == 2 * 3 * 4 * 100 * 12 * 2.5 / 2


@pytest.mark.slow
def test_cpu_quick_run_rows():
    rows = bench.run(quick=True, device="cpu")
    assert len(rows) == 4
    for r in rows:
        assert r.ms > 0 and r.baseline_ms > 0 and r.device.startswith("cpu")
        assert "2×sdpa+rmsnorm" in r.name and "reference" in r.baseline

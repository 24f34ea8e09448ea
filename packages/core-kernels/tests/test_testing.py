"""Tests of the shared test utilities themselves."""

import pytest
import torch

from paperbricks.core_kernels.testing import (
    assert_bitwise_equal,
    assert_close,
    assert_lean_import,
    bench,
    gradcheck_f64,
    rms_error_ratio,
)


def test_assert_close_accepts_equal_and_tiny_noise():
    x = torch.randn(64, 64)
    assert_close("same", x, x.clone())
    assert_close("noise", x, x + 1e-7 * torch.randn_like(x))


def test_assert_close_fails_on_injected_nan():
    x = torch.randn(10, 10)
    y = x.clone()
    y[3, 4] = float("nan")
    with pytest.raises(AssertionError, match=r"non-finite.*\(3, 4\)"):
        assert_close("nan", x, y)


def test_assert_close_fails_on_one_percent_perturbation_at_fp32_tolerance():
    x = torch.randn(1000)
    with pytest.raises(AssertionError, match="RMS error ratio"):
        assert_close("perturbed", x, x * 1.01)


def test_assert_close_reports_worst_element():
    x = torch.zeros(5, 5) + 1.0
    y = x.clone()
    y[2, 1] = 5.0
    with pytest.raises(AssertionError, match=r"worst element at \(2, 1\)"):
        assert_close("worst", x, y)


def test_assert_close_shape_mismatch():
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_close("shape", torch.ones(3), torch.ones(4))


def test_rms_error_ratio_value():
    ref = torch.tensor([3.0, 4.0])
    out = torch.tensor([3.0, 4.5])
    assert rms_error_ratio(ref, out) == pytest.approx(0.5 / 5.0)


def test_assert_bitwise_equal_reports_hex_codes():
    a = torch.tensor([1.0, 2.0], dtype=torch.float16)
    assert_bitwise_equal(a, a.clone())
    b = a.clone()
    b[1] = -0.0
    with pytest.raises(AssertionError, match=r"0x4000.*0x8000"):
        assert_bitwise_equal(a, b)
    # +0 and -0 compare equal as floats but not as bits
    with pytest.raises(AssertionError):
        assert_bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))


def test_gradcheck_f64():
    assert gradcheck_f64(lambda x: (x.sin() * x).sum(), torch.randn(4))


def test_bench_reports_ratio_against_named_baseline():
    x = torch.randn(256, 256)
    res = bench(
        lambda: x @ x, lambda: (x @ x) @ x, name="one", baseline_name="two", flops=2 * 256**3, rep=3
    )
    assert res.baseline == "two" and res.name == "one"
    assert res.speedup == pytest.approx(res.baseline_ms / res.ms)
    assert res.tflops is not None and res.tflops > 0
    assert "cpu" in res.device
    with pytest.raises(ValueError, match="rep"):
        bench(lambda: x, lambda: x, name="a", baseline_name="b", rep=0)


def test_seeded_fixture_is_deterministic(seeded):
    a = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(a, torch.rand(3))


def test_rng_state_is_restored_between_tests_part1():
    torch.manual_seed(1234)


def test_rng_state_is_restored_between_tests_part2():
    # part1 reseeded; the autouse fixture restored the state afterwards, so we must not be at seed 1234
    state = torch.get_rng_state()
    torch.manual_seed(1234)
    assert not torch.equal(state, torch.get_rng_state())


def test_nan_poison_fills_empty(nan_poison):
    assert torch.empty(4).isnan().all()
    assert torch.empty_like(torch.ones(2, 2)).isnan().all()


@pytest.mark.parametrize(
    "module",
    [
        "paperbricks.core_kernels",
        "paperbricks.core_kernels.devices",
        "paperbricks.core_kernels.testing",
    ],
)
def test_lean_import(module):
    assert_lean_import(module)


def test_assert_lean_import_detects_triton(tmp_path, monkeypatch):
    (tmp_path / "eager_triton_mod.py").write_text("import triton\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(AssertionError, match="imported triton"):
        assert_lean_import("eager_triton_mod")


def test_intra_op_threads_sets_and_restores():
    from paperbricks.core_kernels.devices import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive int"), intra_op_threads(0):
        pass


@pytest.fixture
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_one_thread_fixture_sets_one_intra_op_thread(_two_threads, request):
    assert torch.get_num_threads() == 2
    request.getfixturevalue("one_thread")
    assert torch.get_num_threads() == 1

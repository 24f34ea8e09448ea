"""pytest plugin shared by every paperbricks package (registered as a ``pytest11`` entry point).

At load time, before any test module can import triton, it sets ``HF_HUB_OFFLINE=1`` (nothing
downloads in tests) and, on machines without CUDA, ``TRITON_INTERPRET=1`` so Triton kernels run on
the CPU interpreter. It then provides:

- the markers ``gpu``, ``slow`` and ``integration``;
- ``gpu`` tests skipped without CUDA; with ``REQUIRE_GPU=1`` non-gpu tests are deselected and a
  skipped or CUDA-less gpu test is a failure;
- an autouse fixture restoring the torch, CUDA, numpy and ``random`` RNG states after each test;
- ``seeded``: seeds everything with 0 for the test (restored afterwards);
- ``nan_poison``: ``torch.empty``/``torch.empty_like`` return NaN-filled tensors, so kernels that
  leave output elements unwritten fail their comparisons;
- exit status 5 (no tests collected) is mapped to 0, so a package with only GPU tests passes a
  CPU run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_MARKERS = (
    "gpu: needs a CUDA device; skipped without one, a failure when REQUIRE_GPU=1",
    "slow: long-running; deselected by default, select with -m slow",
    "integration: end-to-end tests that compose several packages",
)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if (
    os.environ.get("REQUIRE_GPU", "0") != "1"
    and "TRITON_INTERPRET" not in os.environ
    and not _cuda_available()
):
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    # Idempotent: pytest ignores a marker line it already has from the ini file.
    known = {line.split(":")[0] for line in config.getini("markers")}
    for line in _MARKERS:
        if line.split(":")[0] not in known:
            config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    require = os.environ.get("REQUIRE_GPU", "0") == "1"
    if require:
        keep = [it for it in items if it.get_closest_marker("gpu") is not None]
        dropped = [it for it in items if it.get_closest_marker("gpu") is None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
        return
    if not _cuda_available():
        skip = pytest.mark.skip(reason="needs CUDA (gpu marker)")
        for it in items:
            if it.get_closest_marker("gpu") is not None:
                it.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (
        os.environ.get("REQUIRE_GPU", "0") == "1"
        and item.get_closest_marker("gpu") is not None
        and not _cuda_available()
    ):
        pytest.fail("REQUIRE_GPU=1 but CUDA is not available", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("REQUIRE_GPU", "0") == "1"
        and item.get_closest_marker("gpu") is not None
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_GPU=1: gpu test was skipped ({report.longrepr})"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(autouse=True)
def _restore_rng_state() -> Iterator[None]:
    import numpy as np
    import torch

    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)


@pytest.fixture
def seeded() -> int:
    """Seed python, numpy and torch (all devices) with 0 for this test; returns the seed."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run this test on one torch intra-op thread, then restore the previous count.

    Tests of tiny models lose more to splitting each op over threads than they gain, most of all
    on a busy shared CPU (measured: a tiny L-BFGS fit 12 s on two contended threads, 0.06 s on
    one). Use it module-wide with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    from ..devices import intra_op_threads

    with intra_op_threads(1):
        yield


@pytest.fixture
def nan_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``torch.empty``/``torch.empty_like`` return NaN-filled float tensors for this test."""
    import torch

    real_empty, real_empty_like = torch.empty, torch.empty_like

    def _fill(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _fill(real_empty_like(*a, **k)))

"""gpu-check's flow on a CPU machine (--allow-cpu): tests selected with -m gpu, benchmarks run."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None
    or importlib.util.find_spec("paperbricks.core_kernels") is None,
    reason="needs torch and paperbricks-core-kernels in the environment",
)

GPU_TEST = """\
import pytest
from paperbricks.core_kernels.testing import requires_cuda

@requires_cuda
def test_on_gpu():
    import torch
    assert torch.cuda.is_available()

def test_cpu_only():
    assert True
"""

BENCH = """\
from paperbricks.core_kernels.testing import bench

def run(*, quick, device):
    x = list(range(1000))
    return [bench(lambda: sum(x), lambda: sorted(x), name="sum", baseline_name="sorted", device="cpu", rep=3)]

def broken(*, quick, device):
    raise RuntimeError("bench exploded")
"""


def test_gpu_check_dry_run_on_cpu(mini_repo, tmp_path):
    # The mini repo's core-kernels is an empty shell; use the installed real one instead.
    shutil.rmtree(mini_repo / "packages" / "core-kernels" / "src")
    pkg = mini_repo / "packages" / "alpha"
    (pkg / "tests").mkdir()
    (pkg / "tests" / "test_alpha.py").write_text(GPU_TEST)
    (pkg / "src/paperbricks/alpha/bench.py").write_text(BENCH)
    with open(pkg / "pyproject.toml", "a") as f:
        f.write(
            '\n[project.entry-points."paperbricks.benchmarks"]\n"alpha.sum" = "paperbricks.alpha.bench:run"\n'
        )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "tools/gpu-check",
        "--root",
        str(mini_repo),
        "--out",
        str(out),
        "--packages",
        "alpha",
    ]
    assert (
        subprocess.run(cmd, cwd=mini_repo, capture_output=True, text=True).returncode == 2
    )  # no GPU
    proc = subprocess.run(
        [*cmd, "--allow-cpu"], cwd=mini_repo, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "results.json").read_text())
    (tests,) = data["tests"]
    assert (
        tests["package"] == "alpha" and tests["skipped"] == 1 and tests["passed"] == 0
    )  # cpu test deselected
    (b,) = data["benchmarks"]
    assert b["benchmark"] == "alpha.sum" and b["baseline"] == "sorted" and b["speedup"] > 0
    summary = (out / "summary.md").read_text()
    assert "| alpha | ok | 0 | 0 | 0 | 1 |" in summary and "| alpha.sum | sum |" in summary

    # a test file that needs a module the machine lacks is reported by name, and fails the run
    (pkg / "tests" / "test_needs_missing.py").write_text("import no_such_module_xyz\n")
    proc = subprocess.run(
        [*cmd, "--allow-cpu", "--no-bench"],
        cwd=mini_repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "missing modules: no_such_module_xyz" in (out / "summary.md").read_text()
    (pkg / "tests" / "test_needs_missing.py").unlink()

    with open(pkg / "pyproject.toml", "a") as f:
        f.write('"alpha.broken" = "paperbricks.alpha.bench:broken"\n')
    proc = subprocess.run(
        [*cmd, "--allow-cpu", "--no-tests"],
        cwd=mini_repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "bench exploded" in (out / "summary.md").read_text()


def test_gpu_check_together_splits_counts_and_filters_benchmarks(mini_repo, tmp_path):
    shutil.rmtree(mini_repo / "packages" / "core-kernels" / "src")
    pkg = mini_repo / "packages" / "alpha"
    (pkg / "tests").mkdir()
    (pkg / "tests" / "test_alpha.py").write_text(GPU_TEST)
    (pkg / "src/paperbricks/alpha/bench.py").write_text(BENCH)
    with open(pkg / "pyproject.toml", "a") as f:
        f.write(
            '\n[project.entry-points."paperbricks.benchmarks"]\n'
            '"alpha.sum" = "paperbricks.alpha.bench:run"\n'
            '"alpha.broken" = "paperbricks.alpha.bench:broken"\n'
        )
    out = tmp_path / "out"
    cmd = [sys.executable, "tools/gpu-check", "--root", str(mini_repo), "--out", str(out)]
    cmd += ["--packages", "alpha", "--allow-cpu", "--together", "--benchmarks", "alpha.sum"]
    proc = subprocess.run(cmd, cwd=mini_repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "results.json").read_text())
    (tests,) = data["tests"]
    assert tests["package"] == "alpha" and tests["skipped"] == 1 and tests["failed"] == 0
    # alpha.broken is filtered out, so the run is green.
    assert [b["benchmark"] for b in data["benchmarks"]] == ["alpha.sum"]

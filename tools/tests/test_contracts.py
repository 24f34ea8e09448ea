"""The import-linter contract in the root pyproject: complete, and able to fail."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

UV = shutil.which("uv")


@pytest.fixture(scope="module")
def lint_imports(tmp_path_factory) -> str:
    """lint-imports in a venv of its own, so no installed paperbricks shadows the test tree."""
    if UV is None:
        pytest.skip("uv not on PATH")
    venv = tmp_path_factory.mktemp("lint-venv") / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [
            UV,
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "import-linter>=2.1",
        ],
        check=True,
    )
    return str(venv / "bin" / "lint-imports")


def test_middle_layer_names_every_paper_package():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    (contract,) = data["tool"]["importlinter"]["contracts"]
    layers = contract["layers"]
    assert layers[0] == "paperbricks.integration" and layers[-1] == "paperbricks.core_kernels"
    listed = {m.strip() for layer in layers[1:-1] for m in layer.split("|")}
    folders = {p.parent.name for p in (REPO / "packages").glob("*/pyproject.toml")} - {
        "core-kernels"
    }
    assert listed == {"paperbricks." + f.replace("-", "_") for f in folders}


def _lint(lint_imports: str, root: Path) -> subprocess.CompletedProcess:
    srcs = [str(p) for p in sorted(root.glob("packages/*/src"))] + [
        str(root / "integration" / "src")
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(srcs))
    return subprocess.run(
        [lint_imports, "--no-cache", "pyproject.toml"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
    )


def test_contract_passes_clean_tree_and_fails_cross_paper_import(mini_repo, lint_imports):
    assert _lint(lint_imports, mini_repo).returncode == 0
    (mini_repo / "packages/alpha/src/paperbricks/alpha/__init__.py").write_text(
        "import paperbricks.beta\n"
    )
    proc = _lint(lint_imports, mini_repo)
    assert proc.returncode != 0
    assert "paperbricks.alpha is not allowed to import paperbricks.beta" in proc.stdout


def test_contract_fails_when_core_kernels_imports_a_paper_package(mini_repo, lint_imports):
    (mini_repo / "packages/core-kernels/src/paperbricks/core_kernels/__init__.py").write_text(
        "import paperbricks.alpha\n"
    )
    proc = _lint(lint_imports, mini_repo)
    assert proc.returncode != 0
    assert "paperbricks.core_kernels is not allowed to import paperbricks.alpha" in proc.stdout


def test_integration_may_combine_packages(mini_repo, lint_imports):
    (mini_repo / "integration/src/paperbricks/integration/__init__.py").write_text(
        "import paperbricks.alpha\nimport paperbricks.beta\nimport paperbricks.core_kernels\n"
    )
    assert _lint(lint_imports, mini_repo).returncode == 0

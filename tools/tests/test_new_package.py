import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, git


def new_package(root, *args):
    return subprocess.run(
        [sys.executable, "tools/new-package", *args], cwd=root, capture_output=True, text=True
    )


def test_scaffold_layout_and_wiring(mini_repo):
    proc = new_package(
        mini_repo, "hallu-probe", "--title", "LLMs Know More", "--arxiv", "2410.02707", "--no-lock"
    )
    assert proc.returncode == 0, proc.stderr
    pkg = mini_repo / "packages" / "hallu-probe"
    for rel in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "src/paperbricks/hallu_probe/__init__.py",
        "src/paperbricks/hallu_probe/cli.py",
        "src/paperbricks/hallu_probe/py.typed",
        "tests/test_package.py",
    ):
        assert (pkg / rel).is_file(), rel
    assert not (pkg / "src" / "paperbricks" / "__init__.py").exists()
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "paperbricks-hallu-probe" and meta["version"] == "0.1.0"
    assert meta["dependencies"] == ["paperbricks-core-kernels>=0.1,<0.2"]
    assert meta["entry-points"]["paperbricks.commands"] == {
        "hallu-probe": "paperbricks.hallu_probe.cli:register"
    }
    assert meta["urls"]["Paper"] == "https://arxiv.org/abs/2410.02707"
    root = tomllib.loads((mini_repo / "pyproject.toml").read_text())
    layers = root["tool"]["importlinter"]["contracts"][0]["layers"]
    assert layers == [
        "paperbricks.integration",
        "paperbricks.alpha | paperbricks.beta | paperbricks.hallu_probe",
        "paperbricks.core_kernels",
    ]
    assert root["tool"]["uv"]["sources"]["paperbricks-hallu-probe"] == {"workspace": True}
    integ = tomllib.loads((mini_repo / "integration" / "pyproject.toml").read_text())
    assert "paperbricks-hallu-probe" in integ["project"]["dependencies"]
    # the generated code is valid Python
    for f in pkg.rglob("*.py"):
        compile(f.read_text(), str(f), "exec")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name", "--title", "t", "--arxiv", "2410.00001"], "lowercase"),
        (["alpha", "--title", "t", "--arxiv", "2410.00001"], "already exists"),
        (["gamma", "--title", "t", "--arxiv", "arxiv:1"], "must look like"),
        (["gamma", "--title", " ", "--arxiv", "2410.00001"], "must not be empty"),
    ],
)
def test_refuses_bad_input_and_changes_nothing(mini_repo, args, message):
    before = (mini_repo / "pyproject.toml").read_text()
    proc = new_package(mini_repo, *args)
    assert proc.returncode == 1 and message in proc.stderr
    assert (mini_repo / "pyproject.toml").read_text() == before
    assert git(mini_repo, "status", "--porcelain") == ""


def _copy_real_repo(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git(dest, "init", "-q", "-b", "main")
    return dest


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_scaffold_passes_its_nox_tests_and_lint(tmp_path):
    """The done-when of the workspace issue: new-package output passes tests(<new>) and lint."""
    root = _copy_real_repo(tmp_path / "repo")
    proc = new_package(
        root,
        "demo-paper",
        "--title",
        'A demo paper: it\'s "quoted" and long enough to need more than one hundred characters on a line',
        "--arxiv",
        "2410.99999",
    )
    assert proc.returncode == 0, proc.stderr
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    for session in ("tests(demo-paper)", "lint"):
        run = subprocess.run(
            [sys.executable, "-m", "nox", "-s", session],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        assert run.returncode == 0, (
            f"nox -s {session} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        )

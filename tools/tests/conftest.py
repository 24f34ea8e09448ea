"""Fixtures for the tools' tests: a small throw-away workspace in a git repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The tests import `git` and friends from this file; under --import-mode=importlib that needs
# the folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))

TOOLS = Path(__file__).resolve().parents[1]
REPO = TOOLS.parent

ROOT_PYPROJECT = textwrap.dedent(
    """\
    [tool.uv.workspace]
    members = ["packages/*", "integration"]

    [tool.uv.sources]
    paperbricks-core-kernels = { workspace = true }
    paperbricks-alpha = { workspace = true }
    paperbricks-beta = { workspace = true }

    [tool.importlinter]
    root_packages = ["paperbricks"]

    [[tool.importlinter.contracts]]
    id = "dependency-direction"
    name = "direction"
    type = "layers"
    layers = [
      "paperbricks.integration",
      "paperbricks.alpha | paperbricks.beta",
      "paperbricks.core_kernels",
    ]
    """
)

PKG_PYPROJECT = """\
[project]
name = "paperbricks-{folder}"
version = "{version}"
requires-python = ">=3.11"
dependencies = [{deps}]

[build-system]
requires = ["uv_build>=0.8,<0.14"]
build-backend = "uv_build"

[tool.uv.build-backend]
module-name = "paperbricks.{module}"
"""

CHANGELOG = """\
# Changelog

## [Unreleased]

### Added

- {note}

## [0.1.0] - 2026-01-01

### Added

- First release.
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


def write_package(
    root: Path, folder: str, version: str, deps: list[str], note: str | None = "A change."
) -> None:
    module = folder.replace("-", "_")
    pkg = root / "packages" / folder
    src = pkg / "src" / "paperbricks" / module
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (pkg / "pyproject.toml").write_text(
        PKG_PYPROJECT.format(
            folder=folder, version=version, module=module, deps=", ".join(f'"{d}"' for d in deps)
        )
    )
    (pkg / "CHANGELOG.md").write_text(
        CHANGELOG.format(note=note)
        if note
        else CHANGELOG.replace("### Added\n\n- {note}\n\n", "", 1)
    )


@pytest.fixture
def mini_repo(tmp_path: Path) -> Path:
    """core-kernels 0.1.0, alpha and beta (both on core-kernels >=0.1,<0.2), integration, tools/."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "pyproject.toml").write_text(ROOT_PYPROJECT)
    (root / "README.md").write_text("mini\n")
    write_package(root, "core-kernels", "0.1.0", [])
    write_package(root, "alpha", "0.1.0", ["paperbricks-core-kernels>=0.1,<0.2"])
    write_package(root, "beta", "0.2.3", ["paperbricks-core-kernels>=0.1,<0.2"], note=None)
    integ = root / "integration"
    (integ / "src" / "paperbricks" / "integration").mkdir(parents=True)
    (integ / "src" / "paperbricks" / "integration" / "__init__.py").write_text("")
    (integ / "pyproject.toml").write_text(
        '[project]\nname = "paperbricks-integration"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = [\n  "paperbricks-alpha",\n  "paperbricks-beta",\n  "paperbricks-core-kernels",\n]\n'
    )
    shutil.copytree(TOOLS, root / "tools", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root

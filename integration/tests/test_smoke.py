"""Every workspace package installs together, imports, and its declared entry points resolve."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def _pyproject(folder: str) -> dict:
    return tomllib.loads((ROOT / "packages" / folder / "pyproject.toml").read_text())


def test_workspace_has_packages():
    assert "core-kernels" in FOLDERS


@pytest.mark.parametrize("folder", FOLDERS)
def test_package_imports_with_its_version(folder):
    meta = _pyproject(folder)["project"]
    assert meta["name"] == f"paperbricks-{folder}", "distribution name must follow the folder name"
    module = importlib.import_module("paperbricks." + folder.replace("-", "_"))
    assert module.__version__ == md.version(meta["name"]) == meta["version"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_declared_entry_points_resolve(folder):
    declared = _pyproject(folder)["project"].get("entry-points", {})
    installed = {
        (ep.group, ep.name): ep for ep in md.distribution(f"paperbricks-{folder}").entry_points
    }
    for group, table in declared.items():
        for name, value in table.items():
            ep = installed.get((group, name))
            assert ep is not None, f"{group}:{name} is declared but not installed"
            assert ep.value == value
            obj = ep.load()
            if group == "pytest11":  # pytest plugins are modules
                assert inspect.ismodule(obj), f"{group}:{name} -> {value} is not a module"
            else:
                assert callable(obj), f"{group}:{name} -> {value} is not callable"


def test_no_paperbricks_namespace_init():
    """`paperbricks` is an implicit namespace package: no distribution may ship its __init__.py."""
    offenders = [str(p) for p in ROOT.glob("*/*/src/paperbricks/__init__.py")]
    offenders += [str(p) for p in ROOT.glob("integration/src/paperbricks/__init__.py")]
    assert offenders == []
    import paperbricks

    assert getattr(paperbricks, "__file__", None) is None

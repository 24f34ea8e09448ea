"""lazy_exports resolves names from submodules on first access and caches them."""

import sys
import types

import pytest

from paperbricks.core_kernels.lazy import lazy_exports
from paperbricks.core_kernels.testing import assert_lean_import


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    pkg = tmp_path / "lazyfake"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from paperbricks.core_kernels.lazy import lazy_exports\n"
        "_EXPORTS = {'answer': 'deep.mod', 'other': '.side'}\n"
        "__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=['side'])\n"
        "__all__ = list(_EXPORTS)\n"
    )
    (pkg / "deep").mkdir()
    (pkg / "deep" / "__init__.py").write_text("")
    (pkg / "deep" / "mod.py").write_text("LOADS = []\nanswer = 42\nLOADS.append(1)\n")
    (pkg / "side.py").write_text("other = 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m == "lazyfake" or m.startswith("lazyfake.")]:
        del sys.modules[name]


def test_names_load_on_first_access_and_are_cached(fake_package):
    import lazyfake

    assert "lazyfake.deep.mod" not in sys.modules
    assert lazyfake.answer == 42
    assert "lazyfake.deep.mod" in sys.modules
    assert "answer" in vars(lazyfake)  # cached: __getattr__ is not consulted again
    assert lazyfake.other == "x"


def test_submodules_and_dir(fake_package):
    import lazyfake

    assert isinstance(lazyfake.side, types.ModuleType)
    assert {"answer", "other", "side"} <= set(dir(lazyfake))


def test_unknown_name_raises_attribute_error_naming_the_module(fake_package):
    import lazyfake

    with pytest.raises(AttributeError, match="'lazyfake' has no attribute 'nope'"):
        lazyfake.nope  # noqa: B018


@pytest.mark.parametrize(
    ("exports", "match"),
    [({"not valid": "m"}, "identifier"), ({"ok": ""}, "submodule path"), ({"ok": "..."}, "path")],
)
def test_bad_tables_are_refused(exports, match):
    with pytest.raises(ValueError, match=match):
        lazy_exports("x", exports)


def test_import_is_lean():
    assert_lean_import("paperbricks.core_kernels.lazy")

"""The package imports leanly, reports its version and exposes what __all__ lists."""

import importlib.metadata as md

from paperbricks.core_kernels.testing import assert_lean_import


def test_version_matches_metadata():
    import paperbricks.mir as pkg

    assert pkg.__version__ == md.version("paperbricks-mir")


def test_import_is_lean():
    assert_lean_import("paperbricks.mir")


def test_public_names_resolve():
    import paperbricks.mir as pkg

    missing = [n for n in pkg.__all__ if not hasattr(pkg, n)]
    assert not missing
    assert len(set(pkg.__all__)) == len(pkg.__all__)
    assert pkg.PAPER["arxiv"] == "2410.07167"

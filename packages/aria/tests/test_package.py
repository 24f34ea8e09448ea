"""The package imports leanly, reports its version and answers its CLI command."""

import importlib.metadata as md

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing import assert_lean_import


def test_version_matches_metadata():
    import paperbricks.aria as pkg

    assert pkg.__version__ == md.version("paperbricks-aria")


def test_import_is_lean():
    assert_lean_import("paperbricks.aria")


def test_cli_info(capsys):
    assert main(["aria", "info"]) == 0
    assert "arXiv:2410.05993" in capsys.readouterr().out

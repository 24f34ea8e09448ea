"""The package imports leanly, reports its version and answers its CLI command."""

import importlib.metadata as md

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing import assert_lean_import


def test_version_matches_metadata():
    import paperbricks.pixtral as pkg

    assert pkg.__version__ == md.version("paperbricks-pixtral")


def test_import_is_lean():
    assert_lean_import("paperbricks.pixtral")


def test_cli_info(capsys):
    assert main(["pixtral", "info"]) == 0
    assert "arXiv:2410.07073" in capsys.readouterr().out

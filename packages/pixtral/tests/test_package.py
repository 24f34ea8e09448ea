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


def test_lazy_exports_resolve():
    import paperbricks.pixtral as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    assert pkg.num_image_tokens(1024, 1024) == 4160
    assert pkg.relaxed_correctness("45%", "0.45") == 1.0


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, paperbricks.pixtral; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The package imports leanly, reports its version and answers its CLI commands."""

import importlib.metadata as md
import json

import pytest

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing import assert_lean_import


def test_version_matches_metadata():
    import paperbricks.lmul as pkg

    assert pkg.__version__ == md.version("paperbricks-lmul")


def test_import_is_lean():
    assert_lean_import("paperbricks.lmul")


def test_public_surface():
    import paperbricks.lmul as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    assert {"lmul", "lmul_matmul", "LMulConfig", "error_table", "EnergyTable"} <= set(pkg.__all__)


def test_cli_info(capsys):
    assert main(["lmul", "info"]) == 0
    assert "arXiv:2410.00907" in capsys.readouterr().out


def test_cli_error_table(capsys, tmp_path):
    out = tmp_path / "t.md"
    argv = ["lmul", "error-table", "--bits", "3", "4", "--rounding", "trunc", "--semantics"]
    argv += ["bits", "--source", "normal", "--n", "2048", "--seed", "1", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| normal | L-Mul | 3 | 3 | bits | trunc | fp32 | 2048 |" in text
    assert "e4m3 mult" in text and "e5m2 mult" in text and "E4M3FN" in text
    assert out.read_text().strip() == text.split(f"wrote {out}")[0].strip()


def test_cli_energy(capsys, tmp_path):
    assert main(["lmul", "energy", "--shape", "2", "3", "4"]) == 0
    text = capsys.readouterr().out
    assert "Horowitz" in text and "fp32_mult" in text and "Assumptions" in text
    assert "| lmul-int32 | int32_add | 24 | -78.3 % |" in text  # 24 MACs x (0.1 + 0.9) pJ
    assert "skipped fp8" in text and "not a speed claim" in text
    # a user table and an explicit fp8 number
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"source": "mine", "entries": {"fp32_mult": 1.0, "fp32_add": 1.0}}))
    assert main(["lmul", "energy", "--shape", "1", "1", "1", "--table", str(table)]) == 0
    text = capsys.readouterr().out
    assert "Source: mine" in text and "skipped lmul-int32" in text
    assert main(["lmul", "energy", "--shape", "1", "2", "1", "--fp8-mult", "0.25"]) == 0
    assert "| fp8 | fp8_mult | 2.3 |" in capsys.readouterr().out


def test_cli_energy_needs_shape(capsys):
    with pytest.raises(SystemExit):
        main(["lmul", "energy"])
    assert "--shape" in capsys.readouterr().err


def test_cli_bench_runs_package_bench(capsys, monkeypatch):
    import paperbricks.lmul.bench as bench
    from paperbricks.core_kernels.testing import BenchResult

    seen = {}

    def fake_run(*, quick, device):
        seen.update(quick=quick, device=device)
        return [BenchResult("lmul x", "torch.mul", 2.0, 1.0, 0.5, "cpu")]

    monkeypatch.setattr(bench, "run", fake_run)
    assert main(["lmul", "bench", "--device", "cpu"]) == 0
    assert seen == {"quick": True, "device": "cpu"}
    assert "lmul x" in capsys.readouterr().out

"""The umbrella CLI: discovery through (monkeypatched) entry points, lazy imports, reproduce runs."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
import textwrap

import pytest

from paperbricks.core_kernels import cli, plugins
from paperbricks.core_kernels.plugins import DiscoveryError, discover

FAKE_PKG = textwrap.dedent(
    """
    import argparse
    from pathlib import Path

    from paperbricks.core_kernels.repro import ReproResult, new_figure

    def register(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)
        parser.set_defaults(func=lambda args: print("hello " * args.times) or 0)

    def good(*, seed: int, out_dir: Path, quick: bool) -> ReproResult:
        fig = new_figure()
        ax = fig.subplots()
        ax.plot([0, 1], [seed, seed + 1])
        path = out_dir / "curve.png"
        fig.savefig(path)
        return ReproResult(
            claim="x grows (Fig. 1)",
            verdict="reproduced",
            metrics={"slope": 1.0, "seed": seed, "quick": quick},
            summary="slope 1.0 > 0",
            figures=[path],
        )

    def broken(*, seed: int, out_dir: Path, quick: bool) -> ReproResult:
        raise RuntimeError("deliberately broken")

    def wrong_type(*, seed: int, out_dir: Path, quick: bool):
        return {"verdict": "reproduced"}
    """
)


@pytest.fixture
def fake_eps(tmp_path, monkeypatch):
    """Install a fake paper package module and a controllable entry-point table."""
    modname = "fake_paper_pkg_for_cli_tests"
    (tmp_path / f"{modname}.py").write_text(FAKE_PKG)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(modname, None)
    table: dict[str, list[md.EntryPoint]] = {group: [] for group in plugins.GROUPS.values()}

    def add(group: str, name: str, attr: str) -> None:
        table[plugins.GROUPS[group]].append(
            md.EntryPoint(name, f"{modname}:{attr}", plugins.GROUPS[group])
        )

    monkeypatch.setattr(plugins, "_entry_points", lambda group: list(table[group]))
    add.modname = modname
    return add


def test_reproduce_with_nothing_registered(fake_eps, tmp_path, capsys):
    rc = cli.main(["reproduce", "--out", str(tmp_path / "out")])
    assert rc == 0
    assert "no reproductions are registered" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_reproduce_writes_report_json_and_figure(fake_eps, tmp_path, capsys):
    fake_eps("reproductions", "fake.good", "good")
    out = tmp_path / "out"
    rc = cli.main(["reproduce", "--out", str(out), "--seed", "7"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fake.good" in text and "reproduced" in text
    data = json.loads((out / "results.json").read_text())
    (res,) = data["results"]
    assert res["status"] == "ok" and res["verdict"] == "reproduced"
    assert res["metrics"] == {"slope": 1.0, "seed": 7, "quick": True}
    assert data["seed"] == 7 and data["mode"] == "quick"
    assert res["figures"] == ["fake.good/curve.png"]
    png = out / "fake.good" / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "x grows (Fig. 1)" in report and "![curve](fake.good/curve.png)" in report


def test_reproduce_full_mode_is_passed_through(fake_eps, tmp_path):
    fake_eps("reproductions", "fake.good", "good")
    assert cli.main(["reproduce", "--full", "--out", str(tmp_path / "o")]) == 0
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert data["mode"] == "full" and data["results"][0]["metrics"]["quick"] is False


def test_reproduce_error_is_reported_and_run_continues(fake_eps, tmp_path, capsys):
    fake_eps("reproductions", "fake.broken", "broken")
    fake_eps("reproductions", "fake.good", "good")
    fake_eps("reproductions", "fake.wrong", "wrong_type")
    out = tmp_path / "out"
    rc = cli.main(["reproduce", "--out", str(out)])
    assert rc == 1
    data = json.loads((out / "results.json").read_text())
    status = {r["name"]: r["status"] for r in data["results"]}
    assert status == {"fake.broken": "error", "fake.good": "ok", "fake.wrong": "error"}
    errors = {r["name"]: r.get("error", "") for r in data["results"]}
    assert "deliberately broken" in errors["fake.broken"]
    assert "expected ReproResult" in errors["fake.wrong"]
    assert "| fake.broken | ERROR |" in (out / "report.md").read_text()
    assert "ERROR" in capsys.readouterr().out


def test_reproduce_selects_by_name_and_package(fake_eps, tmp_path):
    fake_eps("reproductions", "fake.good", "good")
    fake_eps("reproductions", "other.broken", "broken")
    assert cli.main(["reproduce", "fake", "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["reproduce", "fake.good", "--out", str(tmp_path / "b")]) == 0
    assert cli.main(["reproduce", "nosuch", "--out", str(tmp_path / "c")]) == 2


def test_reproduce_refuses_non_empty_out_without_force(fake_eps, tmp_path, capsys):
    fake_eps("reproductions", "fake.good", "good")
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "precious.txt"
    keep.write_text("user data")
    assert cli.main(["reproduce", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert keep.read_text() == "user data"
    assert cli.main(["reproduce", "--out", str(out), "--force"]) == 0
    assert keep.read_text() == "user data"


def test_package_command_is_loaded_lazily(fake_eps, capsys):
    fake_eps("commands", "fake", "register")
    modname = fake_eps.modname
    cli.build_parser()
    assert modname not in sys.modules, "building the parser must not import package commands"
    assert cli.main(["fake", "--times", "2"]) == 0
    assert modname in sys.modules
    assert "hello hello" in capsys.readouterr().out


def test_duplicate_names_fail_discovery(monkeypatch, capsys):
    group = plugins.GROUPS["reproductions"]
    eps = [md.EntryPoint("x.y", "a:f", group), md.EntryPoint("x.y", "b:g", group)]
    monkeypatch.setattr(plugins, "_entry_points", lambda g: eps if g == group else [])
    with pytest.raises(DiscoveryError, match="duplicate"):
        discover("reproductions")
    assert cli.main(["list"]) == 2
    assert "duplicate" in capsys.readouterr().err


def test_reproduction_names_need_a_package_prefix(monkeypatch):
    group = plugins.GROUPS["benchmarks"]
    monkeypatch.setattr(
        plugins,
        "_entry_points",
        lambda g: [md.EntryPoint("flat", "a:f", group)] if g == group else [],
    )
    with pytest.raises(DiscoveryError, match=r"<package>\.<name>"):
        discover("benchmarks")


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2


def test_bench_command_runs_registered_benchmarks(fake_eps, tmp_path, capsys, monkeypatch):
    from paperbricks.core_kernels.testing import BenchResult

    calls = []

    def fake_bench(*, quick, device):
        calls.append((quick, device))
        return [BenchResult("cand", "base", 1.0, 2.0, 2.0, "cpu")]

    import fake_paper_pkg_for_cli_tests as mod

    monkeypatch.setattr(mod, "fake_bench", fake_bench, raising=False)
    fake_eps("benchmarks", "fake.b", "fake_bench")
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--device", "cpu", "--json", str(out)]) == 0
    assert calls == [(True, "cpu")]
    rows = json.loads(out.read_text())
    assert rows[0]["benchmark"] == "fake.b" and rows[0]["speedup"] == 2.0


def test_console_script_list_runs_in_a_subprocess():
    """The installed `paperbricks` entry point works and lists this distribution."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from paperbricks.core_kernels.cli import main; raise SystemExit(main(['list']))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "paperbricks-core-kernels" in proc.stdout


def test_cli_import_is_lean():
    from paperbricks.core_kernels.testing import assert_lean_import

    assert_lean_import("paperbricks.core_kernels.cli")


def test_list_shows_version_and_paper(monkeypatch, capsys):
    import email.message

    class FakeDist:
        def __init__(self, name, version, summary, paper_url=None):
            self.metadata = email.message.Message()
            self.metadata["Name"] = name
            self.metadata["Summary"] = summary
            if paper_url:
                self.metadata["Project-URL"] = f"Paper, {paper_url}"
            self.version = version

    dists = {
        "paperbricks-core-kernels": FakeDist("paperbricks-core-kernels", "0.1.0", "Shared kernels"),
        "paperbricks-lmul": FakeDist(
            "paperbricks-lmul",
            "0.3.1",
            "L-Mul paper (arXiv:2410.00907)",
            "https://arxiv.org/abs/2410.00907",
        ),
    }
    monkeypatch.setattr(cli, "_installed_distributions", lambda: dists)
    monkeypatch.setattr(plugins, "_entry_points", lambda group: [])
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    lmul = next(line for line in lines if line.startswith("paperbricks-lmul"))
    assert "0.3.1" in lmul and "L-Mul paper (arXiv:2410.00907)" in lmul
    core = next(line for line in lines if line.startswith("paperbricks-core-kernels"))
    assert core.split()[2] == "-"

"""`paperbricks glee info|play|sweep|analyze` end to end on tiny grids; the package imports leanly."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing import assert_lean_import


def test_version_matches_metadata():
    import paperbricks.glee as pkg

    assert pkg.__version__ == md.version("paperbricks-glee")


def test_import_is_lean():
    assert_lean_import("paperbricks.glee")


def test_public_names_resolve():
    import paperbricks.glee as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018


def test_cli_info(capsys):
    assert main(["glee", "info"]) == 0
    assert "arXiv:2410.05254" in capsys.readouterr().out


def test_cli_play_spe_bargaining(capsys):
    args = ["glee", "play", "--family", "bargaining", "--set", "delta_alice=0.9"]
    assert main([*args, "--set", "delta_bob=0.9"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["outcome"]["rounds"] == 1
    assert last["metrics"]["self_gain_alice"] == pytest.approx(0.1 / 0.19)
    assert last["metrics"]["efficiency"] == pytest.approx(1.0)


def test_cli_play_persuasion_with_scripted_llm_buyer(tmp_path, capsys):
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps(['{"decision": "yes"}'] * 3))
    args = ["glee", "play", "--family", "persuasion", "--set", "rounds=3", "--p1", "bot:honest"]
    assert main([*args, "--p2", f"llm:scripted:{replies}"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["outcome"]["extra"]["sales"] == 3  # the scripted buyer always buys


def test_cli_play_rejects_bad_override(capsys):
    assert main(["glee", "play", "--family", "bargaining", "--set", "delta_alice=3"]) == 2
    assert "delta_alice" in capsys.readouterr().err


def test_cli_sweep_resume_and_analyze(tmp_path, capsys):
    out = tmp_path / "sweep"
    cmd = ["glee", "sweep", "--grid", "base", "--family", "negotiation", "--n", "2"]
    cmd += ["--p1", "bot:spe", "--p2", "bot:fair", "--out", str(out), "--no-progress"]
    assert main(cmd) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 13 * 2
    assert main(cmd) == 0  # rerun: nothing to do, nothing duplicated
    assert (out / "results.jsonl").read_text().splitlines() == lines
    capsys.readouterr()
    assert main(["glee", "analyze", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Regression-imputed" in text and "negotiation" in text
    assert (out / "analysis" / "effects_negotiation.png").exists()
    summary = json.loads((out / "analysis" / "summary.json").read_text())
    assert summary["raw"][0]["games"] == 26


def test_cli_sweep_refuses_unrelated_dir(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    cmd = ["glee", "sweep", "--family", "bargaining", "--n", "1", "--out", str(tmp_path)]
    assert main([*cmd, "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_cli_analyze_missing_dir(tmp_path, capsys):
    assert main(["glee", "analyze", str(tmp_path)]) == 2
    assert "results.jsonl" in capsys.readouterr().err

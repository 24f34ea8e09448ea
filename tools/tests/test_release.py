import shutil
import subprocess
import sys

import pytest
from conftest import git


def release(root, *args):
    return subprocess.run(
        [sys.executable, "tools/release", *args], cwd=root, capture_output=True, text=True
    )


def test_release_bumps_version_moves_notes_and_tags(mini_repo):
    proc = release(mini_repo, "alpha", "--bump", "minor", "--no-lock")
    assert proc.returncode == 0, proc.stderr
    py = (mini_repo / "packages/alpha/pyproject.toml").read_text()
    assert 'version = "0.2.0"' in py
    log = (mini_repo / "packages/alpha/CHANGELOG.md").read_text()
    unreleased = log.index("## [Unreleased]")
    new = log.index("## [0.2.0] - ")
    old = log.index("## [0.1.0] - 2026-01-01")
    assert unreleased < new < old
    assert "- A change." in log[new:old]
    assert "- A change." not in log[unreleased:new]
    assert git(mini_repo, "tag", "--list").split() == ["paperbricks-alpha-v0.2.0"]
    assert git(mini_repo, "status", "--porcelain") == ""
    assert "Release paperbricks-alpha 0.2.0" in git(mini_repo, "log", "-1", "--format=%s")


@pytest.mark.parametrize(
    ("part", "expected"), [("patch", "0.1.1"), ("minor", "0.2.0"), ("major", "1.0.0")]
)
def test_bump_parts(mini_repo, part, expected):
    proc = release(mini_repo, "alpha", "--bump", part, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"-> {expected}" in proc.stdout
    assert git(mini_repo, "status", "--porcelain") == ""  # dry run changes nothing


def test_refuses_dirty_tree(mini_repo):
    (mini_repo / "packages/alpha/new.txt").write_text("x")
    proc = release(mini_repo, "alpha", "--bump", "patch", "--no-lock")
    assert proc.returncode == 1 and "dirty" in proc.stderr


def test_refuses_empty_unreleased(mini_repo):
    proc = release(mini_repo, "beta", "--bump", "patch", "--no-lock")
    assert proc.returncode == 1 and "Unreleased section is empty" in proc.stderr
    assert 'version = "0.2.3"' in (mini_repo / "packages/beta/pyproject.toml").read_text()


def test_refuses_version_going_backwards(mini_repo):
    for v in ("0.1.0", "0.0.9"):
        proc = release(mini_repo, "alpha", "--version", v, "--no-lock")
        assert proc.returncode == 1 and "must go forward" in proc.stderr


def test_refuses_when_a_dependant_range_excludes_the_new_version(mini_repo):
    proc = release(mini_repo, "core-kernels", "--bump", "minor", "--no-lock")
    assert proc.returncode == 1
    assert "paperbricks-alpha requires paperbricks-core-kernels>=0.1,<0.2" in proc.stderr
    ok = release(mini_repo, "core-kernels", "--bump", "patch", "--no-lock")
    assert ok.returncode == 0, ok.stderr


def test_unknown_package(mini_repo):
    proc = release(mini_repo, "nope", "--bump", "patch")
    assert proc.returncode == 1 and "unknown package 'nope'" in proc.stderr


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_release_relocks(mini_repo):
    subprocess.run(["uv", "lock", "--offline"], cwd=mini_repo, check=True, capture_output=True)
    git(mini_repo, "add", "uv.lock")
    git(mini_repo, "commit", "-qm", "lock")
    proc = release(mini_repo, "alpha", "--bump", "patch")
    assert proc.returncode == 0, proc.stderr
    lock = (mini_repo / "uv.lock").read_text()
    i = lock.index('name = "paperbricks-alpha"')
    assert 'version = "0.1.1"' in lock[i : i + 100]
    assert (
        subprocess.run(
            ["uv", "lock", "--check", "--offline"], cwd=mini_repo, capture_output=True
        ).returncode
        == 0
    )

import json
import subprocess
import sys

from conftest import git


def changed(root, base="HEAD~1"):
    out = subprocess.run(
        [sys.executable, "tools/changed-packages", "--base", base],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def commit_file(root, path, text="x\n"):
    p = root / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", f"touch {path}")


def test_paper_package_change_selects_only_it(mini_repo):
    commit_file(mini_repo, "packages/alpha/src/paperbricks/alpha/x.py")
    assert changed(mini_repo) == ["alpha"]


def test_core_kernels_change_selects_everything(mini_repo):
    commit_file(mini_repo, "packages/core-kernels/src/paperbricks/core_kernels/x.py")
    assert changed(mini_repo) == ["alpha", "beta", "core-kernels"]


def test_root_tools_and_github_changes_select_everything(mini_repo):
    for path in ("README.md", "tools/new-thing", ".github/workflows/ci.yml"):
        commit_file(mini_repo, path, text=f"{path}\n")
        assert changed(mini_repo) == ["alpha", "beta", "core-kernels"], path


def test_integration_change_selects_no_package(mini_repo):
    commit_file(mini_repo, "integration/tests/test_x.py")
    assert changed(mini_repo) == []


def test_dependants_are_included(mini_repo):
    py = mini_repo / "packages" / "beta" / "pyproject.toml"
    py.write_text(
        py.read_text().replace("dependencies = [", 'dependencies = ["paperbricks-alpha", ')
    )
    git(mini_repo, "commit", "-qam", "beta depends on alpha")
    commit_file(mini_repo, "packages/alpha/README.md")
    assert changed(mini_repo) == ["alpha", "beta"]


def test_lines_format_and_bad_base(mini_repo):
    commit_file(mini_repo, "packages/beta/x.txt")
    out = subprocess.run(
        [sys.executable, "tools/changed-packages", "--base", "HEAD~1", "--format", "lines"],
        cwd=mini_repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "beta"
    bad = subprocess.run(
        [sys.executable, "tools/changed-packages", "--base", "no-such-ref"],
        cwd=mini_repo,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "no-such-ref" in bad.stderr

"""Repository files that must agree with each other."""

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", quick, flags=re.S)]


def test_quick_start_has_exactly_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds), cmds


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = _readme_commands()[1]
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    assert lines[-1] == test_cmd


def test_every_package_has_readme_changelog_and_typed_marker():
    for py in (REPO / "packages").glob("*/pyproject.toml"):
        pkg = py.parent
        module = pkg.name.replace("-", "_")
        assert (pkg / "README.md").is_file(), pkg.name
        assert "## [Unreleased]" in (pkg / "CHANGELOG.md").read_text(), pkg.name
        assert (pkg / "src" / "paperbricks" / module / "py.typed").is_file(), pkg.name
        assert not (pkg / "src" / "paperbricks" / "__init__.py").exists(), pkg.name


def test_readme_table_lists_every_package():
    text = (REPO / "README.md").read_text()
    for py in (REPO / "packages").glob("*/pyproject.toml"):
        assert f"`paperbricks-{py.parent.name}`" in text, py.parent.name

"""Helpers shared by the repository tools: reading the workspace's pyproject files.

Only the standard library is used, so the tools run with any Python 3.11+ (no uv sync needed).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

DIST_PREFIX = "paperbricks-"
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Package:
    folder: str
    path: Path
    name: str
    version: str
    dependencies: tuple[str, ...]  # workspace distributions this package depends on

    @property
    def module(self) -> str:
        return "paperbricks." + self.folder.replace("-", "_")


def repo_root(start: Path | None = None) -> Path:
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=start or Path.cwd(),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def requirement_name(req: str) -> str:
    m = _NAME_RE.match(req)
    if not m:
        raise ValueError(f"cannot parse requirement {req!r}")
    return m.group(1).lower().replace("_", "-")


def load_packages(root: Path) -> dict[str, Package]:
    """Every distribution under ``packages/``, keyed by folder name."""
    pkgs: dict[str, Package] = {}
    for py in sorted((root / "packages").glob("*/pyproject.toml")):
        data = tomllib.loads(py.read_text())
        proj = data["project"]
        deps = tuple(
            requirement_name(r)
            for r in proj.get("dependencies", [])
            if requirement_name(r).startswith(DIST_PREFIX)
        )
        pkgs[py.parent.name] = Package(
            py.parent.name, py.parent, proj["name"], proj["version"], deps
        )
    return pkgs


def dependants(pkgs: dict[str, Package], folders: set[str]) -> set[str]:
    """``folders`` plus every package that depends on them, transitively."""
    by_name = {p.name: f for f, p in pkgs.items()}
    out = set(folders)
    changed = True
    while changed:
        changed = False
        for f, p in pkgs.items():
            if f not in out and any(by_name.get(d) in out for d in p.dependencies):
                out.add(f)
                changed = True
    return out


def parse_version(v: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", v.strip())
    if not m:
        raise ValueError(f"version {v!r} is not MAJOR.MINOR.PATCH")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a simple comma-separated specifier (``>=0.1,<0.2``)."""
    v = parse_version(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|>|<|~=)\s*([\d.]+)", clause)
        if not m:
            raise ValueError(f"unsupported version clause {clause!r}")
        op, raw = m.groups()
        parts = [int(x) for x in raw.split(".")]
        target = tuple(([*parts, 0, 0, 0])[:3])
        if op == "~=":
            upper = list(parts[:-1])
            upper[-1] += 1
            ok = v >= target and v < tuple(([*upper, 0, 0, 0])[:3])
        else:
            ok = {
                ">=": v >= target,
                "<=": v <= target,
                "==": v == target,
                "!=": v != target,
                ">": v > target,
                "<": v < target,
            }[op]
        if not ok:
            return False
    return True


def dependency_specifier(pkg_pyproject: Path, dist: str) -> str | None:
    """The version specifier this package puts on ``dist`` (None when it does not depend on it)."""
    data = tomllib.loads(pkg_pyproject.read_text())
    for req in data["project"].get("dependencies", []):
        if requirement_name(req) == dist:
            return req[len(_NAME_RE.match(req).group(0)) :].split(";")[0].strip()
    return None

"""Every check a contributor or CI runs, one nox session each.

Plain ``uv run nox`` runs the default set: lint, tools, every package's tests, build and
integration. Each package's tests run in their own virtualenv made by
``uv sync --locked --package paperbricks-<folder> --group test``, so every test run also checks that
the package installs with only its own dependency closure. GPU tests are their own session.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
SRC_PATHS = [str(ROOT / "packages" / p / "src") for p in PACKAGES] + [
    str(ROOT / "integration" / "src")
]

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tools", "tests", "build", "integration"]

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _sync(session: nox.Session, *args: str) -> None:
    """``uv sync --locked`` into this session's own virtualenv."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


def _distribution(folder: str) -> str:
    return f"paperbricks-{folder}"


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package's CPU tests, in an environment holding only its dependency closure."""
    _sync(session, "--package", _distribution(package), "--group", "test")
    session.run(
        "python",
        "-m",
        "pytest",
        f"packages/{package}/tests",
        "-m",
        "not gpu and not slow",
        *session.posargs,
    )


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def gpu(session: nox.Session, package: str) -> None:
    """One package's GPU tests; REQUIRE_GPU=1 turns a missing GPU or a skip into a failure."""
    _sync(session, "--package", _distribution(package), "--group", "test")
    session.run(
        "python",
        "-m",
        "pytest",
        f"packages/{package}/tests",
        "-m",
        "gpu",
        *session.posargs,
        env={"REQUIRE_GPU": "1"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (check and format), the lock file, and the import-linter dependency contracts."""
    _sync(session, "--only-group", "dev")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("uv", "lock", "--check", external=True)
    session.run(
        "lint-imports",
        "--no-cache",
        "pyproject.toml",
        env={"PYTHONPATH": os.pathsep.join(SRC_PATHS)},
    )


@nox.session(python=PYTHON)
def tools(session: nox.Session) -> None:
    """Tests of the repository tools (release, changed-packages, new-package, gpu-check)."""
    # Every package installed: gpu-check's dry run imports core-kernels and torch.
    _sync(session, "--all-packages", "--group", "dev")
    session.run("python", "-m", "pytest", "tools/tests", *session.posargs)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build every member with --no-sources; install each wheel alone in a fresh venv and import it."""
    _sync(session, "--only-group", "dev")
    with tempfile.TemporaryDirectory(prefix="paperbricks-build-") as tmp:
        dist = Path(tmp) / "dist"
        session.run(
            "uv", "build", "--all-packages", "--no-sources", "--out-dir", str(dist), external=True
        )
        wheels = sorted(dist.glob("*.whl"))
        expected = {_distribution(p).replace("-", "_") for p in PACKAGES} | {
            "paperbricks_integration"
        }
        built = {w.name.split("-")[0] for w in wheels}
        if built != expected:
            session.error(f"built wheels {sorted(built)} but expected {sorted(expected)}")
        for wheel in wheels:
            name = wheel.name.split("-")[0]
            module = "paperbricks." + name.removeprefix("paperbricks_")
            venv = Path(tmp) / f"venv-{name}"
            session.run("uv", "venv", "--quiet", "--python", PYTHON, str(venv), external=True)
            py = str(venv / "bin" / "python")
            # Sibling packages resolve from the freshly built wheels, never from the source tree.
            session.run(
                "uv",
                "pip",
                "install",
                "--quiet",
                "--python",
                py,
                "--find-links",
                str(dist),
                str(wheel),
                external=True,
            )
            session.run(
                py,
                "-c",
                f"import {module}; print('{module}', getattr({module}, '__version__', ''))",
                external=True,
            )
            if name == "paperbricks_core_kernels":
                session.run(str(venv / "bin" / "paperbricks"), "list", external=True)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """End-to-end tests over every package installed together."""
    _sync(session, "--package", "paperbricks-integration", "--group", "test")
    session.run(
        "python",
        "-m",
        "pytest",
        "integration/tests",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def reproduce(session: nox.Session) -> None:
    """A quick run of every registered reproduction (the main job), into reproduce-out/."""
    _sync(session, "--package", "paperbricks-integration")
    session.run("paperbricks", "reproduce", "--quick", *session.posargs)

"""Entry-point discovery for the umbrella ``paperbricks`` command.

Three groups connect the paper packages to the command without core-kernels importing them:

- ``paperbricks.commands``: name = package folder (``lmul``), value = ``module:register`` where
  ``register(parser: argparse.ArgumentParser) -> None`` adds the package's arguments/subcommands
  and sets ``func`` (``func(args) -> int``) through ``parser.set_defaults``.
- ``paperbricks.reproductions``: name = ``<folder>.<name>``, value = a function
  ``fn(*, seed: int, out_dir: pathlib.Path, quick: bool) -> ReproResult``.
- ``paperbricks.benchmarks``: name = ``<folder>.<name>``, value = a function
  ``fn(*, quick: bool, device: str) -> list[BenchResult]``.

Nothing is imported until :meth:`Plugin.load` is called.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
from dataclasses import dataclass
from typing import Any

__all__ = ["GROUPS", "DiscoveryError", "Plugin", "discover"]

GROUPS = {
    "commands": "paperbricks.commands",
    "reproductions": "paperbricks.reproductions",
    "benchmarks": "paperbricks.benchmarks",
}


class DiscoveryError(RuntimeError):
    """Two installed distributions register the same name, or a name is malformed."""


@dataclass(frozen=True)
class Plugin:
    """One registered entry point, not yet imported."""

    name: str
    value: str  # "module:attr"
    dist: str  # distribution that registered it ("?" when unknown)

    @property
    def package(self) -> str:
        """The package folder the plugin belongs to (the part of the name before the first dot)."""
        return self.name.split(".", 1)[0]

    def load(self) -> Any:
        module, _, attr = self.value.partition(":")
        obj = importlib.import_module(module.strip())
        for part in attr.strip().split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


def _entry_points(group: str) -> list[md.EntryPoint]:
    """Installed entry points of ``group`` (the seam tests monkeypatch)."""
    return list(md.entry_points(group=group))


def discover(kind: str) -> dict[str, Plugin]:
    """Registered plugins of ``kind`` (``"commands"``, ``"reproductions"`` or ``"benchmarks"``).

    Raises:
        DiscoveryError: when two different registrations share a name, or a reproduction or
            benchmark name is not of the form ``<package>.<name>``.
    """
    if kind not in GROUPS:
        raise ValueError(f"kind: expected one of {sorted(GROUPS)}, got {kind!r}")
    found: dict[str, Plugin] = {}
    for ep in _entry_points(GROUPS[kind]):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
        plugin = Plugin(ep.name, ep.value, dist)
        if kind != "commands" and "." not in ep.name:
            raise DiscoveryError(
                f"{GROUPS[kind]} entry point {ep.name!r} from {dist} must be named '<package>.<name>'"
            )
        prev = found.get(ep.name)
        if prev is not None and (prev.value, prev.dist) != (plugin.value, plugin.dist):
            raise DiscoveryError(
                f"duplicate {GROUPS[kind]} name {ep.name!r}: {prev.value} (from {prev.dist}) and "
                f"{plugin.value} (from {plugin.dist})"
            )
        found[ep.name] = plugin
    return dict(sorted(found.items()))

"""The reproduction runner behind ``paperbricks reproduce`` (the project's main job).

Each paper package registers tiny-scale reproductions of its paper's headline claims under the
entry-point group ``paperbricks.reproductions`` (see :mod:`.plugins`). A reproduction is a function
``fn(*, seed: int, out_dir: Path, quick: bool) -> ReproResult``: it runs the experiment, writes any
figures into ``out_dir`` and returns the measured numbers with a verdict. The runner calls them
one by one, records errors without stopping, and writes ``report.md`` and ``results.json``.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .plugins import Plugin

__all__ = [
    "VERDICTS",
    "ReproResult",
    "RunRecord",
    "new_figure",
    "run_reproductions",
    "write_report",
]

logger = logging.getLogger(__name__)

Verdict = Literal["reproduced", "not reproduced", "inconclusive"]
VERDICTS: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive")


@dataclass
class ReproResult:
    """What one reproduction measured.

    Attributes:
        claim: the paper's claim being checked, in one sentence, with its source (section/table).
        verdict: ``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"`` (e.g. seed noise
            larger than the effect at this scale).
        metrics: the measured numbers (name -> value); what the verdict was decided from.
        summary: one line saying what was measured and how the verdict follows from it.
        figures: PNG files written under the ``out_dir`` the function was given.
        seed_noisy: True when the outcome depends on the seed at this scale (the report says so).
        device: where it ran, when it differs from the runner's default device.
    """

    claim: str
    verdict: Verdict
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    figures: list[Path] = field(default_factory=list)
    seed_noisy: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {VERDICTS}, got {self.verdict!r}")
        if not self.claim:
            raise ValueError("claim: a reproduction must state the claim it checks")


@dataclass
class RunRecord:
    """One row of the run: the result, or the error that stopped the reproduction."""

    name: str
    status: Literal["ok", "error"]
    wall_s: float
    result: ReproResult | None = None
    error: str | None = None

    def to_json(self, root: Path) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "wall_s": round(self.wall_s, 3),
        }
        if self.result is not None:
            r = self.result
            out.update(
                claim=r.claim,
                verdict=r.verdict,
                metrics=_jsonable(r.metrics),
                summary=r.summary,
                seed_noisy=r.seed_noisy,
                device=r.device,
                figures=[_rel(p, root) for p in r.figures],
            )
        if self.error is not None:
            out["error"] = self.error
        return out


def _rel(p: Path, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | int | str) or x is None:
        return x
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else str(x)
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _jsonable(x.item())
    return str(x)


def default_device() -> str:
    import torch

    return (
        torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    )


def run_reproductions(
    plugins: Iterable[Plugin],
    out_dir: Path,
    *,
    seed: int = 0,
    quick: bool = True,
    on_start: Callable[[int, int, Plugin], None] | None = None,
    on_done: Callable[[int, int, RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Run each reproduction in turn; a reproduction that raises is recorded and the run goes on.

    Each one gets its own folder ``out_dir/<name>/`` for figures.
    """
    plugins = list(plugins)
    records: list[RunRecord] = []
    for i, plugin in enumerate(plugins, 1):
        if on_start:
            on_start(i, len(plugins), plugin)
        sub = out_dir / plugin.name
        sub.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            fn = plugin.load()
            result = fn(seed=seed, out_dir=sub, quick=quick)
            if not isinstance(result, ReproResult):
                raise TypeError(
                    f"{plugin.value} returned {type(result).__name__}, expected ReproResult"
                )
            rec = RunRecord(plugin.name, "ok", time.perf_counter() - t0, result=result)
        except Exception:  # a failing reproduction must not stop the others
            logger.exception("reproduction %s failed", plugin.name)
            rec = RunRecord(
                plugin.name, "error", time.perf_counter() - t0, error=traceback.format_exc()
            )
        records.append(rec)
        if on_done:
            on_done(i, len(plugins), rec)
    return records


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(
    records: list[RunRecord], out_dir: Path, *, seed: int, quick: bool, versions: dict[str, str]
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``results.json`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    device = default_device()
    payload = {
        "created": now,
        "seed": seed,
        "mode": "quick" if quick else "full",
        "device": device,
        "python": platform.python_version(),
        "versions": versions,
        "results": [r.to_json(out_dir) for r in records],
    }
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")

    lines = [
        "# paperbricks reproduction report",
        "",
        f"- created: {now}",
        f"- mode: {payload['mode']}, seed: {seed}",
        f"- device: {device}, Python {payload['python']}",
        "- packages: " + (", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "none"),
        "",
        "| reproduction | verdict | seconds | summary |",
        "|---|---|---|---|",
    ]
    for r in records:
        if r.result is not None:
            verdict = r.result.verdict + (" (seed-noisy)" if r.result.seed_noisy else "")
            summary = r.result.summary.replace("|", "\\|")
        else:
            verdict, summary = "ERROR", (r.error or "").strip().splitlines()[-1].replace("|", "\\|")
        lines.append(f"| {r.name} | {verdict} | {r.wall_s:.1f} | {summary} |")
    for r in records:
        lines += ["", f"## {r.name}", ""]
        if r.result is None:
            lines += ["The reproduction raised:", "", "```", (r.error or "").rstrip(), "```"]
            continue
        res = r.result
        lines += [f"**Claim.** {res.claim}", "", f"**Verdict.** {res.verdict}. {res.summary}"]
        if res.seed_noisy:
            lines += [
                "",
                "The outcome depends on the seed at this scale; read the spread, not one number.",
            ]
        if res.metrics:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in res.metrics.items()]
        for fig in res.figures:
            rel = _rel(fig, out_dir)
            lines += ["", f"![{Path(rel).stem}]({rel})"]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, json_path


def new_figure(*, figsize: tuple[float, float] = (5.0, 3.5)) -> Any:
    """A matplotlib ``Figure`` made without pyplot (no global state, no GUI backend needed).

    Reproductions draw on it and save with ``fig.savefig(out_dir / "name.png", dpi=120)``.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")

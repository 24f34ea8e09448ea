"""The umbrella ``paperbricks`` command (argparse, stdlib only at import time).

Built-in subcommands: ``list``, ``reproduce`` and ``bench``. Every installed paper package adds its
own subcommand through the ``paperbricks.commands`` entry-point group (see :mod:`.plugins`); a
package is imported only when its subcommand runs, so ``paperbricks --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .plugins import DiscoveryError, Plugin, discover

__all__ = ["build_parser", "main"]


def _installed_distributions() -> dict[str, md.Distribution]:
    dists: dict[str, md.Distribution] = {}
    for d in md.distributions():
        name = (d.metadata["Name"] or "").lower()
        if name.startswith("paperbricks-") and name not in dists:
            dists[name] = d
    return dict(sorted(dists.items()))


def _paper_url(dist: md.Distribution) -> str:
    for entry in dist.metadata.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "paper":
            return url.strip()
    return ""


def _cmd_list(args: argparse.Namespace) -> int:
    dists = _installed_distributions()
    if not dists:
        print("no paperbricks packages installed")
        return 0
    commands, repros, benches = (
        discover("commands"),
        discover("reproductions"),
        discover("benchmarks"),
    )
    rows = [("distribution", "version", "paper", "command", "reproductions", "benchmarks")]
    for name, dist in dists.items():
        n_repro = sum(p.dist.lower() == name for p in repros.values())
        n_bench = sum(p.dist.lower() == name for p in benches.values())
        cmd = ", ".join(p.name for p in commands.values() if p.dist.lower() == name) or "-"
        # Paper packages carry a "Paper" project URL and describe themselves as "Title (arXiv:id)".
        paper = (dist.metadata["Summary"] or _paper_url(dist)) if _paper_url(dist) else "-"
        rows.append((name, dist.version, paper, cmd, str(n_repro), str(n_bench)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _select(available: dict[str, Plugin], names: list[str], what: str) -> list[Plugin]:
    """Plugins matching ``names`` (full names or package prefixes); all when ``names`` is empty."""
    if not names:
        return list(available.values())
    chosen: dict[str, Plugin] = {}
    unknown = []
    for n in names:
        hits = [p for k, p in available.items() if k == n or p.package == n]
        if not hits:
            unknown.append(n)
        for p in hits:
            chosen[p.name] = p
    if unknown:
        known = ", ".join(available) or "none installed"
        raise ValueError(
            f"paperbricks: unknown {what} {', '.join(map(repr, unknown))} (available: {known})"
        )
    return list(chosen.values())


def _versions() -> dict[str, str]:
    return {name: d.version for name, d in _installed_distributions().items()}


def _default_out() -> Path:
    return Path("reproduce-out") / datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .repro import run_reproductions, write_report

    available = discover("reproductions")
    if not available:
        print(
            "no reproductions are registered: install a paperbricks paper package "
            "(e.g. `pip install paperbricks-lmul`) to get its reproductions"
        )
        return 0
    try:
        plugins = _select(available, args.names, "reproduction")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out is not None else _default_out()
    if out.exists() and any(out.iterdir()) and not args.force:
        print(
            f"paperbricks: output folder {out} exists and is not empty; choose another --out "
            "or pass --force to write into it",
            file=sys.stderr,
        )
        return 2
    quick = not args.full
    print(
        f"running {len(plugins)} reproduction(s), {'quick' if quick else 'full'} mode, seed {args.seed} -> {out}"
    )
    header = f"{'reproduction':<36} {'verdict':<16} {'seconds':>8}  summary"
    t0 = time.perf_counter()

    def on_start(i: int, n: int, p: Plugin) -> None:
        print(f"[{i}/{n}] {p.name} ...", flush=True)

    def on_done(i: int, n: int, rec) -> None:
        if i == 1:
            print(header)
        verdict = rec.result.verdict if rec.result is not None else "ERROR"
        summary = (
            rec.result.summary if rec.result is not None else rec.error.strip().splitlines()[-1]
        )
        print(f"{rec.name:<36} {verdict:<16} {rec.wall_s:8.1f}  {summary}", flush=True)

    records = run_reproductions(
        plugins, out, seed=args.seed, quick=quick, on_start=on_start, on_done=on_done
    )
    md_path, json_path = write_report(
        records, out, seed=args.seed, quick=quick, versions=_versions()
    )
    n_err = sum(r.status == "error" for r in records)
    print(f"done in {time.perf_counter() - t0:.1f} s: wrote {md_path} and {json_path}")
    if n_err:
        print(f"{n_err} reproduction(s) raised an error (see the report)", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    available = discover("benchmarks")
    if not available:
        print("no benchmarks are registered")
        return 0
    try:
        plugins = _select(available, args.names, "benchmark")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    rows, failed = [], 0
    for p in plugins:
        print(f"== {p.name}", flush=True)
        try:
            results = p.load()(quick=not args.full, device=args.device)
        except Exception as exc:  # report and go on to the next benchmark
            failed += 1
            print(f"   ERROR: {type(exc).__name__}: {exc}", flush=True)
            rows.append({"benchmark": p.name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for r in results:
            print("   " + r.row(), flush=True)
            rows.append({"benchmark": p.name, **r.as_dict()})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The full parser. Only the package command named ``load`` (if any) is imported."""
    try:
        from . import __version__
    except ImportError:  # pragma: no cover
        __version__ = "?"
    parser = argparse.ArgumentParser(
        prog="paperbricks",
        description="Implementations of October-2024 ML papers: run reproductions, benchmarks and package tools.",
    )
    parser.add_argument(
        "--version", action="version", version=f"paperbricks-core-kernels {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="installed paperbricks packages with version and paper")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "reproduce", help="run the registered tiny-scale reproductions (the main job)"
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="reproductions or packages to run (default: all)"
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: reproduce-out/run-<UTC time>)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", default=True, help="small budget (default)")
    mode.add_argument("--full", action="store_true", help="the larger budget the package documents")
    p.add_argument(
        "--seed", type=int, default=0, help="seed passed to every reproduction (default 0)"
    )
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "bench", help="run the registered benchmarks (ratios against named baselines)"
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="benchmarks or packages to run (default: all)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--full", action="store_true", help="larger sizes")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=_cmd_bench)

    for name, plugin in discover("commands").items():
        cp = sub.add_parser(name, help=f"commands of {plugin.dist}")
        if name == load:
            plugin.load()(cp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(load=first)
    except DiscoveryError as exc:
        print(f"paperbricks: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        if args.command is None:
            parser.print_help()
            return 0
        parser.parse_args([args.command, "--help"])
        return 0
    try:
        return int(args.func(args) or 0)
    except DiscoveryError as exc:
        print(f"paperbricks: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

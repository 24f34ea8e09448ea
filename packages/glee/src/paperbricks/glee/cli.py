"""`paperbricks glee ...`: play one game, run resumable sweeps, analyse sweep directories.

Subcommands:

- ``info``: version and paper.
- ``play --family F --p1 SPEC --p2 SPEC``: one game, printed as a transcript and a metrics line.
- ``sweep --grid official|base --family F --n N --out DIR``: every configuration of the grid N
  times, appended game by game to ``DIR/results.jsonl`` (rerun the same command to resume).
- ``analyze DIR``: raw and regression-imputed metric tables and marginal-effect plots.

Player specs: ``bot:spe`` (the family's game-theoretic solution: Rubinstein SPE, negotiation SPE,
commitment-optimal seller / Bayesian buyer), ``bot:random``, ``bot:fair`` (fair split),
``bot:honest`` (persuasion seller), ``bot:trusting`` (persuasion buyer that follows the signal),
``llm:SPEC`` with SPEC for :func:`paperbricks.core_kernels.llm.backend_from_spec`
(``openai@URL#model``, ``hf:PATH``, ``scripted:FILE``), ``choice:hf:PATH`` (choice scoring with a
local model, always legal) and ``http:URL`` (a GLEE ``/chat`` bot).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

FAMILIES = ("bargaining", "negotiation", "persuasion")


def _info(args: argparse.Namespace) -> int:
    from . import PAPER, __version__

    print(f"paperbricks-glee {__version__}: {PAPER['title']} (arXiv:{PAPER['arxiv']})")
    return 0


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set: expected KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _play(args: argparse.Namespace) -> int:
    import dataclasses

    from .config import BASE_CONFIG
    from .metrics import game_metrics
    from .runner import outcome_record, play_game, player_from_spec

    try:
        cfg = dataclasses.replace(BASE_CONFIG[args.family], **_overrides(args.set))
    except (TypeError, ValueError) as e:
        print(f"error: --set: {e}", file=sys.stderr)
        return 2
    players = (
        player_from_spec(args.p1, args.family, "alice", seed=args.seed),
        player_from_spec(args.p2, args.family, "bob", seed=args.seed + 1),
    )
    outcome, transcript = play_game(cfg, players, args.seed)
    for event in transcript:
        print(json.dumps(event, default=str))
    metrics = game_metrics(outcome_record(cfg, outcome))
    print(json.dumps({"outcome": dataclasses.asdict(outcome), "metrics": metrics}, default=str))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .config import official_grid
    from .runner import base_grid, player_from_spec, sweep

    grid = list(official_grid(args.family) if args.grid == "official" else base_grid(args.family))
    label = f"{args.p1} vs {args.p2}"

    def factory(cfg: Any, seed: int) -> tuple[Any, Any]:
        return (
            player_from_spec(args.p1, args.family, "alice", seed=seed),
            player_from_spec(args.p2, args.family, "bob", seed=seed + 1),
        )

    try:
        rows = sweep(
            grid,
            factory,
            args.n,
            args.out,
            seed=args.seed,
            progress=not args.no_progress,
            players_label=label,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(rows)} games of {len(grid) * args.n} in {args.out}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .runner import analyze

    try:
        report = analyze(
            args.dir,
            glee_compat=args.glee_compat,
            impute=not args.no_impute,
            plots=not args.no_plots,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report["markdown"])
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Add this package's subcommands to its `paperbricks glee` parser."""
    sub = parser.add_subparsers(dest="glee_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("info", help="version and paper of this package")
    p.set_defaults(func=_info)

    def players(q: argparse.ArgumentParser) -> None:
        q.add_argument("--family", choices=FAMILIES, required=True)
        q.add_argument("--p1", default="bot:spe", help="Alice (proposer/seller); default bot:spe")
        q.add_argument("--p2", default="bot:spe", help="Bob (responder/buyer); default bot:spe")
        q.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("play", help="play one game and print its transcript and metrics")
    players(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the family's base configuration (JSON value), repeatable",
    )
    p.set_defaults(func=_play)

    p = sub.add_parser("sweep", help="play a parameter grid N times, resumable")
    players(p)
    p.add_argument(
        "--grid",
        choices=("official", "base"),
        default="base",
        help="official: the full factorial grid; base: the base configuration and every "
        "one-parameter variation of it within the official values (default)",
    )
    p.add_argument("--n", type=int, default=30, help="games per configuration (default 30)")
    p.add_argument("--out", required=True, help="sweep directory (new, or one to resume)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("analyze", help="metric tables, regression imputation and plots of a sweep")
    p.add_argument("dir", help="a sweep directory")
    p.add_argument("--glee-compat", action="store_true", help="the official metric formulas")
    p.add_argument("--no-impute", action="store_true", help="raw means only")
    p.add_argument("--no-plots", action="store_true", help="write no PNG files")
    p.set_defaults(func=_analyze)

"""Playing games and resumable sweeps over parameter grids (GLEE's `main.py` and its YAML sweeps).

GLEE runs one game per process from a YAML file and relies on the file system to know which games
of a sweep are done. Here a sweep is one call: every game has a deterministic id, a hash of its
configuration, its repetition index and the sweep seed, and every finished game is appended to
``results.jsonl`` as one complete line written with flush + fsync. An interrupted sweep (Ctrl-C, a
crashed LLM server, a player that raises) is rerun with the same arguments and plays only the
games whose ids are not in the file yet, so nothing is redone, lost or duplicated. A torn last
line left by a crash mid-write is cut off before appending.

What differs from the official code: per-game seeds are derived from the sweep seed and the game
id (not from the global ``random`` module), so a game's outcome does not depend on which games ran
before it, and the sweep records its player labels in ``sweep.json`` and refuses to resume a
directory that was swept with other players, another seed or another round limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS",
    "RESULTS_FILE",
    "SWEEP_FILE",
    "analyze",
    "base_grid",
    "game_id",
    "game_seed",
    "load_results",
    "outcome_record",
    "play_game",
    "player_from_spec",
    "sweep",
]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SWEEP_FILE = "sweep.json"
_FORMAT_VERSION = 1

#: The per-game metrics (see :func:`paperbricks.glee.metrics.game_metrics`) and their clip ranges
#: for imputation (None: unclipped; negotiation self-gains can be negative).
METRICS: dict[str, tuple[float, float] | None] = {
    "self_gain_alice": None,
    "self_gain_bob": None,
    "efficiency": (0.0, 1.0),
    "fairness": (0.0, 1.0),
}


def _config_dict(config: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config: expected a game config dataclass, got {type(config).__name__}")
    d = dataclasses.asdict(config)
    d.setdefault("family", _family(config))
    return d


def _family(config: Any) -> str:
    fam = getattr(config, "family", None)
    if isinstance(fam, str):
        return fam
    name = type(config).__name__.lower()
    for f in ("bargaining", "negotiation", "persuasion"):
        if name.startswith(f):
            return f
    raise TypeError(f"config: cannot tell the game family of {type(config).__name__}")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def game_id(config: Any, repetition: int, seed: int) -> str:
    """The deterministic id of repetition ``repetition`` of ``config`` in a sweep seeded ``seed``.

    Args:
        config: a game config dataclass (``BargainingConfig``, ``NegotiationConfig`` or
            ``PersuasionConfig``).
        repetition: the repetition index, an int >= 0.
        seed: the sweep seed (int).

    Returns:
        a 16-character hex string, stable across processes and Python versions.

    Examples:
        >>> from paperbricks.glee import BASE_CONFIG, game_id
        >>> game_id(BASE_CONFIG["bargaining"], 0, 0) == game_id(BASE_CONFIG["bargaining"], 0, 0)
        True
    """
    if not isinstance(repetition, int) or repetition < 0:
        raise ValueError(f"repetition: expected an int >= 0, got {repetition!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    key = _canonical({"config": _config_dict(config), "rep": repetition, "seed": seed})
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def game_seed(gid: str) -> int:
    """The per-game seed derived from a game id (a 63-bit int)."""
    return int(hashlib.sha256(("seed:" + gid).encode()).hexdigest()[:15], 16)


def _new_game(config: Any, seed: int) -> Any:
    from .games import make_game

    return make_game(config, seed=seed)


def play_game(
    config: Any,
    players: Sequence[Any],
    seed: int,
    *,
    max_steps: int = 100_000,
) -> tuple[Any, list[dict[str, Any]]]:
    """Play one game between two players and return its outcome and transcript.

    Args:
        config: a game config dataclass; its family picks the game class.
        players: ``(alice, bob)``, objects with ``act(game_view) -> action`` (the ``Player``
            protocol): rational bots, ``LLMPlayer``, ``GLEEHttpPlayer`` ... Alice is the proposer
            in bargaining, the seller in negotiation and persuasion.
        seed: seeds all of the game's randomness (persuasion qualities); int.
        max_steps: a guard against players that never end a game (int, default 100000).

    Returns:
        ``(outcome, transcript)``: the game's ``Outcome`` and its list of transcript events.

    Raises:
        ValueError: not exactly two players, or the game did not end within ``max_steps``.

    Examples:
        >>> from paperbricks.glee import BASE_CONFIG, RubinsteinSPEBot, play_game
        >>> cfg = BASE_CONFIG["bargaining"]
        >>> out, _ = play_game(cfg, (RubinsteinSPEBot(), RubinsteinSPEBot()), seed=0)
        >>> out.agreed, out.rounds
        (True, 1)
    """
    if len(players) != 2:
        raise ValueError(f"players: expected (alice, bob), got {len(players)} players")
    if not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    game = _new_game(config, seed)
    for p in players:
        reset = getattr(p, "reset", None)
        if callable(reset):
            reset()
    steps = 0
    while not game.done:
        if steps >= max_steps:
            raise ValueError(f"max_steps: the game did not end within {max_steps} steps")
        who = game.current_player
        view = game.observation(who)
        action = players[_index(who)].act(view)
        game.apply(action)
        steps += 1
    return game.outcome(), list(game.transcript)


def _index(who: Any) -> int:
    if isinstance(who, int):
        return who
    return {"alice": 0, "bob": 1}[str(who).lower()]


def _repair_tail(path: Path) -> None:
    """Cut a torn last line (a crash mid-write) so the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    logger.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - cut)
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def load_results(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the finished games of a sweep directory (one dict per game, file order).

    A torn last line is ignored; a game id seen twice (never written by :func:`sweep`, but
    possible in hand-merged files) keeps its first record.
    """
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"out_dir: no {RESULTS_FILE} in {out_dir}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        if not line.strip():
            continue
        row = json.loads(line)
        if row["game_id"] in seen:
            continue
        seen.add(row["game_id"])
        rows.append(row)
    return rows


def _append_line(path: Path, row: Mapping[str, Any]) -> None:
    line = json.dumps(row, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _json_default(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    if isinstance(x, set | frozenset | tuple):
        return list(x)
    return str(x)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sweep(
    grid: Iterable[Any],
    players_factory: Callable[[Any, int], Sequence[Any]],
    n: int,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    progress: bool = True,
    *,
    players_label: str = "",
    transcripts: bool = True,
) -> list[dict[str, Any]]:
    """Play ``n`` games per configuration of ``grid`` and append each result to ``out_dir``.

    Resumable: games already in ``out_dir/results.jsonl`` (same ids) are skipped, so rerunning an
    interrupted sweep with the same arguments finishes it without redoing or duplicating games.

    Args:
        grid: game configs (e.g. ``official_grid("bargaining")`` or a list of configs).
        players_factory: ``(config, game_seed) -> (alice, bob)``, called once per game (fresh
            players; seed randomised bots from ``game_seed`` so reruns are identical).
        n: repetitions per configuration, int >= 1.
        out_dir: the sweep directory (created). It must be empty, or a directory written by an
            earlier sweep with the same ``seed`` and ``players_label``.
        seed: the sweep seed; per-game seeds are derived from it and the game id (int, default 0).
        progress: show a tqdm progress bar (default True).
        players_label: a description of the players stored with every row (e.g.
            ``"bot:spe vs bot:random"``); resuming with another label is refused.
        transcripts: also write each game's transcript to ``out_dir/transcripts/<id>.json``.

    Returns:
        the rows of all finished games of this grid (earlier ones included), in grid order. Each
        row holds ``game_id``, ``family``, ``config``, ``repetition``, ``seed``, ``players`` and
        ``outcome`` (the ``Outcome`` as a dict).

    Raises:
        ValueError: ``n`` < 1, or ``out_dir`` holds unrelated files or another sweep.

    Examples:
        >>> import tempfile
        >>> from paperbricks.glee import BASE_CONFIG, RubinsteinSPEBot, sweep
        >>> d = tempfile.mkdtemp()
        >>> spe = lambda cfg, seed: (RubinsteinSPEBot(), RubinsteinSPEBot())
        >>> rows = sweep([BASE_CONFIG["bargaining"]], spe, 2, d, progress=False)
        >>> len(rows), len(sweep([BASE_CONFIG["bargaining"]], None, 2, d, progress=False))
        (2, 2)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    out = Path(out_dir)
    _prepare_dir(out, seed=seed, players_label=players_label)
    results_path = out / RESULTS_FILE
    _repair_tail(results_path)
    done = {r["game_id"]: r for r in load_results(out)} if results_path.exists() else {}

    jobs = [(cfg, rep) for cfg in grid for rep in range(n)]
    ids = [game_id(cfg, rep, seed) for cfg, rep in jobs]
    todo = [(cfg, rep, gid) for (cfg, rep), gid in zip(jobs, ids, strict=True) if gid not in done]
    logger.info("sweep %s: %d games, %d already done", out, len(jobs), len(jobs) - len(todo))
    if transcripts:
        (out / "transcripts").mkdir(exist_ok=True)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), disable=not progress, unit="game")
    try:
        for cfg, rep, gid in todo:
            gseed = game_seed(gid)
            outcome, transcript = play_game(cfg, players_factory(cfg, gseed), gseed)
            row = {
                "game_id": gid,
                "family": _family(cfg),
                "config": _config_dict(cfg),
                "repetition": rep,
                "seed": gseed,
                "sweep_seed": seed,
                "players": players_label,
                "outcome": _outcome_dict(outcome),
            }
            if transcripts:
                _write_atomic(
                    out / "transcripts" / f"{gid}.json",
                    json.dumps(transcript, default=_json_default, indent=1),
                )
            _append_line(results_path, row)
            done[gid] = json.loads(json.dumps(row, sort_keys=True, default=_json_default))
            bar.update(1)
    finally:
        bar.close()
    return [done[g] for g in ids if g in done]


def _outcome_dict(outcome: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(outcome) and not isinstance(outcome, type):
        return dataclasses.asdict(outcome)
    if isinstance(outcome, Mapping):
        return dict(outcome)
    raise TypeError(f"outcome: expected a dataclass or mapping, got {type(outcome).__name__}")


def _prepare_dir(out: Path, *, seed: int, players_label: str) -> None:
    meta = {"format": _FORMAT_VERSION, "seed": seed, "players": players_label}
    meta_path = out / SWEEP_FILE
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} exists and is not a directory")
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise ValueError(
                f"out_dir: {out} holds another sweep ({old}); this one is {meta}. "
                "Use a new directory, or the same seed and players to resume."
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(
            f"out_dir: {out} is not empty and holds no {SWEEP_FILE}; refusing to write a sweep "
            "among unrelated files"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(meta_path, json.dumps(meta, indent=1) + "\n")


def outcome_record(config: Any, outcome: Any) -> dict[str, Any]:
    """A metrics record (see :mod:`.metrics`) from a config (or its dict) and an ``Outcome``."""
    cfg = config if isinstance(config, Mapping) else _config_dict(config)
    return _metrics_record(dict(cfg), _outcome_dict(outcome))


def _metrics_record(config: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    return {**outcome, "config": config}


def base_grid(family: str) -> list[Any]:
    """The base configuration of ``family`` and every one-parameter variation of it.

    The variations take the other values of the official grid, one field at a time (the design
    behind the paper's marginal-effect figures: base ± one parameter).

    Args:
        family: ``"bargaining"``, ``"negotiation"`` or ``"persuasion"``.

    Returns:
        a list of configs, the base configuration first.

    Examples:
        >>> len(base_grid("bargaining"))
        12
    """
    from .config import BASE_CONFIG, official_grid

    if family not in BASE_CONFIG:
        raise ValueError(f"family: expected one of {sorted(BASE_CONFIG)}, got {family!r}")
    base = BASE_CONFIG[family]
    bd = dataclasses.asdict(base)
    out = [base]
    for cfg in official_grid(family):
        d = dataclasses.asdict(cfg)
        diff = [k for k in bd if d[k] != bd[k]]
        if len(diff) == 1 and cfg not in out:
            out.append(cfg)
    return out


def _metric_rows(rows: list[dict[str, Any]], glee_compat: bool) -> list[dict[str, Any]]:
    from .metrics import game_metrics

    out = []
    for row in rows:
        rec = _metrics_record(row["config"], row["outcome"])
        params = {k: v for k, v in row["config"].items() if k != "family"}
        if row.get("players"):
            params["players"] = row["players"]
        out.append(
            {
                "family": row["family"],
                "config": params,
                **game_metrics(rec, glee_compat=glee_compat),
            }
        )
    return out


def _impute_family(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Impute each metric over the factorial closure of the observed parameter levels."""
    import itertools

    from .analysis import marginal_effects, regression_impute

    levels: dict[str, list[Any]] = {}
    for r in recs:
        for k, v in r["config"].items():
            levels.setdefault(k, [])
            if v not in levels[k]:
                levels[k].append(v)
    varied = [k for k, v in levels.items() if len(v) > 1]
    if not varied:
        grid = [{}]
    else:
        grid = [
            dict(zip(varied, combo, strict=True))
            for combo in itertools.product(*(levels[k] for k in varied))
        ]
    out: dict[str, Any] = {"params": varied, "cells": len(grid), "metrics": {}}
    for metric, clip in METRICS.items():
        finite = [r for r in recs if r[metric] == r[metric]]
        if not finite:
            continue
        if not varied:
            mean = sum(r[metric] for r in finite) / len(finite)
            out["metrics"][metric] = {"imputed": mean, "interactions": False, "effects": {}}
            continue
        res = regression_impute(finite, metric, grid, params=varied, clip=clip)
        interactions = True
        if res.rank < len(res.columns):
            # an incomplete design (e.g. base +- one parameter) identifies main effects only
            res = regression_impute(
                finite, metric, grid, params=varied, clip=clip, interactions=False
            )
            interactions = False
        # Without identified interactions the additive model would extrapolate far outside the
        # observed cells (a base +- one design says nothing about two parameters moved at once),
        # so only the marginal effects (exact cell differences there) are reported, no grid mean.
        out["metrics"][metric] = {
            "imputed": res.mean if interactions else float("nan"),
            "raw": res.observed_mean,
            "interactions": interactions,
            "rank": res.rank,
            "effects": marginal_effects(res),
        }
    return out


def analyze(
    out_dir: str | os.PathLike[str],
    *,
    glee_compat: bool = False,
    impute: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Metric tables, regression-imputed means and marginal-effect plots of a sweep directory.

    Per family, every game's metrics are computed (:func:`paperbricks.glee.metrics.game_metrics`);
    raw means are tabulated; with ``impute`` each metric is fitted by categorical OLS over the
    parameters that vary in the sweep (:func:`paperbricks.glee.analysis.regression_impute`) and
    predicted on the factorial closure of the observed levels, whose mean is the imputed table
    entry (GLEE's tables are these). Pairwise interactions are used when the design identifies
    them; otherwise (a base ± one-parameter sweep) only main effects are fitted and plotted, and
    no imputed grid mean is reported (NaN): an additive model would extrapolate to cells where
    two or more parameters moved at once, which such a design never observed.

    Writes ``out_dir/analysis/summary.md``, ``summary.json`` and, with ``plots``,
    ``effects_<family>.png`` (marginal effects with 95% intervals).

    Args:
        out_dir: a directory written by :func:`sweep`.
        glee_compat: use the official metric formulas (both documented defects).
        impute: also fit the regression imputation (default True).
        plots: write the PNG files (default True).

    Returns:
        ``{"raw": [...rows], "imputed": {family: {...}}, "markdown": str, "files": [paths]}``.
    """
    import math

    from .analysis import metric_table

    out = Path(out_dir)
    rows = load_results(out)
    if not rows:
        raise ValueError(f"out_dir: {out} holds no finished games")
    recs = _metric_rows(rows, glee_compat)
    families = sorted({r["family"] for r in recs})
    raw_rows = []
    imputed: dict[str, Any] = {}
    for fam in families:
        fr = [r for r in recs if r["family"] == fam]
        row: dict[str, Any] = {"family": fam, "games": len(fr)}
        for m in METRICS:
            vals = [r[m] for r in fr if not math.isnan(r[m])]
            row[m] = sum(vals) / len(vals) if vals else float("nan")
        raw_rows.append(row)
        if impute:
            imputed[fam] = _impute_family(fr)
    cols = ["family", "games", *METRICS]
    md = [
        f"# GLEE sweep analysis ({'glee_compat' if glee_compat else 'corrected'} metrics)",
        "",
        "## Raw means",
        "",
        metric_table(raw_rows, cols),
    ]
    if impute:
        imp_rows = []
        for fam, res in imputed.items():
            r: dict[str, Any] = {"family": fam, "cells": res["cells"]}
            for m in METRICS:
                r[m] = res["metrics"].get(m, {}).get("imputed", float("nan"))
            r["interactions"] = all(v["interactions"] for v in res["metrics"].values())
            imp_rows.append(r)
        md += [
            "",
            "## Regression-imputed means",
            "",
            metric_table(imp_rows, ["family", "cells", *METRICS, "interactions"]),
        ]
    adir = out / "analysis"
    adir.mkdir(exist_ok=True)
    files = []
    if plots and impute:
        for fam, res in imputed.items():
            if res["params"]:
                files.append(_plot_effects(fam, res, adir / f"effects_{fam}.png"))
    text = "\n".join(md) + "\n"
    (adir / "summary.md").write_text(text)
    payload = {"glee_compat": glee_compat, "raw": raw_rows, "imputed": imputed}
    (adir / "summary.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    files += [adir / "summary.md", adir / "summary.json"]
    return {"raw": raw_rows, "imputed": imputed, "markdown": text, "files": files}


def _plot_effects(family: str, res: dict[str, Any], path: Path) -> Path:
    from paperbricks.core_kernels.repro import new_figure

    params = res["params"]
    metrics = [m for m in METRICS if m in res["metrics"]]
    fig = new_figure(figsize=(2.6 * len(params), 2.0 * len(metrics)))
    axes = fig.subplots(len(metrics), len(params), squeeze=False)
    for i, m in enumerate(metrics):
        for j, p in enumerate(params):
            ax = axes[i][j]
            eff = res["metrics"][m]["effects"].get(p, [])
            xs = [str(e["level"]) for e in eff]
            ys = [e["effect"] for e in eff]
            err = [1.96 * e["se"] if e["se"] == e["se"] else 0.0 for e in eff]
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3)
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.tick_params(labelsize=7)
            if i == len(metrics) - 1:
                ax.set_xlabel(p, fontsize=8)
            if j == 0:
                ax.set_ylabel(m, fontsize=7)
    fig.suptitle(f"{family}: marginal effects vs base level (95% CI)", fontsize=9)
    fig.savefig(path, dpi=100)
    return path


_BOTS = ("spe", "random", "fair", "honest", "trusting")


def player_from_spec(spec: str, family: str, role: str, seed: int | None = None) -> Any:
    """Build a player from a command-line spec.

    Args:
        spec: ``bot:spe`` (Rubinstein SPE / negotiation SPE / commitment-optimal seller and
            Bayesian buyer), ``bot:random``, ``bot:fair`` (bargaining, negotiation),
            ``bot:honest`` (persuasion seller), ``bot:trusting`` (persuasion buyer that believes
            the seller is honest), ``llm:SPEC`` (an ``LLMPlayer`` on
            :func:`paperbricks.core_kernels.llm.backend_from_spec` ``SPEC``), ``choice:SPEC``
            (choice scoring on that backend: always a legal move) or ``http:URL`` (a GLEE
            ``/chat`` bot).
        family: ``"bargaining"``, ``"negotiation"`` or ``"persuasion"``.
        role: ``"alice"`` (proposer / seller) or ``"bob"`` (responder / buyer).
        seed: seeds randomised bots (int or None).

    Returns:
        an object with ``act(game_view)``.

    Raises:
        ValueError: an unknown spec, or a bot that does not play this family/role.

    Examples:
        >>> type(player_from_spec("bot:spe", "persuasion", "alice", seed=0)).__name__
        'KGSeller'
    """
    from . import bots

    if role not in ("alice", "bob"):
        raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
    kind, _, arg = spec.partition(":")
    if kind == "bot":
        if arg == "random":
            return bots.RandomBot(seed=seed)
        if family == "bargaining" and arg == "spe":
            return bots.RubinsteinSPEBot()
        if family == "negotiation" and arg == "spe":
            return bots.NegotiationSPEBot()
        if family in ("bargaining", "negotiation") and arg == "fair":
            return bots.FairSplitBot()
        if family == "persuasion" and role == "alice" and arg == "spe":
            return bots.KGSeller(seed=seed)
        if family == "persuasion" and role == "alice" and arg == "honest":
            return bots.HonestSeller()
        if family == "persuasion" and role == "bob" and arg == "spe":
            return bots.BayesianBuyer()
        if family == "persuasion" and role == "bob" and arg == "trusting":
            return bots.BayesianBuyer(assumed_policy="honest")
        raise ValueError(
            f"spec: no bot {arg!r} for the {family} {role} seat; bots are {_BOTS} "
            "(fair: bargaining/negotiation; honest: persuasion seller; trusting: persuasion buyer)"
        )
    if kind in ("llm", "choice") and arg:
        from paperbricks.core_kernels.llm import backend_from_spec

        from . import llm_player

        backend = backend_from_spec(arg)
        if kind == "llm":
            return llm_player.LLMPlayer(backend)
        return llm_player.ChoiceScoringPolicy(backend)
    if kind == "http" and arg:
        from .http import GLEEHttpPlayer

        return GLEEHttpPlayer(arg)
    raise ValueError(
        f"spec: expected bot:NAME, llm:BACKEND_SPEC, choice:BACKEND_SPEC or http:URL, got {spec!r}"
    )

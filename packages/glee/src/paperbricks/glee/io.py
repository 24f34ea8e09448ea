"""Loader for GLEE game logs in the official on-disk layout (arXiv 2410.05254, official repo data).

One game is a directory holding ``config.json`` (``game_type``, ``game_args``, ``player_1_args`` /
``player_2_args`` with ``public_name``) and ``game.csv``, whose columns are:

- bargaining: ``alice_gain,bob_gain,message,player,round,decision``
- negotiation: the same plus ``product_price``
- persuasion: ``round_quality,product_worth,player,round,message,decision`` with "Nature" rows
  (one per round, carrying the drawn quality).

The GLEE data has no licence, so nothing is shipped: these functions read a user-supplied path and
return the plain records that :mod:`paperbricks.glee.metrics` scores. Unlike the official analysis
code, malformed files raise ``ValueError`` naming the file, line and column instead of asserting.

Examples:
    >>> from paperbricks.glee.io import load_glee_dir  # doctest: +SKIP
    >>> records = list(load_glee_dir("GLEE/Data/human_vs_llm"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paperbricks.glee.metrics import self_gain

logger = logging.getLogger(__name__)

_REQUIRED = {
    "bargaining": ("alice_gain", "bob_gain", "player", "round", "decision"),
    "negotiation": ("product_price", "player", "round", "decision"),
    "persuasion": ("round_quality", "player", "round", "decision"),
}
_OUTSIDE = {"selltojhon", "selltojohn", "buyfromjhon", "buyfromjohn"}
_HIGH = {"high", "true", "1", "1.0", "yes"}
_LOW = {"low", "false", "0", "0.0", "no"}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing config.json in the game directory") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise ValueError(f"{path}: missing game.csv in the game directory")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not header:
        raise ValueError(f"{path}: empty file, expected a header row")
    return header, rows


def _number(path: Path, line: int, column: str, text: str) -> float:
    cleaned = text.replace(",", "").replace("$", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise ValueError(
            f"{path}: line {line}, column {column!r}: expected a number, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path}: line {line}, column {column!r}: expected finite, got {text!r}")
    return value


def _round(path: Path, line: int, text: str) -> int:
    value = _number(path, line, "round", text)
    if value != int(value) or value < 1:
        raise ValueError(
            f"{path}: line {line}, column 'round': expected an integer >= 1, got {text!r}"
        )
    return int(value)


def _infer_family(cfg: dict[str, Any], header: list[str], path: Path) -> str:
    fam = cfg.get("game_type", cfg.get("family"))
    if fam is not None:
        fam = str(fam).lower()
        if fam not in _REQUIRED:
            raise ValueError(
                f"{path}: 'game_type' expected one of {sorted(_REQUIRED)}, got {cfg.get('game_type')!r}"
            )
        return fam
    if "round_quality" in header:
        return "persuasion"
    return "negotiation" if "product_price" in header else "bargaining"


def _names(cfg: dict[str, Any]) -> tuple[str, str]:
    out = []
    for i, default in ((1, "Alice"), (2, "Bob")):
        args = cfg.get(f"player_{i}_args") or {}
        out.append(str(args.get("public_name", default)) if isinstance(args, dict) else default)
    return out[0], out[1]


def load_glee_game(directory: str | Path) -> dict[str, Any]:
    """Read one official-format game directory into a plain record.

    Args:
        directory: path of a folder holding ``config.json`` and ``game.csv``.

    Returns:
        A dict with ``family``, ``config`` (the flat ``game_args`` merged with top-level scalars),
        ``agreed``, ``rounds``, ``alice_gain``, ``bob_gain``, ``money``, ``source`` and
        family-specific fields: bargaining ``alice_share``, ``alice_money`` (None with no deal) and
        ``glee_compat_bob_no_deal`` (δ_B^(T−1), T = rounds played); negotiation ``price``,
        ``outside_option``, ``seller_value``, ``buyer_value``; persuasion ``n_high``,
        ``high_bought``, ``low_bought``, ``low_rejected``, ``sales`` and ``history``.
        ``alice_gain``/``bob_gain`` are the corrected self-gains normalised by M, the same
        convention as ``games.Outcome``.

    Raises:
        ValueError: missing files, bad JSON, unknown ``game_type``, missing columns, unparsable
            numbers or decisions, a decision with no offer before it; the message names the file,
            line and column.

    Examples:
        >>> rec = load_glee_game("runs/game_0001")  # doctest: +SKIP
        >>> from paperbricks.glee.metrics import game_metrics
        >>> game_metrics(rec, glee_compat=True)  # doctest: +SKIP
    """
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"directory: expected an existing game directory, got {str(directory)!r}")
    cfg_path, csv_path = d / "config.json", d / "game.csv"
    cfg = _read_config(cfg_path)
    header, rows = _read_rows(csv_path)
    family = _infer_family(cfg, header, cfg_path)
    missing = [c for c in _REQUIRED[family] if c not in header]
    if missing:
        raise ValueError(
            f"{csv_path}: {family} game.csv is missing column(s) {missing}; header is {header}"
        )
    game_args = cfg.get("game_args", {})
    if not isinstance(game_args, dict):
        raise ValueError(
            f"{cfg_path}: 'game_args' expected an object, got {type(game_args).__name__}"
        )
    config = {k: v for k, v in cfg.items() if not isinstance(v, (dict, list))}
    config.update(game_args)
    alice, bob = _names(cfg)
    record: dict[str, Any] = {"family": family, "config": config, "source": str(d)}
    if family == "persuasion":
        record.update(_persuasion(csv_path, rows, config, alice))
    else:
        record.update(_offers(csv_path, rows, config, family, alice, bob))
    gains = self_gain(record)  # corrected, normalised by M: the convention of games.Outcome
    record["alice_gain"], record["bob_gain"] = gains["alice"], gains["bob"]
    return record


def _config_money(config: dict[str, Any], keys: tuple[str, ...], path: Path) -> float:
    for k in keys:
        if k in config:
            return _number(path, 0, k, str(config[k]))
    raise ValueError(f"{path}: game_args lacks the money scale, expected one of {list(keys)}")


def _offers(
    path: Path,
    rows: list[dict[str, str]],
    config: dict[str, Any],
    family: str,
    alice: str,
    bob: str,
) -> dict[str, Any]:
    cfg_path = path.with_name("config.json")
    if family == "bargaining":
        money = _config_money(config, ("money_to_divide", "money"), cfg_path)
        for key in ("delta_1", "delta_2"):
            if key not in config:
                raise ValueError(f"{cfg_path}: game_args lacks the discount factor {key!r}")
    else:
        money = _config_money(config, ("product_price_order", "money"), cfg_path)
    last_offer: dict[str, float] | None = None
    agreed, outside, rounds = False, None, 0
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        rnd = _round(path, i, row.get("round", ""))
        rounds = max(rounds, rnd)
        decision = row.get("decision", "")
        if decision:
            token = decision.replace(" ", "").lower()
            accepts = {"accept", "acceptoffer"}
            rejects = {"reject", "rejectoffer"}
            if token in _OUTSIDE and family == "negotiation":
                outside = decision
                break
            if token not in accepts | rejects:
                raise ValueError(
                    f"{path}: line {i}, column 'decision': expected accept/reject"
                    f"{' or an outside option' if family == 'negotiation' else ''}, got {decision!r}"
                )
            if last_offer is None:
                raise ValueError(f"{path}: line {i}: a decision with no offer before it")
            if token in accepts:
                agreed = True
                break
            continue
        if family == "bargaining":
            a_txt, b_txt = row.get("alice_gain", ""), row.get("bob_gain", "")
            if a_txt or b_txt:
                last_offer = {
                    "alice_gain": _number(path, i, "alice_gain", a_txt),
                    "bob_gain": _number(path, i, "bob_gain", b_txt),
                }
        elif row.get("product_price", ""):
            last_offer = {"price": _number(path, i, "product_price", row["product_price"])}
    if rounds == 0:
        raise ValueError(f"{path}: no game rows after the header")
    out: dict[str, Any] = {"agreed": agreed, "rounds": rounds, "money": money}
    if family == "bargaining":
        amount = last_offer["alice_gain"] if agreed and last_offer else None
        d_b = config.get("delta_2", config.get("delta_bob"))
        out.update(
            alice_money=amount,
            alice_share=None if amount is None else amount / money,
            glee_compat_bob_no_deal=None
            if d_b is None
            else _number(cfg_path, 0, "delta_2", str(d_b)) ** (rounds - 1),
        )
        return out
    f_a = _number(cfg_path, 0, "seller_value", str(config.get("seller_value", "nan")))
    f_b = _number(cfg_path, 0, "buyer_value", str(config.get("buyer_value", "nan")))
    price = last_offer["price"] if agreed and last_offer else None
    out.update(price=price, outside_option=outside, seller_value=f_a, buyer_value=f_b)
    return out


def _persuasion(
    path: Path, rows: list[dict[str, str]], config: dict[str, Any], seller: str
) -> dict[str, Any]:
    cfg_path = path.with_name("config.json")
    money = _config_money(config, ("product_price", "money"), cfg_path)
    quality: dict[int, bool] = {}
    decisions: dict[int, list[str]] = {}
    for i, row in enumerate(rows, start=2):
        rnd = _round(path, i, row.get("round", ""))
        player = row.get("player", "")
        if player.lower() == "nature":
            q = row.get("round_quality", "").lower()
            if q in _HIGH:
                quality[rnd] = True
            elif q in _LOW:
                quality[rnd] = False
            else:
                raise ValueError(
                    f"{path}: line {i}, column 'round_quality': expected high/low (or true/false, "
                    f"1/0), got {row.get('round_quality')!r}"
                )
            continue
        decision = row.get("decision", "").lower()
        if decision and player != seller:
            if decision not in ("yes", "no"):
                raise ValueError(
                    f"{path}: line {i}, column 'decision': expected yes/no, got {row['decision']!r}"
                )
            decisions.setdefault(rnd, []).append(decision)
    played = sorted(set(quality) | set(decisions))
    if not played:
        raise ValueError(f"{path}: no game rows after the header")
    history = []
    for rnd in played:
        if rnd not in quality:
            raise ValueError(f"{path}: round {rnd} has a buyer decision but no 'Nature' row")
        if rnd not in decisions:
            raise ValueError(f"{path}: round {rnd} has a 'Nature' row but no buyer decision")
        history.append({"round": rnd, "high": quality[rnd], "bought": decisions[rnd][-1] == "yes"})
    n = sum(h["high"] for h in history)
    k = sum(h["high"] and h["bought"] for h in history)
    ell = sum((not h["high"]) and h["bought"] for h in history)
    return {
        "agreed": k + ell > 0,
        "rounds": len(history),
        "money": money,
        "n_high": n,
        "high_bought": k,
        "low_bought": ell,
        "low_rejected": len(history) - n - ell,
        "sales": k + ell,
        "history": history,
    }


def load_glee_dir(root: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of every game directory under ``root`` (recursively, sorted by path).

    Args:
        root: a folder; every sub-folder (or ``root`` itself) containing ``config.json`` is a game.

    Raises:
        ValueError: ``root`` is not a directory, or a game is malformed (see :func:`load_glee_game`).
    """
    r = Path(root)
    if not r.is_dir():
        raise ValueError(f"root: expected an existing directory, got {str(root)!r}")
    for cfg in sorted(r.rglob("config.json")):
        logger.debug("loading GLEE game %s", cfg.parent)
        yield load_glee_game(cfg.parent)


__all__ = ["load_glee_dir", "load_glee_game"]

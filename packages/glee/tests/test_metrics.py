"""Metric invariants and the official-format golden games (compat vs corrected)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paperbricks.glee.io import load_glee_dir, load_glee_game
from paperbricks.glee.metrics import efficiency, fairness, game_metrics, self_gain


def _barg(p=0.5, t=1, agreed=True, d_a=0.9, d_b=0.9, money=100.0):
    return {
        "family": "bargaining",
        "agreed": agreed,
        "rounds": t,
        "alice_share": p if agreed else None,
        "money": money,
        "config": {"delta_alice": d_a, "delta_bob": d_b},
    }


def _neg(price, agreed=True, f_a=1.0, f_b=1.2, money=100.0):
    return {
        "family": "negotiation",
        "agreed": agreed,
        "rounds": 1,
        "price": price,
        "money": money,
        "config": {"seller_value": f_a, "buyer_value": f_b},
    }


def test_bargaining_full_surplus_round_one_is_efficient_and_equal_split_is_fair():
    r = _barg(p=0.5, t=1)
    assert efficiency(r) == 1.0
    assert fairness(r) == 1.0
    assert self_gain(r) == {"alice": 0.5, "bob": 0.5}


@given(
    p=st.floats(0, 1),
    t=st.integers(1, 30),
    d_a=st.sampled_from([1.0, 0.95, 0.9, 0.8]),
    d_b=st.sampled_from([1.0, 0.95, 0.9, 0.8]),
)
def test_bargaining_invariants(p, t, d_a, d_b):
    r = _barg(p=p, t=t, d_a=d_a, d_b=d_b)
    g = self_gain(r)
    assert math.isclose(g["alice"] + g["bob"], efficiency(r), abs_tol=1e-12)
    assert math.isclose(g["alice"], p * d_a ** (t - 1), abs_tol=1e-12)
    assert 0.0 <= fairness(r) <= 1.0
    assert 0.0 <= efficiency(r) <= 1.0 + 1e-12
    # symmetric in the split, maximal at the equal split
    assert math.isclose(fairness(r), fairness(_barg(p=1 - p, t=t)), abs_tol=1e-12)
    assert fairness(r) <= fairness(_barg(p=0.5)) + 1e-12
    # with a deal both modes agree
    assert game_metrics(r) == game_metrics(r, glee_compat=True)


def test_bargaining_no_deal_defect_only_in_compat():
    r = _barg(agreed=False, t=12, d_b=0.9)
    assert self_gain(r) == {"alice": 0.0, "bob": 0.0}
    assert efficiency(r) == 0.0
    assert self_gain(r, glee_compat=True)["bob"] == pytest.approx(0.9**11, rel=1e-15)
    assert efficiency(r, glee_compat=True) == pytest.approx(0.9**11, rel=1e-15)


@given(
    price=st.floats(0, 300),
    f_a=st.sampled_from([0.8, 1, 1.2, 1.5]),
    f_b=st.sampled_from([0.8, 1, 1.2, 1.5]),
    agreed=st.booleans(),
)
def test_negotiation_invariants(price, f_a, f_b, agreed):
    r = _neg(price, agreed=agreed, f_a=f_a, f_b=f_b)
    assert 0.0 <= fairness(r) <= 1.0
    g = self_gain(r)
    if agreed:
        # gains sum to the surplus F_B − F_A regardless of the price
        assert math.isclose(g["alice"] + g["bob"], f_b - f_a, abs_tol=1e-9)
    else:
        assert g == {"alice": 0.0, "bob": 0.0} and fairness(r) == 1.0
    expected_eff = float(agreed) if f_b > f_a else (float(not agreed) if f_b < f_a else 1.0)
    assert efficiency(r) == expected_eff


def test_negotiation_fairness_maximal_at_midpoint_and_symmetric():
    assert fairness(_neg(110.0)) == 1.0
    assert fairness(_neg(105.0)) == pytest.approx(fairness(_neg(115.0)), abs=1e-12)
    assert fairness(_neg(105.0)) == pytest.approx(0.99, abs=1e-12)
    assert fairness(_neg(1000.0)) == 0.0  # clipped at 0


@dataclass
class _Outcome:  # the attribute-style record games.py produces
    family: str
    agreed: bool
    rounds: int
    alice_gain: float
    bob_gain: float
    money: float
    extra: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def test_persuasion_honest_seller_trusting_buyer_is_efficient_and_fair():
    hist = [{"high": h, "bought": h} for h in (True, False, True, False, False)]
    r = _Outcome(
        "persuasion",
        True,
        5,
        200.0,
        0.0,
        100.0,
        extra={"history": hist},
        config={"v": 2.0, "c": 0.0},
    )
    assert efficiency(r) == 1.0 and fairness(r) == 1.0
    assert self_gain(r) == {"alice": 0.4, "bob": pytest.approx(0.4)}


def test_games_outcome_shape_without_config():
    """games.Outcome carries discounted normalised gains and the compat value, but no deltas."""
    deal = _Outcome("bargaining", True, 2, 0.27, 0.56, 100.0, extra={"alice_share": 0.3})
    assert game_metrics(deal) == pytest.approx(game_metrics(_barg(p=0.3, t=2, d_a=0.9, d_b=0.8)))
    nodeal = _Outcome(
        "bargaining",
        False,
        3,
        0.0,
        0.0,
        100.0,
        extra={"alice_share": None, "glee_compat_bob_no_deal": 0.64},
    )
    assert game_metrics(nodeal) == {
        "self_gain_alice": 0.0,
        "self_gain_bob": 0.0,
        "efficiency": 0.0,
        "fairness": 0.0,
    }
    assert game_metrics(nodeal, glee_compat=True)["efficiency"] == 0.64
    neg = _Outcome(
        "negotiation",
        True,
        2,
        0.05,
        0.15,
        100.0,
        extra={"price": 105.0, "seller_value": 1.0, "buyer_value": 1.2},
    )
    assert fairness(neg) == pytest.approx(0.99) and efficiency(neg) == 1.0


def test_persuasion_undefined_cases_are_nan_and_counts_validated():
    all_high = {
        "family": "persuasion",
        "rounds": 2,
        "n_high": 2,
        "high_bought": 2,
        "low_bought": 0,
        "config": {"v": 2.0},
    }
    assert math.isnan(fairness(all_high)) and efficiency(all_high) == 1.0
    with pytest.raises(ValueError, match="inconsistent counts"):
        efficiency({**all_high, "high_bought": 3})
    with pytest.raises(ValueError, match="'family'"):
        efficiency({"family": "poker"})
    with pytest.raises(ValueError, match="delta_alice"):
        efficiency({"family": "bargaining", "agreed": True, "rounds": 1, "money": 2})
    with pytest.raises(ValueError, match="alice_share"):
        fairness({"family": "bargaining", "agreed": True, "rounds": 1, "money": 2})


# ---- golden: hand-built official-format directories (our own content) ----


def _write(d: Path, config: dict, header: list[str], rows: list[dict]) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    with (d / "game.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return d


_BH = ["alice_gain", "bob_gain", "message", "player", "round", "decision"]
_PH = ["round_quality", "product_worth", "player", "round", "message", "decision"]


def build_golden(root: Path) -> None:
    names = {"player_1_args": {"public_name": "Alice"}, "player_2_args": {"public_name": "Bob"}}
    off = lambda a, b, pl, t: {"alice_gain": a, "bob_gain": b, "player": pl, "round": t}  # noqa: E731
    dec = lambda d, pl, t: {"decision": d, "player": pl, "round": t}  # noqa: E731
    _write(
        root / "b_deal",
        {
            "game_type": "bargaining",
            **names,
            "game_args": {"money_to_divide": 100, "delta_1": 0.9, "delta_2": 0.8, "max_rounds": 12},
        },
        _BH,
        [
            off(60, 40, "Alice", 1),
            dec("reject", "Bob", 1),
            off(30, 70, "Bob", 2),
            dec("accept", "Alice", 2),
        ],
    )
    _write(
        root / "b_nodeal",
        {
            "game_type": "bargaining",
            **names,
            "game_args": {"money_to_divide": 100, "delta_1": 0.9, "delta_2": 0.8, "max_rounds": 3},
        },
        _BH,
        [
            off(90, 10, "Alice", 1),
            dec("reject", "Bob", 1),
            off(20, 80, "Bob", 2),
            dec("reject", "Alice", 2),
            off(80, 20, "Alice", 3),
            dec("reject", "Bob", 3),
        ],
    )
    nh = [*_BH, "product_price"]
    _write(
        root / "n_deal",
        {
            "game_type": "negotiation",
            **names,
            "game_args": {
                "product_price_order": 100,
                "seller_value": 1.0,
                "buyer_value": 1.2,
                "max_rounds": 30,
            },
        },
        nh,
        [
            {"product_price": "$130", "player": "Alice", "round": 1},
            dec("RejectOffer", "Bob", 1),
            {"product_price": 105, "player": "Bob", "round": 2},
            dec("AcceptOffer", "Alice", 2),
        ],
    )
    _write(
        root / "n_outside",
        {
            "game_type": "negotiation",
            **names,
            "game_args": {
                "product_price_order": 100,
                "seller_value": 1.0,
                "buyer_value": 1.2,
                "max_rounds": 30,
            },
        },
        nh,
        [{"product_price": 150, "player": "Alice", "round": 1}, dec("BuyFromJhon", "Bob", 1)],
    )
    rows = []
    for t, (q, bought) in enumerate(
        [("high", "yes"), ("low", "no"), ("low", "no"), ("low", "yes"), ("high", "no")], start=1
    ):
        rows += [
            {
                "round_quality": q,
                "product_worth": 200 if q == "high" else 0,
                "player": "Nature",
                "round": t,
            },
            {"player": "Alice", "round": t, "decision": "yes", "message": "buy it"},
            {"player": "Bob", "round": t, "decision": bought},
        ]
    _write(
        root / "p_game",
        {
            "game_type": "persuasion",
            **names,
            "game_args": {"product_price": 100, "p": 0.5, "v": 2.0, "c": 0.0, "total_rounds": 5},
        },
        _PH,
        rows,
    )


# Hand-computed. Bargaining deal: p = 0.3 at t = 2 -> 0.3*0.9, 0.7*0.8. No deal (T = 3): the
# official code pays Bob 0.8**2. Negotiation: p = 1.05, p_f = 1.1. Persuasion R = 5, n = 2, k = 1,
# ℓ = 1, r = 2, v = 2, c = 0: buyer (k(v−1) + ℓ(c−1))/R = 0, official (k(v−1) + r(c−1))/R = −0.2.
GOLDEN = {
    "b_deal": ((0.27, 0.56, 0.83, 0.84), (0.27, 0.56, 0.83, 0.84)),
    "b_nodeal": ((0.0, 0.0, 0.0, 0.0), (0.0, 0.64, 0.64, 0.0)),
    "n_deal": ((0.05, 0.15, 1.0, 0.99), (0.05, 0.15, 1.0, 0.99)),
    "n_outside": ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0)),
    "p_game": ((0.4, 0.0, 0.5, 2 / 3), (0.4, -0.2, 0.5, 2 / 3)),
}


@pytest.mark.parametrize("compat", [False, True])
def test_golden_official_format_games(tmp_path, compat):
    build_golden(tmp_path)
    recs = {Path(r["source"]).name: r for r in load_glee_dir(tmp_path)}
    assert sorted(recs) == sorted(GOLDEN)
    for name, (corrected, official) in GOLDEN.items():
        m = game_metrics(recs[name], glee_compat=compat)
        got = (m["self_gain_alice"], m["self_gain_bob"], m["efficiency"], m["fairness"])
        assert got == pytest.approx(official if compat else corrected, abs=1e-12), name


def test_golden_records_fields(tmp_path):
    build_golden(tmp_path)
    b = load_glee_game(tmp_path / "b_deal")
    assert (b["agreed"], b["rounds"], b["alice_money"], b["alice_share"]) == (True, 2, 30.0, 0.3)
    assert (b["alice_gain"], b["bob_gain"]) == pytest.approx((0.27, 0.56))
    nd = load_glee_game(tmp_path / "b_nodeal")
    assert (nd["agreed"], nd["rounds"], nd["alice_share"], nd["bob_gain"]) == (False, 3, None, 0.0)
    assert nd["glee_compat_bob_no_deal"] == pytest.approx(0.64)
    n = load_glee_game(tmp_path / "n_outside")
    assert n["outside_option"] == "BuyFromJhon" and n["price"] is None
    p = load_glee_game(tmp_path / "p_game")
    assert (p["n_high"], p["high_bought"], p["low_bought"], p["low_rejected"]) == (2, 1, 1, 2)

"""Engines, configs and actions: grids, rules, information filtering, determinism, errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from paperbricks.glee.actions import (
    Accept,
    Buy,
    Message,
    NoBuy,
    Offer,
    OutsideOption,
    Reject,
    Signal,
    action_from_dict,
    action_to_dict,
)
from paperbricks.glee.bots import RandomBot
from paperbricks.glee.config import (
    BASE_CONFIG,
    BargainingConfig,
    NegotiationConfig,
    PersuasionConfig,
    config_from_dict,
    official_grid,
)
from paperbricks.glee.games import (
    BargainingGame,
    IllegalActionError,
    NegotiationGame,
    PersuasionGame,
    make_game,
)
from paperbricks.glee.players_base import play


@pytest.mark.parametrize(
    ("family", "size"), [("bargaining", 384), ("negotiation", 576), ("persuasion", 360)]
)
def test_official_grid_sizes_and_distinct(family, size):
    grid = list(official_grid(family))
    assert len(grid) == size
    assert len(set(grid)) == size
    assert all(c.family == family for c in grid)
    assert BASE_CONFIG[family] in grid or family == "persuasion"


def test_official_grid_values():
    b = list(official_grid("bargaining"))
    assert {c.delta_alice for c in b} == {1.0, 0.95, 0.9, 0.8}
    assert {c.max_rounds for c in b} == {12, 99}
    n = list(official_grid("negotiation"))
    assert {c.max_rounds for c in n} == {1, 10, 30}
    assert {c.buyer_value for c in n} == {0.8, 1.0, 1.2, 1.5}
    p = list(official_grid("persuasion"))
    assert {c.v for c in p} == {1.2, 1.25, 2.0, 3.0, 4.0}
    assert {c.c for c in p} == {0.0} and {c.rounds for c in p} == {20}
    assert {c.message_type for c in p} == {"text", "binary"}


def test_base_configs():
    b = BASE_CONFIG["bargaining"]
    assert (b.delta_alice, b.delta_bob, b.money, b.max_rounds) == (0.95, 0.95, 1e4, 99)
    assert b.complete_information and b.messages and not b.horizon_announced
    n = BASE_CONFIG["negotiation"]
    assert (n.seller_value, n.buyer_value, n.money, n.max_rounds) == (1.0, 1.2, 1e4, 30)


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc", "name"),
    [
        (BargainingConfig, {"delta_alice": 0.0}, ValueError, "delta_alice"),
        (BargainingConfig, {"delta_bob": 1.5}, ValueError, "delta_bob"),
        (BargainingConfig, {"money": -1.0}, ValueError, "money"),
        (BargainingConfig, {"max_rounds": 0}, ValueError, "max_rounds"),
        (BargainingConfig, {"max_rounds": 2.5}, TypeError, "max_rounds"),
        (BargainingConfig, {"messages": 1}, TypeError, "messages"),
        (NegotiationConfig, {"seller_value": 0.0}, ValueError, "seller_value"),
        (NegotiationConfig, {"buyer_value": float("nan")}, ValueError, "buyer_value"),
        (PersuasionConfig, {"p": 1.0}, ValueError, "p"),
        (PersuasionConfig, {"v": 0.5}, ValueError, "v"),
        (PersuasionConfig, {"c": 1.2}, ValueError, "c"),
        (PersuasionConfig, {"message_type": "emoji"}, ValueError, "message_type"),
        (PersuasionConfig, {"rounds": 0}, ValueError, "rounds"),
    ],
)
def test_invalid_configs_raise(cls, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        cls(**kwargs)


@pytest.mark.parametrize("family", ["bargaining", "negotiation", "persuasion"])
def test_config_dict_roundtrip(family):
    cfg = BASE_CONFIG[family]
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert config_from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown"):
        config_from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="family"):
        config_from_dict({**d, "family": "poker"})


def test_actions_validate_and_roundtrip():
    with pytest.raises(ValueError, match="amount"):
        Offer(-1.0)
    with pytest.raises(TypeError, match="amount"):
        Offer("10")
    with pytest.raises(TypeError, match="recommend"):
        Signal(1)
    with pytest.raises(TypeError, match="message"):
        Accept(message=3)
    for a in (
        Offer(3.5, "hi"),
        Accept(),
        Reject("no"),
        OutsideOption(),
        Signal(True),
        Message("x"),
        Buy(),
        NoBuy(),
    ):
        assert action_from_dict(action_to_dict(a)) == a


def test_bargaining_flow_and_discounting():
    cfg = BargainingConfig(delta_alice=0.9, delta_bob=0.8, money=100.0, max_rounds=3)
    g = BargainingGame(cfg)
    assert g.current_player == "alice" and g.legal_actions()["kinds"] == ("offer",)
    g.apply(Offer(70.0, "take it"))
    assert g.current_player == "bob" and set(g.legal_actions()["kinds"]) == {"accept", "reject"}
    g.apply(Reject())
    assert g.round == 2 and g.current_player == "bob"
    g.step(Offer(40.0))
    g.apply(Accept())
    out = g.outcome()
    assert out.agreed and out.rounds == 2
    assert out.alice_gain == pytest.approx(0.4 * 0.9)
    assert out.bob_gain == pytest.approx(0.6 * 0.8)
    assert g.transcript[0]["alice_gain"] == 70.0 and g.transcript[0]["bob_gain"] == 30.0
    assert json.loads(json.dumps(out.to_dict()))["extra"]["alice_money"] == 40.0


def test_bargaining_no_deal_gives_zero_and_records_compat_value():
    cfg = BargainingConfig(delta_alice=0.9, delta_bob=0.8, money=100.0, max_rounds=2)
    g = BargainingGame(cfg)
    for a in (Offer(90.0), Reject(), Offer(10.0), Reject()):
        g.apply(a)
    out = g.outcome()
    assert g.done and not out.agreed and out.rounds == 2
    assert out.alice_gain == 0.0 and out.bob_gain == 0.0
    assert out.extra["glee_compat_bob_no_deal"] == pytest.approx(0.8)


def test_negotiation_outside_option_and_horizon():
    cfg = NegotiationConfig(seller_value=1.0, buyer_value=1.2, money=100.0, max_rounds=2)
    g = NegotiationGame(cfg)
    g.apply(Offer(130.0))
    assert "outside_option" in g.legal_actions()["kinds"]
    g.apply(OutsideOption())
    out = g.outcome()
    assert not out.agreed and out.alice_gain == 0.0 and out.bob_gain == 0.0
    assert out.extra["end_reason"] == "outside_option:bob"
    g = NegotiationGame(cfg)
    for a in (Offer(130.0), Reject(), Offer(101.0), Reject()):
        g.apply(a)
    assert g.done and g.outcome().extra["end_reason"] == "horizon"
    g = NegotiationGame(cfg)
    for a in (Offer(130.0), Reject(), Offer(110.0), Accept()):
        g.apply(a)
    out = g.outcome()
    assert out.agreed and out.extra["price"] == 110.0
    assert out.alice_gain == pytest.approx(0.1) and out.bob_gain == pytest.approx(0.1)


def test_illegal_actions_raise():
    g = BargainingGame(BargainingConfig(money=100.0, messages=False))
    with pytest.raises(IllegalActionError, match="offer"):
        g.apply(Accept())
    with pytest.raises(IllegalActionError, match=r"\[0.0, 100.0\]"):
        g.apply(Offer(101.0))
    with pytest.raises(IllegalActionError, match="messages"):
        g.apply(Offer(50.0, "hello"))
    with pytest.raises(IllegalActionError, match="not over"):
        g.outcome()
    g.apply(Offer(50.0))
    with pytest.raises(IllegalActionError):
        g.apply(OutsideOption())  # bargaining has no outside option
    g.apply(Accept())
    with pytest.raises(IllegalActionError, match="over"):
        g.apply(Offer(1.0))
    p = PersuasionGame(PersuasionConfig(message_type="binary", rounds=2), seed=0)
    with pytest.raises(IllegalActionError):
        p.apply(Message("trust me"))
    with pytest.raises(IllegalActionError, match="binary"):
        p.apply(Signal(True, "trust me"))
    with pytest.raises(IllegalActionError):
        p.apply(Buy())
    with pytest.raises(TypeError, match="config"):
        BargainingGame(NegotiationConfig())
    with pytest.raises(TypeError, match="config"):
        make_game({"family": "bargaining"})
    with pytest.raises(ValueError, match="player"):
        g.observation("carol")


def test_observations_respect_information_structure():
    cfg = BargainingConfig(
        delta_alice=0.9, delta_bob=0.8, complete_information=False, max_rounds=12
    )
    g = BargainingGame(cfg)
    oa, ob = g.observation("alice"), g.observation("bob")
    assert oa["config"]["delta_alice"] == 0.9 and "delta_bob" not in oa["config"]
    assert ob["config"]["delta_bob"] == 0.8 and "delta_alice" not in ob["config"]
    assert oa["config"]["max_rounds"] == 12 and oa["your_turn"] and not ob["your_turn"]
    assert (
        BargainingGame(dataclasses.replace(cfg, max_rounds=99)).observation("bob")["config"][
            "max_rounds"
        ]
        is None
    )
    n = NegotiationGame(NegotiationConfig(complete_information=False))
    assert "buyer_value" not in n.observation("alice")["config"]
    assert "seller_value" not in n.observation("bob")["config"]
    p = PersuasionGame(PersuasionConfig(seller_knows_values=False, myopic=True, rounds=3), seed=1)
    sa = p.observation("alice")
    assert "v" not in sa["config"] and sa["quality_high"] in (True, False)
    p.apply(Signal(True))
    sb = p.observation("bob")
    assert sb["config"]["v"] == 1.2 and "quality_high" not in sb
    assert not any(e["player"] == "nature" and e["round"] == 1 for e in sb["history"])
    p.apply(Buy())
    assert p.observation("bob")["history"] == []  # myopic buyer sees only the record
    assert p.observation("bob")["record"] == {
        "rounds_played": 1,
        "sales": 1,
        "high_quality_sales": int(p.qualities[0]),
    }
    q = PersuasionGame(PersuasionConfig(rounds=3), seed=1)
    q.apply(Signal(True))
    q.apply(NoBuy())
    hist = q.observation("bob")["history"]
    assert [e["player"] for e in hist] == ["nature", "alice", "bob"]  # quality revealed after


def test_persuasion_outcome_counts():
    cfg = PersuasionConfig(p=0.5, v=2.0, c=0.25, rounds=50)
    g = PersuasionGame(cfg, seed=3)
    while not g.done:
        g.apply(Signal(True))
        g.apply(Buy() if g.round % 3 else NoBuy())
    out = g.outcome()
    q, d = out.extra["qualities"], out.extra["decisions"]
    k = sum(a and b for a, b in zip(q, d, strict=True))
    ell = sum((not a) and b for a, b in zip(q, d, strict=True))
    assert out.alice_gain == pytest.approx((k + ell) / 50)
    assert out.bob_gain == pytest.approx((k * 1.0 + ell * (0.25 - 1.0)) / 50)
    assert out.extra["n_high"] == sum(q) and out.rounds == 50
    assert out.extra["low_rejected"] + out.extra["low_bought"] == 50 - sum(q)


def test_quality_draws_follow_p_and_seed():
    qs = PersuasionGame(PersuasionConfig(p=0.8, rounds=1), seed=0)
    assert qs.qualities == PersuasionGame(PersuasionConfig(p=0.8, rounds=1), seed=0).qualities
    g = PersuasionGame(PersuasionConfig(p=0.8, rounds=2000), seed=5)
    while not g.done:
        g.apply(Signal(True))
        g.apply(Buy())
    assert 0.76 < sum(g.qualities) / 2000 < 0.84


def _random_transcript(config, seed):
    game = make_game(config, seed=seed)
    play(game, RandomBot(seed=seed, messages=True), RandomBot(seed=seed + 1, messages=True))
    return game.transcript, game.outcome().to_dict()


@pytest.mark.parametrize(
    "config",
    [
        BargainingConfig(max_rounds=12, money=100.0),
        NegotiationConfig(max_rounds=10, money=100.0),
        PersuasionConfig(rounds=10),
    ],
    ids=["bargaining", "negotiation", "persuasion"],
)
def test_identical_seeds_identical_transcripts(config):
    a = _random_transcript(config, 7)
    b = _random_transcript(config, 7)
    assert a == b
    others = [_random_transcript(config, s) for s in (8, 9, 10)]
    assert any(o != a for o in others)


@pytest.mark.parametrize("module", ["config", "actions", "games", "players_base", "bots"])
def test_docstring_examples_and_lean_import(module):
    import doctest
    import importlib

    from paperbricks.core_kernels.testing import assert_lean_import

    mod = importlib.import_module(f"paperbricks.glee.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    assert_lean_import(f"paperbricks.glee.{module}")

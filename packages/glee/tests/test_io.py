"""Loader for the official config.json + game.csv layout: parsing and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperbricks.glee.io import load_glee_dir, load_glee_game

_CFG = {
    "game_type": "bargaining",
    "game_args": {"money_to_divide": 10000, "delta_1": 0.95, "delta_2": 0.95, "max_rounds": 99},
}
_HEAD = "alice_gain,bob_gain,message,player,round,decision\n"


def _game(d: Path, csv_text: str, cfg=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(_CFG if cfg is None else cfg))
    (d / "game.csv").write_text(csv_text)
    return d


def test_thousands_separators_and_config_flattening(tmp_path):
    d = _game(tmp_path / "g", _HEAD + '"7,354","$2,646",hi,Alice,1,\n,,,Bob,1,accept\n')
    r = load_glee_game(d)
    assert (r["family"], r["agreed"], r["rounds"]) == ("bargaining", True, 1)
    assert (r["alice_money"], r["money"]) == (7354.0, 10000.0)
    assert (r["alice_gain"], r["bob_gain"]) == pytest.approx((0.7354, 0.2646))
    assert r["config"]["delta_1"] == 0.95 and r["config"]["game_type"] == "bargaining"


def test_family_inferred_from_columns_and_john_spelling(tmp_path):
    cfg = {"game_args": {"product_price_order": 100, "seller_value": 1, "buyer_value": 1.2}}
    d = _game(
        tmp_path / "n",
        _HEAD.strip() + ",product_price\n,,,Alice,1,,120\n,,,Bob,1,BuyFromJohn,\n",
        cfg,
    )
    r = load_glee_game(d)
    assert r["family"] == "negotiation" and r["agreed"] is False
    assert r["outside_option"] == "BuyFromJohn"


@pytest.mark.parametrize(
    ("csv_text", "cfg", "match"),
    [
        (_HEAD + "abc,1,,Alice,1,\n", None, r"line 2, column 'alice_gain'"),
        (_HEAD + "1,1,,Alice,x,\n", None, r"column 'round'"),
        (_HEAD + ",,,Bob,1,accept\n", None, r"line 2: a decision with no offer"),
        (_HEAD + "1,1,,Alice,1,\n,,,Bob,1,maybe\n", None, r"line 3, column 'decision'"),
        (
            "alice_gain,player,round,decision\n1,Alice,1,\n",
            None,
            r"missing column\(s\) \['bob_gain'\]",
        ),
        (_HEAD, None, "no game rows"),
        (_HEAD + "1,1,,Alice,1,\n", {"game_type": "chess"}, "'game_type'"),
        (_HEAD + "1,1,,Alice,1,\n", {"game_type": "bargaining", "game_args": {}}, "money scale"),
        (
            _HEAD + "1,1,,Alice,1,\n",
            {"game_type": "bargaining", "game_args": {"money_to_divide": 2, "delta_1": 1}},
            "'delta_2'",
        ),
        (
            "round_quality,product_worth,player,round,message,decision\n"
            "medium,0,Nature,1,,\n,,Bob,1,,yes\n",
            {"game_type": "persuasion", "game_args": {"product_price": 1}},
            r"column 'round_quality'",
        ),
        (
            "round_quality,product_worth,player,round,message,decision\n"
            "high,0,Nature,1,,\nlow,0,Nature,2,,\n,,Bob,1,,yes\n",
            {"game_type": "persuasion", "game_args": {"product_price": 1}},
            "round 2 has a 'Nature' row but no buyer decision",
        ),
    ],
)
def test_malformed_games_name_file_and_column(tmp_path, csv_text, cfg, match):
    d = _game(tmp_path / "bad", csv_text, cfg)
    with pytest.raises(ValueError, match=match) as info:
        load_glee_game(d)
    assert "bad" in str(info.value)  # the path is named


def test_missing_files_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_glee_game(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match=r"missing config\.json"):
        load_glee_game(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_glee_game(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"missing game\.csv"):
        load_glee_game(tmp_path / "a")
    with pytest.raises(ValueError, match="root"):
        list(load_glee_dir(tmp_path / "nope"))


def test_load_dir_is_sorted_and_recursive(tmp_path):
    for name in ("z/g2", "a/g1", "m"):
        _game(tmp_path / name, _HEAD + "50,50,,Alice,1,\n,,,Bob,1,accept\n")
    names = [Path(r["source"]).relative_to(tmp_path).as_posix() for r in load_glee_dir(tmp_path)]
    assert names == ["a/g1", "m", "z/g2"]

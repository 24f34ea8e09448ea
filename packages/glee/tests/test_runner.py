"""Resumable sweeps: interrupted sweeps resume with nothing lost or duplicated; seeds determine games.

The resume logic is tested on a tiny stand-in game (so a failure points at the runner, not at a
game engine); the real games are tested for seed determinism and end-to-end sweeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from paperbricks.glee import runner


@dataclass(frozen=True)
class ToyConfig:
    family: str = "bargaining"
    money: int = 100
    max_rounds: int = 3


@dataclass
class ToyOutcome:
    family: str
    agreed: bool
    rounds: int
    alice_gain: float
    bob_gain: float
    money: float
    extra: dict = field(default_factory=dict)


class ToyGame:
    """Alice and Bob each draw once from the seeded RNG; Alice's draw is her gain."""

    def __init__(self, config, seed):
        import numpy as np

        self.config = config
        self.rng = np.random.default_rng(seed)
        self.transcript = []
        self.done = False
        self.current_player = "alice"

    def observation(self, who):
        return {"who": who, "x": float(self.rng.random())}

    def apply(self, action):
        self.transcript.append({"player": self.current_player, "action": action})
        if self.current_player == "bob":
            self.done = True
        self.current_player = "bob"

    def outcome(self):
        a = self.transcript[0]["action"]
        return ToyOutcome("bargaining", True, 1, a, self.config.money - a, self.config.money)


class Echo:
    def act(self, view):
        return round(view["x"] * 100, 6)


class Crash(Exception):
    pass


class CrashAfter:
    """A player that raises on its k-th call across a sweep (a killed LLM server, Ctrl-C ...)."""

    def __init__(self, counter, k):
        self.counter, self.k = counter, k

    def act(self, view):
        self.counter[0] += 1
        if self.counter[0] > self.k:
            raise Crash
        return round(view["x"] * 100, 6)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(runner, "_new_game", lambda config, seed: ToyGame(config, seed))


GRID = [ToyConfig(money=m) for m in (100, 1000, 10000)]


def _ids(path):
    return [json.loads(line)["game_id"] for line in (path / runner.RESULTS_FILE).open()]


def test_interrupted_sweep_resumes_without_loss_or_duplicates(toy, tmp_path):
    full = runner.sweep(
        GRID, lambda c, s: (Echo(), Echo()), 4, tmp_path / "a", seed=3, progress=False
    )
    assert len(full) == 12 and len({r["game_id"] for r in full}) == 12

    counter = [0]
    out = tmp_path / "b"
    with pytest.raises(Crash):
        runner.sweep(
            GRID, lambda c, s: (CrashAfter(counter, 9), Echo()), 4, out, seed=3, progress=False
        )
    assert len(_ids(out)) == 9  # the games finished before the crash are on disk
    calls = [0]

    def factory(c, s):
        calls[0] += 1
        return Echo(), Echo()

    resumed = runner.sweep(GRID, factory, 4, out, seed=3, progress=False)
    assert calls[0] == 3  # only the missing games were played
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 12
    assert resumed == full  # the same results as an uninterrupted sweep
    again = runner.sweep(GRID, None, 4, out, seed=3, progress=False)
    assert again == full and len(_ids(out)) == 12


def test_torn_last_line_is_dropped_and_replayed(toy, tmp_path):
    out = tmp_path / "s"
    full = runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 2, out, seed=0, progress=False)
    path = out / runner.RESULTS_FILE
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # a crash mid-write
    assert len(runner.load_results(out)) == 5
    resumed = runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 2, out, seed=0, progress=False)
    assert resumed == full
    assert path.read_bytes() == data


def test_seeds_determine_games(toy, tmp_path):
    a = runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 2, tmp_path / "a", seed=1, progress=False)
    b = runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 2, tmp_path / "b", seed=1, progress=False)
    c = runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 2, tmp_path / "c", seed=2, progress=False)
    assert a == b
    assert [r["outcome"] for r in a] != [r["outcome"] for r in c]
    # a game's seed does not depend on the games before it: a sub-grid gives the same rows
    d = runner.sweep(
        GRID[1:], lambda c, s: (Echo(), Echo()), 2, tmp_path / "d", seed=1, progress=False
    )
    assert d == a[2:]


def test_game_id_is_stable_and_distinct():
    ids = {runner.game_id(c, r, s) for c in GRID for r in range(3) for s in range(2)}
    assert len(ids) == 18
    assert runner.game_id(GRID[0], 0, 0) == runner.game_id(ToyConfig(money=100), 0, 0)
    with pytest.raises(ValueError, match="repetition"):
        runner.game_id(GRID[0], -1, 0)
    with pytest.raises(TypeError, match="config"):
        runner.game_id({"money": 1}, 0, 0)


def test_sweep_refuses_unrelated_or_mismatched_dirs(toy, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 1, tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    out = tmp_path / "s"
    runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 1, out, seed=0, progress=False)
    with pytest.raises(ValueError, match="another sweep"):
        runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 1, out, seed=1, progress=False)
    with pytest.raises(ValueError, match="n:"):
        runner.sweep(GRID, lambda c, s: (Echo(), Echo()), 0, tmp_path / "t", progress=False)


def test_play_game_validates(toy):
    with pytest.raises(ValueError, match="players"):
        runner.play_game(GRID[0], (Echo(),), seed=0)
    out, transcript = runner.play_game(GRID[0], (Echo(), Echo()), seed=0)
    assert out.alice_gain + out.bob_gain == 100 and len(transcript) == 2


# ------------------------------------------------------------------ the real games and bots


def _bots(family, p1, p2):
    return lambda cfg, s: (
        runner.player_from_spec(p1, family, "alice", seed=s),
        runner.player_from_spec(p2, family, "bob", seed=s + 1),
    )


def test_spe_bargaining_game_and_metrics():
    from paperbricks.glee.bots import RubinsteinSPEBot
    from paperbricks.glee.config import BargainingConfig
    from paperbricks.glee.metrics import game_metrics

    cfg = BargainingConfig(delta_alice=0.9, delta_bob=0.9)
    out, transcript = runner.play_game(cfg, (RubinsteinSPEBot(), RubinsteinSPEBot()), seed=0)
    assert out.agreed and out.rounds == 1 and len(transcript) == 2
    m = game_metrics(runner.outcome_record(cfg, out))
    assert m["self_gain_alice"] == pytest.approx(1 / 1.9, abs=1e-9)  # (1-δ_B)/(1-δ_Aδ_B)
    assert m["efficiency"] == pytest.approx(1.0)
    # the metrics module and the engine's own normalised gains agree
    assert m["self_gain_alice"] == pytest.approx(out.alice_gain)
    assert m["self_gain_bob"] == pytest.approx(out.bob_gain)


def test_fair_vs_spe_delay_costs_efficiency():
    from paperbricks.glee.config import BargainingConfig
    from paperbricks.glee.metrics import game_metrics

    cfg = BargainingConfig(delta_alice=0.8, delta_bob=0.8)
    alice = runner.player_from_spec("bot:spe", "bargaining", "alice")
    bob = runner.player_from_spec("bot:fair", "bargaining", "bob")
    out, _ = runner.play_game(cfg, (alice, bob), seed=0)
    m = game_metrics(runner.outcome_record(cfg, out))
    assert out.rounds == 2 and m["efficiency"] == pytest.approx(0.8)


@pytest.mark.parametrize(
    "family,p1,p2",
    [
        ("bargaining", "bot:random", "bot:spe"),
        ("negotiation", "bot:random", "bot:fair"),
        ("persuasion", "bot:spe", "bot:spe"),
    ],
)
def test_identical_seeds_identical_games(family, p1, p2, tmp_path):
    grid = runner.base_grid(family)[:3]
    a = runner.sweep(grid, _bots(family, p1, p2), 2, tmp_path / "a", seed=5, progress=False)
    b = runner.sweep(grid, _bots(family, p1, p2), 2, tmp_path / "b", seed=5, progress=False)
    assert a == b
    for r in a:
        t_a = (tmp_path / "a" / "transcripts" / f"{r['game_id']}.json").read_text()
        t_b = (tmp_path / "b" / "transcripts" / f"{r['game_id']}.json").read_text()
        assert t_a == t_b


def test_persuasion_sweep_resumes_after_a_crash(tmp_path):
    """A real sweep killed by a player mid-way finishes on rerun with the same rows."""
    grid = runner.base_grid("persuasion")[:4]
    full = runner.sweep(
        grid, _bots("persuasion", "bot:spe", "bot:spe"), 3, tmp_path / "a", seed=0, progress=False
    )
    calls = [0]

    def flaky(cfg, s):
        calls[0] += 1
        if calls[0] == 7:
            raise Crash
        return _bots("persuasion", "bot:spe", "bot:spe")(cfg, s)

    with pytest.raises(Crash):
        runner.sweep(grid, flaky, 3, tmp_path / "b", seed=0, progress=False)
    assert len(_ids(tmp_path / "b")) == 6
    resumed = runner.sweep(
        grid, _bots("persuasion", "bot:spe", "bot:spe"), 3, tmp_path / "b", seed=0, progress=False
    )
    assert resumed == full
    assert sorted(_ids(tmp_path / "b")) == sorted(r["game_id"] for r in full)


def test_base_grid_is_base_plus_one_parameter():
    import dataclasses

    from paperbricks.glee.config import BASE_CONFIG

    for fam in ("bargaining", "negotiation", "persuasion"):
        grid = runner.base_grid(fam)
        base = dataclasses.asdict(BASE_CONFIG[fam])
        assert grid[0] == BASE_CONFIG[fam]
        diffs = [sum(dataclasses.asdict(c)[k] != v for k, v in base.items()) for c in grid[1:]]
        assert diffs and all(d == 1 for d in diffs)
    assert len(runner.base_grid("bargaining")) == 1 + 3 + 3 + 2 + 1 + 1 + 1
    with pytest.raises(ValueError, match="family"):
        runner.base_grid("poker")


def test_player_from_spec_rejects_unknown():
    with pytest.raises(ValueError, match="spec"):
        runner.player_from_spec("bot:honest", "bargaining", "alice")
    with pytest.raises(ValueError, match="spec"):
        runner.player_from_spec("gpt", "bargaining", "alice")
    with pytest.raises(ValueError, match="role"):
        runner.player_from_spec("bot:spe", "bargaining", "carol")


def test_analyze_imputes_and_plots(tmp_path):
    from paperbricks.glee.config import BargainingConfig
    from paperbricks.glee.metrics import game_metrics

    # a fully crossed δ_A × δ_B × M design, unbalanced by dropping two cells: the SPE bots are
    # deterministic and Alice's share depends on (δ_A, δ_B) only, so imputation is exact
    ds, ms = (0.8, 0.9, 0.95), (100.0, 10_000.0)
    full = [BargainingConfig(a, b, m) for a in ds for b in ds for m in ms]
    out = tmp_path / "s"
    runner.sweep(
        [c for i, c in enumerate(full) if i not in (1, 5)],
        _bots("bargaining", "bot:spe", "bot:spe"),
        1,
        out,
        progress=False,
    )
    rep = runner.analyze(out)
    (raw,) = rep["raw"]
    assert raw["games"] == len(full) - 2 and raw["efficiency"] == pytest.approx(1.0)
    imp = rep["imputed"]["bargaining"]
    assert imp["cells"] == len(full) and imp["params"] == ["delta_alice", "delta_bob", "money"]
    truth = [
        game_metrics(
            runner.outcome_record(
                c, runner.play_game(c, _bots("bargaining", "bot:spe", "bot:spe")(c, 0), 0)[0]
            )
        )["self_gain_alice"]
        for c in full
    ]
    sg = imp["metrics"]["self_gain_alice"]
    assert sg["interactions"]
    assert sg["imputed"] == pytest.approx(sum(truth) / len(truth), abs=1e-9)
    assert sg["raw"] != pytest.approx(sg["imputed"], abs=1e-6)  # the design is unbalanced
    assert imp["metrics"]["efficiency"]["imputed"] == pytest.approx(1.0)
    assert (out / "analysis" / "effects_bargaining.png").stat().st_size > 0
    assert "Regression-imputed" in rep["markdown"]


def test_analyze_base_design_reports_effects_not_grid_means(tmp_path):
    out = tmp_path / "s"
    rows = runner.sweep(
        runner.base_grid("bargaining"),
        _bots("bargaining", "bot:spe", "bot:fair"),
        1,
        out,
        progress=False,
    )
    imp = runner.analyze(out, plots=False)["imputed"]["bargaining"]
    eff = imp["metrics"]["efficiency"]
    assert not eff["interactions"] and eff["imputed"] != eff["imputed"]  # NaN: not identified
    # base±1: each main effect is the exact difference from the base cell (δ_A 0.95 -> 0.8)
    (d08,) = [e for e in eff["effects"]["delta_alice"] if e["level"] == 0.8]
    from paperbricks.glee.metrics import efficiency

    (cell,) = [r for r in rows if r["config"]["delta_alice"] == 0.8]
    expect = efficiency(runner._metrics_record(cell["config"], cell["outcome"])) - efficiency(
        runner._metrics_record(rows[0]["config"], rows[0]["outcome"])
    )
    assert expect == pytest.approx(0.05)  # base: one-round delay (0.95); δ_A = 0.8: agreement
    assert d08["effect"] == pytest.approx(expect, abs=1e-9)

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
    full = runner.sweep(GRID, lambda c: (Echo(), Echo()), 4, tmp_path / "a", seed=3, progress=False)
    assert len(full) == 12 and len({r["game_id"] for r in full}) == 12

    counter = [0]
    out = tmp_path / "b"
    with pytest.raises(Crash):
        runner.sweep(
            GRID, lambda c: (CrashAfter(counter, 9), Echo()), 4, out, seed=3, progress=False
        )
    assert len(_ids(out)) == 9  # the games finished before the crash are on disk
    calls = [0]

    def factory(c):
        calls[0] += 1
        return Echo(), Echo()

    resumed = runner.sweep(GRID, factory, 4, out, seed=3, progress=False)
    assert calls[0] == 3  # only the missing games were played
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 12
    assert resumed == full  # the same results as an uninterrupted sweep
    again = runner.sweep(GRID, lambda c: 1 / 0, 4, out, seed=3, progress=False)
    assert again == full and len(_ids(out)) == 12


def test_torn_last_line_is_dropped_and_replayed(toy, tmp_path):
    out = tmp_path / "s"
    full = runner.sweep(GRID, lambda c: (Echo(), Echo()), 2, out, seed=0, progress=False)
    path = out / runner.RESULTS_FILE
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # a crash mid-write
    assert len(runner.load_results(out)) == 5
    resumed = runner.sweep(GRID, lambda c: (Echo(), Echo()), 2, out, seed=0, progress=False)
    assert resumed == full
    assert path.read_bytes() == data


def test_seeds_determine_games(toy, tmp_path):
    a = runner.sweep(GRID, lambda c: (Echo(), Echo()), 2, tmp_path / "a", seed=1, progress=False)
    b = runner.sweep(GRID, lambda c: (Echo(), Echo()), 2, tmp_path / "b", seed=1, progress=False)
    c = runner.sweep(GRID, lambda c: (Echo(), Echo()), 2, tmp_path / "c", seed=2, progress=False)
    assert a == b
    assert [r["outcome"] for r in a] != [r["outcome"] for r in c]
    # a game's seed does not depend on the games before it: a sub-grid gives the same rows
    d = runner.sweep(
        GRID[1:], lambda c: (Echo(), Echo()), 2, tmp_path / "d", seed=1, progress=False
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
        runner.sweep(GRID, lambda c: (Echo(), Echo()), 1, tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    out = tmp_path / "s"
    runner.sweep(GRID, lambda c: (Echo(), Echo()), 1, out, seed=0, progress=False)
    with pytest.raises(ValueError, match="another sweep"):
        runner.sweep(GRID, lambda c: (Echo(), Echo()), 1, out, seed=1, progress=False)
    with pytest.raises(ValueError, match="n:"):
        runner.sweep(GRID, lambda c: (Echo(), Echo()), 0, tmp_path / "t", progress=False)


def test_play_game_validates(toy):
    with pytest.raises(ValueError, match="players"):
        runner.play_game(GRID[0], (Echo(),), seed=0)
    out, transcript = runner.play_game(GRID[0], (Echo(), Echo()), seed=0)
    assert out.alice_gain + out.bob_gain == 100 and len(transcript) == 2

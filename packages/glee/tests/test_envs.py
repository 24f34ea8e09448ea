"""Gymnasium environments: check_env, registration, seeding, text and structured actions."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from paperbricks.glee.bots import RandomBot
from paperbricks.glee.config import BargainingConfig, NegotiationConfig, PersuasionConfig
from paperbricks.glee.envs import (
    ENV_IDS,
    BargainingEnv,
    BargainingStructuredEnv,
    NegotiationEnv,
    NegotiationStructuredEnv,
    PersuasionEnv,
    PersuasionStructuredEnv,
    register_envs,
)


@pytest.mark.parametrize("env_id", list(ENV_IDS))
@pytest.mark.parametrize("role", ["alice", "bob"])
def test_check_env_passes(env_id, role):
    env = gym.make(env_id, role=role).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded Box maximum is deliberate
        check_env(env, skip_render_check=False)


def test_registration_is_idempotent():
    before = {k: gym.registry[k] for k in ENV_IDS}
    assert register_envs() == list(ENV_IDS)
    assert all(gym.registry[k] is before[k] for k in ENV_IDS)


def test_importing_gymnasium_alone_works_and_module_prefix_make():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('paperbricks.glee.envs:paperbricks/GLEE-Bargaining-v0')\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "BargainingEnv"


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    texts = [obs["text"]]
    for a in actions:
        obs, _, term, _, _ = env.step(a)
        texts.append(obs["text"])
        if term:
            break
    return texts, env.transcript


def test_identical_seeds_identical_transcripts():
    env = PersuasionEnv(PersuasionConfig(rounds=8), role="bob")
    acts = ['{"decision": "yes"}', "no"] * 4
    a = _rollout(env, 7, acts)
    b = _rollout(PersuasionEnv(PersuasionConfig(rounds=8), role="bob"), 7, acts)
    assert a == b
    c = [_rollout(env, s, acts)[1] for s in range(6)]
    assert any(t != a[1] for t in c)  # qualities and the KG seller's draws depend on the seed
    factory = lambda seed: RandomBot(seed=seed)  # noqa: E731
    offers = ['{"alice_gain": 600, "bob_gain": 400}', "reject"] * 5
    cfg = BargainingConfig(money=1000.0, max_rounds=10)
    r1 = _rollout(BargainingEnv(cfg, opponent=factory), 3, offers)
    r2 = _rollout(BargainingEnv(cfg, opponent=factory), 3, offers)
    assert r1 == r2


def test_text_env_spe_opponent_and_reward():
    env = BargainingEnv(BargainingConfig(delta_alice=0.9, delta_bob=0.9, money=100.0))
    obs, info = env.reset(seed=0)
    assert obs["text"] in env.observation_space["text"]
    assert "divide $100" in obs["text"] and obs["state"][1] == 1.0
    obs, r, term, _, info = env.step('{"alice_gain": "$52", "bob_gain": 48}')
    assert term and r == pytest.approx(0.52) and info["outcome"]["agreed"]


def test_format_errors_repeat_the_turn_then_forfeit():
    env = NegotiationEnv(NegotiationConfig(money=100.0), max_format_errors=2)
    env.reset(seed=0)
    obs, r, term, _, info = env.step("a fair price")
    assert not term and r == 0.0 and "product_price" in info["format_error"]
    assert "could not be used" in obs["text"]
    obs, r, term, _, info = env.step("still nothing")
    assert term and info["forfeit"] and r == 0.0


def test_negotiation_text_env_outside_option_spelling():
    # The buyer agent answers the SPE seller's offer with the outside option (either spelling).
    env = NegotiationEnv(NegotiationConfig(money=100.0, max_rounds=5), role="bob")
    obs, _ = env.reset(seed=0)
    assert obs["state"][1] == 0.0 and obs["state"][2] > 0  # responding to a pending price
    obs, r, term, _, info = env.step('{"decision": "BuyFromJohn"}')
    assert term and r == 0.0 and info["outcome"]["extra"]["end_reason"] == "outside_option:bob"


def test_structured_bargaining_meets_the_rubinstein_share():
    x = (1 - 0.9) / (1 - 0.81)  # Alice's SPE share 0.5263
    env = BargainingStructuredEnv(BargainingConfig(delta_alice=0.9, delta_bob=0.9, money=1e4))
    env.reset(seed=0)
    act = {"decision": 0, "offer": np.array([round(x, 4)], dtype=np.float32)}
    _, r, term, _, _ = env.step(act)
    assert term and r == pytest.approx(x, abs=1e-4)
    env.reset(seed=0)
    greedy = {"decision": 0, "offer": np.array([0.9], dtype=np.float32)}
    _, r, term, _, _ = env.step(greedy)  # SPE Bob rejects and counters with δ_A·x for Alice
    assert not term and r == 0.0
    _, r, term, _, _ = env.step({"decision": 0, "offer": np.zeros(1, np.float32)})  # accept
    assert term and r == pytest.approx(0.9 * x * 0.9, rel=1e-6)


def test_structured_persuasion_bob_and_negotiation_decisions():
    env = PersuasionStructuredEnv(PersuasionConfig(rounds=5), role="bob")
    env.reset(seed=1)
    total, term = 0.0, False
    while not term:
        _, r, term, _, _ = env.step({"decision": 1, "offer": np.zeros(1, np.float32)})
        total += r
    out = env.game.outcome()
    assert out.extra["sales"] == 5 and total == pytest.approx(out.bob_gain)
    neg = NegotiationStructuredEnv(NegotiationConfig(money=100.0), role="bob")
    neg.reset(seed=0)
    _, r, term, _, info = neg.step({"decision": 0, "offer": np.zeros(1, np.float32)})
    assert term and info["outcome"]["agreed"]


def test_constructor_validation():
    with pytest.raises(TypeError, match="config"):
        BargainingEnv(NegotiationConfig())
    with pytest.raises(ValueError, match="role"):
        PersuasionEnv(role="carol")
    with pytest.raises(TypeError, match="opponent"):
        BargainingEnv(opponent=3)
    with pytest.raises(RuntimeError, match="reset"):
        BargainingEnv().step("x")

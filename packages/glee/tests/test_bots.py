"""Rational bots against the game-theoretic oracles (spec §5)."""

from __future__ import annotations

import itertools

import pytest

from paperbricks.core_kernels.stats import binomial_ci
from paperbricks.glee.actions import Offer, Reject
from paperbricks.glee.bots import (
    BayesianBuyer,
    FairSplitBot,
    HonestSeller,
    KGSeller,
    NegotiationSPEBot,
    RandomBot,
    RubinsteinSPEBot,
    kg_low_recommend_prob,
    rubinstein_finite_shares,
    rubinstein_share,
)
from paperbricks.glee.config import BargainingConfig, NegotiationConfig, PersuasionConfig
from paperbricks.glee.games import BargainingGame, NegotiationGame, PersuasionGame
from paperbricks.glee.players_base import Player, play


def test_bots_are_players():
    for bot in (
        RubinsteinSPEBot(),
        NegotiationSPEBot(),
        BayesianBuyer(),
        KGSeller(0),
        HonestSeller(),
        FairSplitBot(),
        RandomBot(0),
    ):
        assert isinstance(bot, Player)
    with pytest.raises(TypeError, match="alice"):
        play(BargainingGame(BargainingConfig()), object(), RandomBot(0))


def test_rubinstein_infinite_horizon_oracle():
    out = play(
        BargainingGame(BargainingConfig(0.9, 0.9, money=1e4, max_rounds=99)),
        RubinsteinSPEBot(),
        RubinsteinSPEBot(),
    )
    assert out.agreed and out.rounds == 1
    assert out.alice_gain == pytest.approx(0.526316, abs=1e-6)
    assert out.alice_gain + out.bob_gain == pytest.approx(1.0)  # efficiency 1


@pytest.mark.parametrize(
    ("da", "db"), [(0.95, 0.8), (0.8, 0.95), (1.0, 0.9), (0.9, 1.0), (0.8, 0.8)]
)
def test_rubinstein_infinite_horizon_asymmetric(da, db):
    out = play(
        BargainingGame(BargainingConfig(da, db, money=100.0, max_rounds=99)),
        RubinsteinSPEBot(),
        RubinsteinSPEBot(),
    )
    assert out.rounds == 1
    assert out.alice_gain == pytest.approx((1 - db) / (1 - da * db))
    assert out.alice_gain + out.bob_gain == pytest.approx(1.0)


def _spe_by_discounted_utilities(da, db, T):
    """Independent backward induction on time-0 utilities (not shares): returns Alice's share.

    u[t] = (alice utility, bob utility) of SPE play from round t on, in time-0 units.
    """
    u_next = None
    for t in range(T, 0, -1):
        alice_proposes = t % 2 == 1
        d_prop, d_resp = (da, db) if alice_proposes else (db, da)
        w_prop, w_resp = d_prop ** (t - 1), d_resp ** (t - 1)
        cont_resp = 0.0 if u_next is None else (u_next[1] if alice_proposes else u_next[0])
        resp_share = cont_resp / w_resp  # responder indifferent between now and later
        prop_share = 1.0 - resp_share
        u = (prop_share * w_prop, resp_share * w_resp)
        u_next = u if alice_proposes else (u[1], u[0])
        first_share = prop_share
    return first_share  # round 1: Alice is the proposer


@pytest.mark.parametrize(
    ("da", "db", "T"),
    list(itertools.product((1.0, 0.95, 0.9, 0.8, 0.5), (1.0, 0.9, 0.6), (1, 2, 3, 4, 7, 12))),
)
def test_rubinstein_finite_horizon_backward_induction(da, db, T):
    expected = _spe_by_discounted_utilities(da, db, T)
    assert rubinstein_finite_shares(da, db, T)[0] == pytest.approx(expected, abs=1e-12)
    out = play(
        BargainingGame(BargainingConfig(da, db, money=100.0, max_rounds=T)),
        RubinsteinSPEBot(),
        RubinsteinSPEBot(),
    )
    assert out.agreed and out.rounds == 1
    assert out.alice_gain == pytest.approx(expected, abs=1e-9)
    assert out.alice_gain + out.bob_gain == pytest.approx(1.0)


def test_rubinstein_finite_limits():
    # delta = 1 and T even: Bob (the last proposer) gets everything; T odd: Alice does
    assert rubinstein_finite_shares(1.0, 1.0, 12)[0] == pytest.approx(0.0)
    assert rubinstein_finite_shares(1.0, 1.0, 11)[0] == pytest.approx(1.0)
    # finite shares converge to the infinite-horizon share
    assert rubinstein_finite_shares(0.9, 0.8, 201)[0] == pytest.approx(rubinstein_share(0.9, 0.8))
    assert rubinstein_share(1.0, 1.0) == 0.5


def test_rubinstein_responder_punishes_greed():
    cfg = BargainingConfig(0.9, 0.9, money=100.0, max_rounds=99)
    g = BargainingGame(cfg)
    g.apply(Offer(90.0))  # greedy Alice
    bob = RubinsteinSPEBot()
    assert isinstance(bob.act(g.observation("bob")), Reject)
    g.apply(Reject())
    out = play(g, RubinsteinSPEBot(), bob)
    assert out.rounds == 2
    assert out.alice_gain == pytest.approx((1 - 0.526316) * 0.9, abs=1e-6)  # Bob's SPE offer


@pytest.mark.parametrize(
    ("fa", "fb", "T"),
    list(itertools.product((0.8, 1.0, 1.2, 1.5), (0.8, 1.0, 1.2, 1.5), (1, 2, 3, 10))),
)
def test_negotiation_spe_complete_information(fa, fb, T):
    M = 1e4
    out = play(
        NegotiationGame(NegotiationConfig(fa, fb, money=M, max_rounds=T)),
        NegotiationSPEBot(),
        NegotiationSPEBot(),
    )
    if fb > fa:
        assert out.agreed and out.rounds == 1  # trade iff F_B > F_A
        expected = fb * M if T % 2 == 1 else fa * M  # last mover takes the surplus; T=1 ultimatum
        assert out.extra["price"] == pytest.approx(expected)
        assert out.alice_gain + out.bob_gain == pytest.approx(fb - fa)
    else:
        assert not out.agreed and out.alice_gain == 0.0 and out.bob_gain == 0.0
    # spec efficiency: 1[trade] if F_B > F_A, 1[no trade] if F_B < F_A, 1 if equal
    efficiency = float(out.agreed) if fb > fa else (float(not out.agreed) if fb < fa else 1.0)
    assert efficiency == 1.0


def test_negotiation_unannounced_horizon_uses_midpoint():
    out = play(
        NegotiationGame(NegotiationConfig(1.0, 1.5, money=100.0, max_rounds=30)),
        NegotiationSPEBot(),
        NegotiationSPEBot(),
    )
    assert out.agreed and out.extra["price"] == pytest.approx(125.0)


@pytest.mark.parametrize(("p", "v"), [(1 / 3, 1.2), (0.5, 1.25), (0.8, 1.2), (0.5, 3.0)])
def test_kg_seller_bayesian_buyer_sale_rate(p, v):
    games, rounds = 40, 50  # 2,000 seeded rounds in all
    sales = high = high_bought = 0
    for i in range(games):
        cfg = PersuasionConfig(p=p, v=v, rounds=rounds, message_type="binary")
        out = play(PersuasionGame(cfg, seed=1000 + i), KGSeller(seed=i), BayesianBuyer("kg"))
        sales += out.extra["sales"]
        high += out.extra["n_high"]
        high_bought += out.extra["high_bought"]
    n = games * rounds
    target = min(1.0, p * v)
    if target == 1.0:
        assert sales == n
    else:
        lo, hi = binomial_ci(sales, n, level=0.99)
        assert lo <= target <= hi, (sales / n, target)
        assert abs(sales / n - p) > 0.05  # distinguishable from honest play (rate p)
    # buys exactly on recommendations: every high-quality product is sold
    assert high_bought == high


def test_kg_probabilities():
    assert kg_low_recommend_prob(1 / 3, 1.2) == pytest.approx((1 / 3) * 0.2 / (2 / 3))
    assert kg_low_recommend_prob(0.5, 3.0) == 1.0
    # posterior after a recommendation is exactly the indifference point 1/v
    p, v = 0.3, 2.0
    q = kg_low_recommend_prob(p, v)
    assert p / (p + (1 - p) * q) * v == pytest.approx(1.0)


def test_honest_seller_trusting_buyer_is_efficient_and_fair():
    g = PersuasionGame(PersuasionConfig(p=0.5, v=1.25, rounds=200), seed=2)
    out = play(g, HonestSeller(), BayesianBuyer("honest"))
    e = out.extra
    assert e["high_bought"] / e["n_high"] == 1.0  # efficiency
    assert e["low_rejected"] / (200 - e["n_high"]) == 1.0  # fairness
    assert e["low_bought"] == 0


def test_uninformative_message_falls_back_to_prior():
    g = PersuasionGame(PersuasionConfig(p=1 / 3, v=1.2, rounds=1), seed=0)
    from paperbricks.glee.actions import Message, NoBuy

    g.apply(Message("best product ever"))
    assert isinstance(BayesianBuyer().act(g.observation("bob")), NoBuy)  # p*v = 0.4 < 1


def test_fair_split_bots():
    out = play(
        BargainingGame(BargainingConfig(0.9, 0.9, money=100.0)), FairSplitBot(), FairSplitBot()
    )
    assert out.rounds == 1 and out.alice_gain == pytest.approx(0.5)
    # against an SPE Alice the fair Bob delays: constant share, lost efficiency
    out = play(
        BargainingGame(BargainingConfig(0.9, 0.9, money=100.0)), RubinsteinSPEBot(), FairSplitBot()
    )
    assert out.rounds == 2 and out.alice_gain + out.bob_gain == pytest.approx(0.9)
    out = play(
        NegotiationGame(NegotiationConfig(1.0, 1.5, money=100.0)), FairSplitBot(), FairSplitBot()
    )
    assert out.extra["price"] == pytest.approx(125.0)
    with pytest.raises(ValueError, match="FairSplitBot"):
        FairSplitBot().act(PersuasionGame(PersuasionConfig(), seed=0).observation("alice"))


@pytest.mark.parametrize("seed", range(5))
def test_random_bot_always_legal(seed):
    for cfg in (
        BargainingConfig(max_rounds=12),
        NegotiationConfig(max_rounds=10),
        PersuasionConfig(rounds=5),
    ):
        from paperbricks.glee.games import make_game

        out = play(make_game(cfg, seed=seed), RandomBot(seed), RandomBot(seed + 100))
        assert out.family == cfg.family


def test_bot_argument_errors():
    with pytest.raises(ValueError, match="horizon"):
        RubinsteinSPEBot(horizon="forever")
    with pytest.raises(ValueError, match="assumed_policy"):
        BayesianBuyer("gullible")
    with pytest.raises(ValueError, match="delta_proposer"):
        rubinstein_share(0.0, 0.5)
    with pytest.raises(ValueError, match="family"):
        RubinsteinSPEBot().act(NegotiationGame(NegotiationConfig()).observation("alice"))

"""Rational and heuristic bots for the GLEE games (spec §5 oracles), all `Player`s.

* `RubinsteinSPEBot`: subgame-perfect play in alternating-offer bargaining. Finite announced
  horizon T: backward induction, the proposer at T takes everything and earlier
  s_t = 1 − δ_resp·s_{t+1}; unannounced horizon (T > 20) or ``horizon="infinite"``: Alice's
  share (1 − δ_B)/(1 − δ_A·δ_B) when she proposes (Bob's symmetric). δ_A = δ_B = 1 with no
  horizon has no unique SPE; the bot then splits evenly (the δ → 1 limit).
* `NegotiationSPEBot`: complete-information SPE with δ = 1: trade iff F_B > F_A at the last
  mover's price (T odd: F_B·M, T even: F_A·M; T = 1 is the ultimatum F_B·M); without
  gains from trade the responder takes the outside option.
* `BayesianBuyer`: buys iff posterior·v + (1 − posterior)·c >= 1 under an assumed seller policy.
* `KGSeller`: Kamenica–Gentzkow commitment-optimal signal (always recommend high quality, low
  with probability q = p(v−1)/(1−p) when p·v < 1), seeded.
* `HonestSeller`, `FairSplitBot`, `RandomBot(seed)`.

With incomplete information a bot that misses the opponent's δ or value assumes it equals its
own (documented heuristic; the SPE oracles are stated for complete information).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .actions import Accept, Action, Buy, Message, NoBuy, Offer, OutsideOption, Reject, Signal

__all__ = [
    "BayesianBuyer",
    "FairSplitBot",
    "HonestSeller",
    "KGSeller",
    "NegotiationSPEBot",
    "RandomBot",
    "RubinsteinSPEBot",
    "kg_low_recommend_prob",
    "rubinstein_finite_shares",
    "rubinstein_share",
]

_TOL = 1e-9


def _family(view: Mapping[str, Any], allowed: tuple[str, ...], bot: str) -> str:
    fam = view.get("family")
    if fam not in allowed:
        raise ValueError(f"game_view: {bot} plays {allowed}, got family {fam!r}")
    return fam


def rubinstein_share(delta_proposer: float, delta_responder: float) -> float:
    """Infinite-horizon SPE share of the proposer: (1 − δ_resp)/(1 − δ_prop·δ_resp).

    Both δ = 1 is degenerate (any split is an equilibrium); returns 0.5.

    Examples:
        >>> round(rubinstein_share(0.9, 0.9), 6)
        0.526316
    """
    for name, d in (("delta_proposer", delta_proposer), ("delta_responder", delta_responder)):
        if not 0.0 < d <= 1.0:
            raise ValueError(f"{name}: expected a value in (0, 1], got {d!r}")
    den = 1.0 - delta_proposer * delta_responder
    if den <= 0.0:
        return 0.5
    return (1.0 - delta_responder) / den


def rubinstein_finite_shares(delta_alice: float, delta_bob: float, horizon: int) -> list[float]:
    """Proposer's SPE share s_t for t = 1..T by backward induction (s_T = 1).

    Alice proposes in odd rounds; the responder of round t is offered δ_resp·s_{t+1}.

    Examples:
        >>> [round(s, 3) for s in rubinstein_finite_shares(0.5, 0.5, 3)]
        [0.75, 0.5, 1.0]
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon: expected an int >= 1, got {horizon!r}")
    shares = [0.0] * horizon
    shares[-1] = 1.0
    for t in range(horizon - 1, 0, -1):  # t is 1-based index of round t
        responder_delta = delta_bob if t % 2 == 1 else delta_alice
        shares[t - 1] = 1.0 - responder_delta * shares[t]
    return shares


class RubinsteinSPEBot:
    """Subgame-perfect bargaining bot (either role).

    Args:
        horizon: ``"auto"`` (finite backward induction iff the view announces the round limit,
            else infinite horizon), ``"finite"`` (requires an announced limit or
            ``max_rounds``), or ``"infinite"``. Default ``"auto"``.
        max_rounds: horizon to use with ``horizon="finite"`` when the view does not show it.

    Examples:
        >>> from paperbricks.glee.config import BargainingConfig
        >>> from paperbricks.glee.games import BargainingGame
        >>> g = BargainingGame(BargainingConfig(0.9, 0.9, max_rounds=99))
        >>> round(RubinsteinSPEBot().act(g.observation("alice")).amount, 1)
        5263.2
    """

    def __init__(self, horizon: str = "auto", max_rounds: int | None = None) -> None:
        if horizon not in ("auto", "finite", "infinite"):
            raise ValueError(f"horizon: expected 'auto', 'finite' or 'infinite', got {horizon!r}")
        self.horizon = horizon
        self.max_rounds = max_rounds

    def _deltas(self, view: Mapping[str, Any]) -> tuple[float, float]:
        cfg = view["config"]
        own = cfg[f"delta_{view['role']}"]
        return cfg.get("delta_alice", own), cfg.get("delta_bob", own)

    def proposer_share(self, view: Mapping[str, Any], round_: int) -> float:
        """SPE share of the proposer of ``round_`` (as a fraction of M)."""
        da, db = self._deltas(view)
        T = view["config"].get("max_rounds") or self.max_rounds
        finite = self.horizon == "finite" or (self.horizon == "auto" and T is not None)
        if finite:
            if T is None:
                raise ValueError("max_rounds: horizon='finite' needs an announced or given horizon")
            return rubinstein_finite_shares(da, db, int(T))[round_ - 1]
        return rubinstein_share(da, db) if round_ % 2 == 1 else rubinstein_share(db, da)

    def act(self, game_view: Mapping[str, Any]) -> Action:
        _family(game_view, ("bargaining",), "RubinsteinSPEBot")
        M = float(game_view["config"]["money"])
        t = game_view["round"]
        role = game_view["role"]
        if game_view["pending_offer"] is None:
            s = self.proposer_share(game_view, t)
            return Offer(s * M if role == "alice" else (1.0 - s) * M)
        alice_money = float(game_view["pending_offer"])
        mine = alice_money if role == "alice" else M - alice_money
        T = game_view["config"].get("max_rounds") or self.max_rounds
        last = self.horizon != "infinite" and T is not None and t >= int(T)
        if last:
            return Accept()
        da, db = self._deltas(game_view)
        my_delta = da if role == "alice" else db
        continuation = my_delta * self.proposer_share(game_view, t + 1) * M
        return Accept() if mine >= continuation - _TOL * M else Reject()


class NegotiationSPEBot:
    """Complete-information negotiation SPE bot (δ = 1; either seat).

    The price is the last mover's: F_B·M if T is odd (the seller proposes last), F_A·M if T is
    even. An unannounced horizon (T > 20) has no unique SPE with δ = 1; the bot then uses the
    midpoint (F_A + F_B)/2·M (or ``max_rounds`` if given).

    Args:
        max_rounds: horizon to assume when the view does not announce one (default: midpoint).
    """

    def __init__(self, max_rounds: int | None = None) -> None:
        self.max_rounds = max_rounds

    @staticmethod
    def _values(view: Mapping[str, Any]) -> tuple[float, float]:
        cfg = view["config"]
        own = cfg["seller_value"] if view["role"] == "alice" else cfg["buyer_value"]
        return cfg.get("seller_value", own), cfg.get("buyer_value", own)

    def target_price(self, view: Mapping[str, Any]) -> float:
        """The SPE trade price in money units."""
        fa, fb = self._values(view)
        M = float(view["config"]["money"])
        T = view["config"].get("max_rounds") or self.max_rounds
        if T is None:
            return 0.5 * (fa + fb) * M
        return (fb if int(T) % 2 == 1 else fa) * M

    def act(self, game_view: Mapping[str, Any]) -> Action:
        _family(game_view, ("negotiation",), "NegotiationSPEBot")
        fa, fb = self._values(game_view)
        M = float(game_view["config"]["money"])
        seller = game_view["role"] == "alice"
        price = self.target_price(game_view)
        if game_view["pending_offer"] is None:
            return Offer(price)
        offered = float(game_view["pending_offer"])
        if fb <= fa:
            return OutsideOption()
        gain = offered - fa * M if seller else fb * M - offered
        T = game_view["config"].get("max_rounds") or self.max_rounds
        last = T is not None and game_view["round"] >= int(T)
        if last:
            return Accept() if gain >= -_TOL * M else OutsideOption()
        better = offered >= price - _TOL * M if seller else offered <= price + _TOL * M
        return Accept() if gain >= -_TOL * M and better else Reject()


def kg_low_recommend_prob(p: float, v: float, c: float = 0.0) -> float:
    """Commitment-optimal probability of recommending a low-quality product.

    The buyer buys on a recommendation iff the posterior μ satisfies μ·v + (1−μ)·c >= 1, i.e.
    μ >= μ* = (1−c)/(v−c); q = p(1−μ*)/((1−p)μ*) capped at 1 (= p(v−1)/(1−p) for c = 0).

    Examples:
        >>> round(kg_low_recommend_prob(1 / 3, 1.2), 4)
        0.1
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: expected a value in (0, 1), got {p!r}")
    if v < 1.0 or not 0.0 <= c <= 1.0:
        raise ValueError(f"v, c: expected v >= 1 and 0 <= c <= 1, got v={v!r}, c={c!r}")
    if c >= 1.0 or v <= c:
        return 1.0
    mu = (1.0 - c) / (v - c)
    return min(1.0, p * (1.0 - mu) / ((1.0 - p) * mu))


class KGSeller:
    """Kamenica–Gentzkow seller: recommend high quality always, low with probability q.

    Args:
        seed: seed of the bot's own generator (``numpy.random.default_rng``).
        assumed_v / assumed_c: buyer values to use when the view hides them
            (``seller_knows_values=False``); without them the seller recommends always.
    """

    def __init__(
        self, seed: int | None = None, assumed_v: float | None = None, assumed_c: float = 0.0
    ) -> None:
        self._rng = np.random.default_rng(seed)
        self.assumed_v = assumed_v
        self.assumed_c = assumed_c

    def act(self, game_view: Mapping[str, Any]) -> Action:
        _family(game_view, ("persuasion",), "KGSeller")
        cfg = game_view["config"]
        v = cfg.get("v", self.assumed_v)
        c = cfg.get("c", self.assumed_c) if "v" in cfg else self.assumed_c
        if game_view["quality_high"]:
            return Signal(True)
        q = 1.0 if v is None else kg_low_recommend_prob(cfg["p"], v, c)
        return Signal(bool(self._rng.random() < q))


class HonestSeller:
    """Recommends exactly when the quality is high."""

    def act(self, game_view: Mapping[str, Any]) -> Action:
        _family(game_view, ("persuasion",), "HonestSeller")
        return Signal(bool(game_view["quality_high"]))


class BayesianBuyer:
    """Buys iff the posterior expected value of the product is at least the price.

    Args:
        assumed_policy: the seller strategy the buyer believes in: ``"kg"`` (commitment-optimal
            for the visible p, v, c), ``"honest"``, or a pair (P(recommend | high),
            P(recommend | low)). Free-text messages are treated as uninformative.
    """

    def __init__(self, assumed_policy: str | tuple[float, float] = "kg") -> None:
        if isinstance(assumed_policy, str):
            if assumed_policy not in ("kg", "honest"):
                raise ValueError(
                    f"assumed_policy: expected 'kg', 'honest' or a pair, got {assumed_policy!r}"
                )
        elif not (
            isinstance(assumed_policy, tuple)
            and len(assumed_policy) == 2
            and all(0.0 <= x <= 1.0 for x in assumed_policy)
        ):
            raise ValueError(
                f"assumed_policy: expected a pair of probabilities, got {assumed_policy!r}"
            )
        self.assumed_policy = assumed_policy

    def act(self, game_view: Mapping[str, Any]) -> Action:
        _family(game_view, ("persuasion",), "BayesianBuyer")
        cfg = game_view["config"]
        p, v, c = cfg["p"], cfg["v"], cfg["c"]
        if self.assumed_policy == "kg":
            rh, rl = 1.0, kg_low_recommend_prob(p, v, c)
        elif self.assumed_policy == "honest":
            rh, rl = 1.0, 0.0
        else:
            rh, rl = self.assumed_policy
        signal = game_view.get("signal") or {}
        if signal.get("kind") == "signal":
            lh, ll = (rh, rl) if signal["recommend"] else (1.0 - rh, 1.0 - rl)
            den = p * lh + (1.0 - p) * ll
            mu = p if den <= 0.0 else p * lh / den
        else:
            mu = p
        value = mu * v + (1.0 - mu) * c
        return Buy() if value >= 1.0 - 1e-9 else NoBuy()


class FairSplitBot:
    """Proposes the even split and accepts offers at least as good for itself.

    Bargaining: offers M/2, accepts a share >= M/2. Negotiation: offers the midpoint
    (F_A + F_B)/2·M when the other's value is known (else its own value) and accepts any price
    at least as good as that; walks away (outside option) from offers below its own value.
    """

    def act(self, game_view: Mapping[str, Any]) -> Action:
        fam = _family(game_view, ("bargaining", "negotiation"), "FairSplitBot")
        cfg = game_view["config"]
        M = float(cfg["money"])
        role = game_view["role"]
        if fam == "bargaining":
            if game_view["pending_offer"] is None:
                return Offer(0.5 * M)
            a = float(game_view["pending_offer"])
            mine = a if role == "alice" else M - a
            return Accept() if mine >= 0.5 * M - _TOL * M else Reject()
        own = cfg["seller_value"] if role == "alice" else cfg["buyer_value"]
        fa, fb = cfg.get("seller_value", own), cfg.get("buyer_value", own)
        fair = 0.5 * (fa + fb) * M
        if game_view["pending_offer"] is None:
            return Offer(fair)
        offered = float(game_view["pending_offer"])
        seller = role == "alice"
        if (seller and offered < own * M) or (not seller and offered > own * M):
            return OutsideOption()
        good = offered >= fair - _TOL * M if seller else offered <= fair + _TOL * M
        return Accept() if good else Reject()


class RandomBot:
    """Uniformly random legal actions, seeded.

    Offers are uniform in [0, M] (bargaining) or [0, 2·max value·M] (negotiation, capped by the
    legal range).

    Args:
        seed: seed of the bot's own generator.
        messages: attach a short message when messages are allowed (default False).
    """

    def __init__(self, seed: int | None = None, messages: bool = False) -> None:
        self._rng = np.random.default_rng(seed)
        self.messages = messages

    def act(self, game_view: Mapping[str, Any]) -> Action:
        fam = _family(game_view, ("bargaining", "negotiation", "persuasion"), "RandomBot")
        legal = game_view.get("legal")
        if not legal or not legal["kinds"]:
            raise ValueError("game_view: it is not this player's turn (no legal actions)")
        kind = legal["kinds"][int(self._rng.integers(len(legal["kinds"])))]
        msg = "hello" if self.messages and legal.get("message") else None
        cfg = game_view["config"]
        M = float(cfg["money"])
        if kind == "offer":
            if fam == "bargaining":
                hi = M
            else:
                vals = [cfg[k] for k in ("seller_value", "buyer_value") if k in cfg]
                hi = min(legal["offer"]["max"], 2.0 * max(vals) * M)
            amount = float(self._rng.uniform(0.0, hi))
            return Offer(amount if math.isfinite(amount) else 0.0, msg)
        if kind == "signal":
            return Signal(bool(self._rng.random() < 0.5))
        if kind == "message":
            return Message("random message")
        return {
            "accept": Accept,
            "reject": Reject,
            "outside_option": OutsideOption,
            "buy": Buy,
            "no_buy": NoBuy,
        }[kind]()

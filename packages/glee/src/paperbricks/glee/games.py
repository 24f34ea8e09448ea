"""GLEE game engines (arXiv 2410.05254, spec §2): pure, seedable state machines.

`BargainingGame` (Rubinstein alternating offers with discounting), `NegotiationGame` (bilateral
trade with outside options) and `PersuasionGame` (repeated seller–buyer game with a verifiable
quality). Each exposes ``current_player`` (``"alice"``/``"bob"``, ``None`` when ``done``),
``legal_actions()``, ``apply(action)`` (alias ``step``), ``observation(player)`` (a dict filtered
by the information structure), ``transcript`` (list of dicts) and ``outcome()``.

Differences from the official code: persuasion quality is drawn from a ``numpy`` generator
seeded by the constructor (GLEE uses the global ``random``); illegal actions raise instead of
asserting; the bargaining no-deal outcome gives both players 0 (the official metric gives Bob
δ_B^(T−1); the compat value is recorded in ``Outcome.extra`` for the metrics module).

Outcome definitions (all gains normalised by ``money`` M, matching the corrected self-gain):

* bargaining: p = Alice's share, t = agreement round; alice_gain = p·δ_A^(t−1),
  bob_gain = (1−p)·δ_B^(t−1); both 0 without agreement.
* negotiation: p = price/M; with trade alice_gain = p − F_A, bob_gain = F_B − p; else 0.
  ``agreed`` means the responder accepted an offer.
* persuasion: over R rounds with n high-quality rounds, k = high & bought, ℓ = low & bought:
  alice_gain = sales/R (seller), bob_gain = [k(v−1) + ℓ(c−1)]/R (buyer); ``agreed`` = any sale.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .actions import (
    Accept,
    Action,
    Buy,
    Offer,
    OutsideOption,
    Signal,
    action_to_dict,
)
from .config import BargainingConfig, NegotiationConfig, PersuasionConfig

__all__ = [
    "PLAYERS",
    "BargainingGame",
    "Game",
    "IllegalActionError",
    "NegotiationGame",
    "Outcome",
    "PersuasionGame",
    "make_game",
]

PLAYERS = ("alice", "bob")


class IllegalActionError(ValueError):
    """An action that the rules do not allow in the current state."""


@dataclass(frozen=True)
class Outcome:
    """Result of one finished game (see the module docstring for the exact definitions).

    Attributes:
        family: ``"bargaining"``, ``"negotiation"`` or ``"persuasion"``.
        agreed: a deal was made (bargaining/negotiation) or anything was sold (persuasion).
        rounds: rounds played (the agreement round when agreed).
        alice_gain / bob_gain: normalised self-gains (by M).
        money: M.
        extra: family-specific details (shares, price, counts, compat values).
    """

    family: str
    agreed: bool
    rounds: int
    alice_gain: float
    bob_gain: float
    money: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly dict (``extra`` copied)."""
        d = dataclasses.asdict(self)
        d["extra"] = copy.deepcopy(self.extra)
        return d


def _other(player: str) -> str:
    return "bob" if player == "alice" else "alice"


def _check_player(player: Any) -> str:
    if player not in PLAYERS:
        raise ValueError(f"player: expected 'alice' or 'bob', got {player!r}")
    return player


class _OfferGame:
    """Shared alternating-offer machinery for bargaining and negotiation."""

    family = ""

    def __init__(self, config: Any, seed: int | None = None) -> None:
        self.config = config
        self.seed = seed
        self.round = 1
        self.done = False
        self.pending: Offer | None = None
        self.transcript: list[dict[str, Any]] = []
        self._end: dict[str, Any] | None = None

    # ------------------------------------------------------------------ state
    @property
    def proposer(self) -> str:
        """The proposer of the current round: Alice in odd rounds, Bob in even ones."""
        return "alice" if self.round % 2 == 1 else "bob"

    @property
    def current_player(self) -> str | None:
        """Who moves next (``None`` once the game is over)."""
        if self.done:
            return None
        return self.proposer if self.pending is None else _other(self.proposer)

    def legal_actions(self) -> dict[str, Any]:
        """What the current player may do: ``{"player", "kinds", "offer" (range or None), "message"}``."""
        if self.done:
            return {"player": None, "kinds": (), "offer": None, "message": False}
        if self.pending is None:
            return {
                "player": self.current_player,
                "kinds": ("offer",),
                "offer": self._offer_range(),
                "message": self.config.messages,
            }
        kinds = ("accept", "reject") + (("outside_option",) if self.family == "negotiation" else ())
        return {"player": self.current_player, "kinds": kinds, "offer": None, "message": False}

    def _offer_range(self) -> dict[str, Any]:
        raise NotImplementedError

    # --------------------------------------------------------------- dynamics
    def apply(self, action: Action) -> None:
        """Apply the current player's action; raises `IllegalActionError` if not allowed."""
        if self.done:
            raise IllegalActionError("action: the game is over; no further actions are allowed")
        player = self.current_player
        legal = self.legal_actions()
        kind = getattr(action, "kind", None)
        if kind not in legal["kinds"]:
            raise IllegalActionError(
                f"action: {player} may play {legal['kinds']} in round {self.round}, got {action!r}"
            )
        message = getattr(action, "message", None)
        if message is not None and not self.config.messages:
            raise IllegalActionError("action: messages are disabled in this configuration")
        entry = {"round": self.round, "player": player, **action_to_dict(action)}
        if isinstance(action, Offer):
            rng = legal["offer"]
            if not rng["min"] <= action.amount <= rng["max"]:
                raise IllegalActionError(
                    f"action: offer amount must lie in [{rng['min']}, {rng['max']}], "
                    f"got {action.amount!r}"
                )
            self._annotate_offer(entry, action)
            self.transcript.append(entry)
            self.pending = action
            return
        self.transcript.append(entry)
        if isinstance(action, Accept):
            self._finish(agreed=True, via="accept")
        elif isinstance(action, OutsideOption):
            self._finish(agreed=False, via=f"outside_option:{player}")
        else:  # Reject
            if self.round >= self.config.max_rounds:
                self._finish(agreed=False, via="horizon")
            else:
                self.round += 1
                self.pending = None

    step = apply

    def _annotate_offer(self, entry: dict[str, Any], offer: Offer) -> None:
        pass

    def _finish(self, *, agreed: bool, via: str) -> None:
        self.done = True
        self._end = {"agreed": agreed, "via": via, "offer": self.pending, "round": self.round}

    def _base_observation(self, player: str) -> dict[str, Any]:
        return {
            "family": self.family,
            "role": player,
            "round": self.round,
            "done": self.done,
            "your_turn": self.current_player == player,
            "proposer": self.proposer,
            "pending_offer": None if self.pending is None else self.pending.amount,
            "pending_message": None if self.pending is None else self.pending.message,
            "legal": self.legal_actions() if self.current_player == player else None,
            "history": [dict(e) for e in self.transcript],
        }

    def _require_done(self) -> dict[str, Any]:
        if not self.done or self._end is None:
            raise IllegalActionError("outcome: the game is not over yet")
        return self._end


class BargainingGame(_OfferGame):
    """Rubinstein alternating-offer bargaining over ``config.money`` (spec §2 Bargaining).

    Args:
        config: a `BargainingConfig`.
        seed: recorded for reproducibility (the game itself draws no randomness).

    Examples:
        >>> g = BargainingGame(BargainingConfig(delta_alice=0.9, delta_bob=0.9))
        >>> g.apply(Offer(6000.0)); g.apply(Accept())
        >>> round(g.outcome().alice_gain, 2), g.outcome().rounds
        (0.6, 1)
    """

    family = "bargaining"

    def __init__(self, config: BargainingConfig, seed: int | None = None) -> None:
        if not isinstance(config, BargainingConfig):
            raise TypeError(f"config: expected BargainingConfig, got {type(config).__name__}")
        super().__init__(config, seed)

    def _offer_range(self) -> dict[str, Any]:
        return {"min": 0.0, "max": float(self.config.money), "meaning": "alice_gain"}

    def _annotate_offer(self, entry: dict[str, Any], offer: Offer) -> None:
        entry["alice_gain"] = float(offer.amount)
        entry["bob_gain"] = float(self.config.money) - float(offer.amount)

    def observation(self, player: str) -> dict[str, Any]:
        """What ``player`` sees; with incomplete information only its own δ."""
        _check_player(player)
        cfg = self.config
        visible = {
            "money": cfg.money,
            "messages": cfg.messages,
            "complete_information": cfg.complete_information,
            "max_rounds": cfg.max_rounds if cfg.horizon_announced else None,
            f"delta_{player}": getattr(cfg, f"delta_{player}"),
        }
        if cfg.complete_information:
            other = _other(player)
            visible[f"delta_{other}"] = getattr(cfg, f"delta_{other}")
        obs = self._base_observation(player)
        obs["config"] = visible
        return obs

    def outcome(self) -> Outcome:
        """Discounted normalised shares; no deal gives 0 to both (see module docstring)."""
        end = self._require_done()
        cfg = self.config
        t = end["round"]
        compat_bob = cfg.delta_bob ** (cfg.max_rounds - 1)
        if end["agreed"]:
            share = float(end["offer"].amount) / float(cfg.money)
            a = share * cfg.delta_alice ** (t - 1)
            b = (1.0 - share) * cfg.delta_bob ** (t - 1)
            extra = {"alice_share": share, "alice_money": float(end["offer"].amount)}
        else:
            a = b = 0.0
            extra = {"alice_share": None, "alice_money": None}
        extra.update(end_reason=end["via"], glee_compat_bob_no_deal=compat_bob)
        return Outcome("bargaining", end["agreed"], t, a, b, float(cfg.money), extra)


class NegotiationGame(_OfferGame):
    """Bilateral trade with outside options; seller Alice, buyer Bob (spec §2 Negotiation).

    Args:
        config: a `NegotiationConfig`.
        seed: recorded for reproducibility (the game itself draws no randomness).

    Examples:
        >>> g = NegotiationGame(NegotiationConfig(seller_value=1.0, buyer_value=1.2, money=100.0))
        >>> g.apply(Offer(110.0)); g.apply(Accept())
        >>> round(g.outcome().alice_gain, 3), round(g.outcome().bob_gain, 3)
        (0.1, 0.1)
    """

    family = "negotiation"

    def __init__(self, config: NegotiationConfig, seed: int | None = None) -> None:
        if not isinstance(config, NegotiationConfig):
            raise TypeError(f"config: expected NegotiationConfig, got {type(config).__name__}")
        super().__init__(config, seed)

    def _offer_range(self) -> dict[str, Any]:
        return {"min": 0.0, "max": float("inf"), "meaning": "price"}

    def _annotate_offer(self, entry: dict[str, Any], offer: Offer) -> None:
        entry["product_price"] = float(offer.amount)

    def observation(self, player: str) -> dict[str, Any]:
        """What ``player`` sees: its own value, the other's only with complete information."""
        _check_player(player)
        cfg = self.config
        own = "seller_value" if player == "alice" else "buyer_value"
        other = "buyer_value" if player == "alice" else "seller_value"
        visible = {
            "money": cfg.money,
            "messages": cfg.messages,
            "complete_information": cfg.complete_information,
            "max_rounds": cfg.max_rounds if cfg.horizon_announced else None,
            own: getattr(cfg, own),
        }
        if cfg.complete_information:
            visible[other] = getattr(cfg, other)
        obs = self._base_observation(player)
        obs["config"] = visible
        obs["seat"] = "seller" if player == "alice" else "buyer"
        return obs

    def outcome(self) -> Outcome:
        """Gains relative to valuations with trade, else 0 (see module docstring)."""
        end = self._require_done()
        cfg = self.config
        if end["agreed"]:
            price = float(end["offer"].amount)
            p = price / float(cfg.money)
            a, b = p - cfg.seller_value, cfg.buyer_value - p
        else:
            price, a, b = None, 0.0, 0.0
        extra = {
            "price": price,
            "trade": end["agreed"],
            "end_reason": end["via"],
            "seller_value": cfg.seller_value,
            "buyer_value": cfg.buyer_value,
        }
        return Outcome("negotiation", end["agreed"], end["round"], a, b, float(cfg.money), extra)


class PersuasionGame:
    """Repeated persuasion with verifiable quality; seller Alice, buyer Bob (spec §2 Persuasion).

    Each round: nature draws quality (high with probability p) from the game's own generator,
    the seller (who sees it) sends a `Signal` (or a `Message` in text mode), the buyer answers
    `Buy`/`NoBuy`, then the quality is revealed.

    Args:
        config: a `PersuasionConfig`.
        seed: seed of the quality draws (``numpy.random.default_rng(seed)``); ``None`` = fresh
            entropy.

    Examples:
        >>> g = PersuasionGame(PersuasionConfig(rounds=1), seed=0)
        >>> g.apply(Signal(True)); g.apply(Buy())
        >>> g.outcome().alice_gain
        1.0
    """

    family = "persuasion"

    def __init__(self, config: PersuasionConfig, seed: int | None = None) -> None:
        if not isinstance(config, PersuasionConfig):
            raise TypeError(f"config: expected PersuasionConfig, got {type(config).__name__}")
        self.config = config
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.round = 1
        self.done = False
        self.transcript: list[dict[str, Any]] = []
        self.qualities: list[bool] = []
        self.decisions: list[bool] = []
        self._signal: Action | None = None
        self._draw()

    def _draw(self) -> None:
        high = bool(self._rng.random() < self.config.p)
        self.qualities.append(high)
        self.transcript.append(
            {"round": self.round, "player": "nature", "kind": "quality", "high": high}
        )

    @property
    def quality_high(self) -> bool:
        """This round's quality (visible to the seller only)."""
        return self.qualities[-1]

    @property
    def current_player(self) -> str | None:
        """``"alice"`` (seller) then ``"bob"`` (buyer) each round; ``None`` when done."""
        if self.done:
            return None
        return "alice" if self._signal is None else "bob"

    def legal_actions(self) -> dict[str, Any]:
        """``{"player", "kinds", "message"}`` for the current player."""
        if self.done:
            return {"player": None, "kinds": (), "message": False}
        if self._signal is None:
            kinds = ("signal", "message") if self.config.message_type == "text" else ("signal",)
            return {
                "player": "alice",
                "kinds": kinds,
                "message": self.config.message_type == "text",
            }
        return {"player": "bob", "kinds": ("buy", "no_buy"), "message": True}

    def apply(self, action: Action) -> None:
        """Apply the current player's action; raises `IllegalActionError` if not allowed."""
        if self.done:
            raise IllegalActionError("action: the game is over; no further actions are allowed")
        legal = self.legal_actions()
        kind = getattr(action, "kind", None)
        if kind not in legal["kinds"]:
            raise IllegalActionError(
                f"action: {legal['player']} may play {legal['kinds']} in round {self.round}, "
                f"got {action!r}"
            )
        if isinstance(action, Signal) and action.message is not None and not legal["message"]:
            raise IllegalActionError("action: binary mode allows no free-text message")
        self.transcript.append(
            {"round": self.round, "player": legal["player"], **action_to_dict(action)}
        )
        if self._signal is None:
            self._signal = action
            return
        self.decisions.append(isinstance(action, Buy))
        self._signal = None
        if self.round >= self.config.rounds:
            self.done = True
        else:
            self.round += 1
            self._draw()

    step = apply

    def _record(self) -> dict[str, int]:
        sold = sum(self.decisions)
        high_sold = sum(q and d for q, d in zip(self.qualities, self.decisions, strict=False))
        return {
            "rounds_played": len(self.decisions),
            "sales": sold,
            "high_quality_sales": high_sold,
        }

    def observation(self, player: str) -> dict[str, Any]:
        """Seller: quality + full history; buyer: signal, history (or only the record if myopic)."""
        _check_player(player)
        cfg = self.config
        visible: dict[str, Any] = {
            "p": cfg.p,
            "money": cfg.money,
            "rounds": cfg.rounds,
            "message_type": cfg.message_type,
            "myopic": cfg.myopic,
        }
        if player == "bob" or cfg.seller_knows_values:
            visible.update(v=cfg.v, c=cfg.c)
        obs: dict[str, Any] = {
            "family": self.family,
            "role": player,
            "seat": "seller" if player == "alice" else "buyer",
            "round": self.round,
            "done": self.done,
            "your_turn": self.current_player == player,
            "legal": self.legal_actions() if self.current_player == player else None,
            "config": visible,
            "record": self._record(),
        }
        # revealed history: nature rows only for finished rounds
        finished = len(self.decisions)
        hist = [
            e
            for e in self.transcript
            if e["player"] != "nature" or e["round"] <= finished or player == "alice"
        ]
        if player == "alice":
            obs["quality_high"] = None if self.done else self.quality_high
            obs["history"] = [dict(e) for e in hist]
        else:
            obs["history"] = [] if cfg.myopic else [dict(e) for e in hist]
            obs["signal"] = None if self._signal is None else action_to_dict(self._signal)
        return obs

    def outcome(self) -> Outcome:
        """Seller revenue share and buyer utility over all rounds (see module docstring)."""
        if not self.done:
            raise IllegalActionError("outcome: the game is not over yet")
        cfg = self.config
        R = cfg.rounds
        qd = list(zip(self.qualities, self.decisions, strict=True))
        n = sum(q for q, _ in qd)
        k = sum(q and d for q, d in qd)
        ell = sum((not q) and d for q, d in qd)
        r = sum((not q) and (not d) for q, d in qd)
        sales = k + ell
        extra = {
            "n_high": n,
            "high_bought": k,
            "low_rejected": r,
            "low_bought": ell,
            "sales": sales,
            "p": cfg.p,
            "v": cfg.v,
            "c": cfg.c,
            "qualities": list(self.qualities),
            "decisions": list(self.decisions),
        }
        return Outcome(
            "persuasion",
            sales > 0,
            R,
            sales / R,
            (k * (cfg.v - 1.0) + ell * (cfg.c - 1.0)) / R,
            float(cfg.money),
            extra,
        )


Game = BargainingGame | NegotiationGame | PersuasionGame

_GAMES = {
    "bargaining": BargainingGame,
    "negotiation": NegotiationGame,
    "persuasion": PersuasionGame,
}


def make_game(config: Any, seed: int | None = None) -> Game:
    """The engine matching ``config``'s family."""
    fam = getattr(config, "family", None)
    if fam not in _GAMES:
        raise TypeError(f"config: expected a GLEE config dataclass, got {type(config).__name__}")
    return _GAMES[fam](config, seed=seed)

"""Game configurations of GLEE (arXiv 2410.05254, §2 of the spec): one frozen dataclass per family.

Each dataclass is validated against the *rules* of its game (ranges, types), not against the
official grid: any discount in (0, 1], any positive money, any horizon >= 1 is a legal game.
`official_grid(family)` yields exactly the official factorial grids (384 bargaining, 576
negotiation, 360 persuasion configurations) and `BASE_CONFIG[family]` the paper's base
configurations.

Differences from the official code: one source of truth for the discount factors (the config,
never a player attribute), the persuasion round count is a recorded field (default 20, the
official sweep used 25), and the base persuasion/negotiation flags not given in the paper are our
documented choice (complete information and messages on; p = 1/3, v = 1.2, text messages,
non-myopic).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BASE_CONFIG",
    "FAMILIES",
    "BargainingConfig",
    "GameConfig",
    "NegotiationConfig",
    "PersuasionConfig",
    "config_from_dict",
    "official_grid",
]

FAMILIES = ("bargaining", "negotiation", "persuasion")

#: Round limits are shown to the players only when ``0 < T <= ANNOUNCE_LIMIT`` (spec §2 Horizon).
ANNOUNCE_LIMIT = 20


def _check_number(
    name: str, value: Any, *, low: float, high: float, low_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    bad_low = value <= low if low_open else value < low
    if bad_low or value > high:
        lo = "(" if low_open else "["
        raise ValueError(f"{name}: expected a value in {lo}{low}, {high}], got {value!r}")


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class BargainingConfig:
    """Rubinstein alternating-offer bargaining over ``money`` with per-player discounting.

    Args:
        delta_alice: Alice's discount factor δ_A in (0, 1]; money received in round t is worth
            x·δ_A^(t−1) to her. Default 0.95.
        delta_bob: Bob's discount factor δ_B in (0, 1]. Default 0.95.
        money: the amount M being split, > 0. Default 10,000.
        max_rounds: horizon T >= 1; after round T without agreement both get nothing. Default 99
            (not announced to the players because T > 20).
        complete_information: both discount factors known to both players (else each knows only
            its own). Default True.
        messages: offers may carry free-text messages. Default True.

    Examples:
        >>> BargainingConfig(delta_alice=0.9, delta_bob=0.9).horizon_announced
        False
    """

    delta_alice: float = 0.95
    delta_bob: float = 0.95
    money: float = 10_000.0
    max_rounds: int = 99
    complete_information: bool = True
    messages: bool = True

    family = "bargaining"

    def __post_init__(self) -> None:
        _check_number("delta_alice", self.delta_alice, low=0.0, high=1.0, low_open=True)
        _check_number("delta_bob", self.delta_bob, low=0.0, high=1.0, low_open=True)
        _check_number("money", self.money, low=0.0, high=math.inf, low_open=True)
        _check_int("max_rounds", self.max_rounds, low=1)
        _check_bool("complete_information", self.complete_information)
        _check_bool("messages", self.messages)

    @property
    def horizon_announced(self) -> bool:
        """Whether the round limit appears in the prompt (0 < T <= 20)."""
        return 0 < self.max_rounds <= ANNOUNCE_LIMIT

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields plus ``"family"``."""
        return {"family": self.family, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class NegotiationConfig:
    """Bilateral trade with outside options: seller Alice values the good at F_A·M, buyer Bob F_B·M.

    Args:
        seller_value: F_A > 0 (the seller's value as a multiple of ``money``). Default 1.0.
        buyer_value: F_B > 0. Default 1.2.
        money: M > 0, the price order (``product_price_order``). Default 10,000.
        max_rounds: horizon T >= 1 (T = 1 is an ultimatum game). Default 30 (not announced).
        complete_information: each side knows the other's value. Default True.
        messages: offers may carry free-text messages. Default True.

    Examples:
        >>> NegotiationConfig(seller_value=1.0, buyer_value=1.5).gains_from_trade
        True
    """

    seller_value: float = 1.0
    buyer_value: float = 1.2
    money: float = 10_000.0
    max_rounds: int = 30
    complete_information: bool = True
    messages: bool = True

    family = "negotiation"

    def __post_init__(self) -> None:
        _check_number("seller_value", self.seller_value, low=0.0, high=math.inf, low_open=True)
        _check_number("buyer_value", self.buyer_value, low=0.0, high=math.inf, low_open=True)
        _check_number("money", self.money, low=0.0, high=math.inf, low_open=True)
        _check_int("max_rounds", self.max_rounds, low=1)
        _check_bool("complete_information", self.complete_information)
        _check_bool("messages", self.messages)

    @property
    def horizon_announced(self) -> bool:
        """Whether the round limit appears in the prompt (0 < T <= 20)."""
        return 0 < self.max_rounds <= ANNOUNCE_LIMIT

    @property
    def gains_from_trade(self) -> bool:
        """True iff F_B > F_A (trade is efficient)."""
        return self.buyer_value > self.seller_value

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields plus ``"family"``."""
        return {"family": self.family, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class PersuasionConfig:
    """Repeated persuasion: each round the product is high quality with probability ``p``.

    Args:
        p: prior probability of high quality, in (0, 1). Default 1/3.
        v: buyer's value of high quality as a multiple of the price, >= 1. Default 1.2.
        c: buyer's value of low quality as a multiple of the price, in [0, 1]. Default 0.
        money: the price M > 0; the seller earns M per sale. Default 10,000.
        rounds: number of rounds R >= 1. Default 20 (the official sweep used 25).
        seller_knows_values: the seller is told v and c. Default True.
        message_type: ``"text"`` (free text) or ``"binary"`` (a yes/no recommendation).
            Default ``"text"``.
        myopic: a new buyer every round who sees only the seller's record. Default False.

    Examples:
        >>> PersuasionConfig(p=0.5, v=3.0).sale_rate_kg
        1.0
    """

    p: float = 1.0 / 3.0
    v: float = 1.2
    c: float = 0.0
    money: float = 10_000.0
    rounds: int = 20
    seller_knows_values: bool = True
    message_type: str = "text"
    myopic: bool = False

    family = "persuasion"

    def __post_init__(self) -> None:
        _check_number("p", self.p, low=0.0, high=1.0, low_open=True)
        if self.p >= 1.0:
            raise ValueError(f"p: expected a value in (0, 1), got {self.p!r}")
        _check_number("v", self.v, low=1.0, high=math.inf)
        _check_number("c", self.c, low=0.0, high=1.0)
        _check_number("money", self.money, low=0.0, high=math.inf, low_open=True)
        _check_int("rounds", self.rounds, low=1)
        _check_bool("seller_knows_values", self.seller_knows_values)
        _check_bool("myopic", self.myopic)
        if self.message_type not in ("text", "binary"):
            raise ValueError(
                f"message_type: expected 'text' or 'binary', got {self.message_type!r}"
            )

    @property
    def sale_rate_kg(self) -> float:
        """Sale probability under the commitment-optimal signal with c = 0: min(1, p·v)."""
        return min(1.0, self.p * self.v)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields plus ``"family"``."""
        return {"family": self.family, **dataclasses.asdict(self)}


GameConfig = BargainingConfig | NegotiationConfig | PersuasionConfig

_CLASSES: dict[str, type] = {
    "bargaining": BargainingConfig,
    "negotiation": NegotiationConfig,
    "persuasion": PersuasionConfig,
}

BASE_CONFIG: dict[str, GameConfig] = {
    "bargaining": BargainingConfig(
        delta_alice=0.95,
        delta_bob=0.95,
        money=10_000.0,
        max_rounds=99,
        complete_information=True,
        messages=True,
    ),
    "negotiation": NegotiationConfig(
        seller_value=1.0, buyer_value=1.2, money=10_000.0, max_rounds=30
    ),
    "persuasion": PersuasionConfig(),
}

_MONEY = (100.0, 10_000.0, 1_000_000.0)


def _check_family(family: Any) -> str:
    if family not in _CLASSES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    return family


def official_grid(family: str) -> Iterator[GameConfig]:
    """Iterate the official GLEE parameter grid of one family, in a fixed order.

    Sizes: bargaining 384 (δ_A, δ_B ∈ {1, .95, .9, .8}, M ∈ {1e2, 1e4, 1e6}, T ∈ {12, 99},
    complete information and messages on/off); negotiation 576 (F_A, F_B ∈ {.8, 1, 1.2, 1.5},
    M, T ∈ {1, 10, 30}, messages and complete information on/off); persuasion 360 (p ∈ {1/3,
    .5, .8}, c = 0, v ∈ {1.2, 1.25, 2, 3, 4}, M, seller knows values, text/binary, myopic);
    persuasion configurations use the package default of 20 rounds.

    Args:
        family: ``"bargaining"``, ``"negotiation"`` or ``"persuasion"``.

    Examples:
        >>> sum(1 for _ in official_grid("bargaining"))
        384
    """
    _check_family(family)
    if family == "bargaining":
        deltas = (1.0, 0.95, 0.9, 0.8)
        for da, db, m, t, ci, msg in itertools.product(
            deltas, deltas, _MONEY, (12, 99), (True, False), (True, False)
        ):
            yield BargainingConfig(da, db, m, t, ci, msg)
    elif family == "negotiation":
        values = (0.8, 1.0, 1.2, 1.5)
        for fa, fb, m, t, msg, ci in itertools.product(
            values, values, _MONEY, (1, 10, 30), (True, False), (True, False)
        ):
            yield NegotiationConfig(fa, fb, m, t, complete_information=ci, messages=msg)
    else:
        for p, v, m, know, mt, myo in itertools.product(
            (1.0 / 3.0, 0.5, 0.8),
            (1.2, 1.25, 2.0, 3.0, 4.0),
            _MONEY,
            (True, False),
            ("text", "binary"),
            (True, False),
        ):
            yield PersuasionConfig(
                p=p, v=v, c=0.0, money=m, seller_knows_values=know, message_type=mt, myopic=myo
            )


def config_from_dict(data: Mapping[str, Any], family: str | None = None) -> GameConfig:
    """Rebuild a config from `to_dict()` output (``family`` from the dict unless given).

    Examples:
        >>> cfg = BASE_CONFIG["negotiation"]
        >>> config_from_dict(cfg.to_dict()) == cfg
        True
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"data: expected a mapping, got {type(data).__name__}")
    fam = _check_family(family if family is not None else data.get("family"))
    fields = {k: v for k, v in data.items() if k != "family"}
    cls = _CLASSES[fam]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"data: unknown {fam} config fields {unknown}; expected {sorted(known)}")
    return cls(**fields)

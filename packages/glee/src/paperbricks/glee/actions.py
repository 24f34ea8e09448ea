"""Actions of the three GLEE game families (spec §2) as small frozen dataclasses.

The engines accept only these objects; text spellings of the official tokens (``AcceptOffer``,
``SellToJhon``/``BuyFromJhon``, ``"decision": "yes"``) belong to parsing, not here.

* `Offer(amount)`: bargaining: Alice's gain in money units (Bob gets M − amount);
  negotiation: the product price.
* `Accept` / `Reject`: the responder's decision on the pending offer.
* `OutsideOption`: negotiation only, the responder trades with the outside party (zero gain).
* `Signal(recommend)`: persuasion seller's binary recommendation (allowed in both message modes).
* `Message(text)`: persuasion seller's free text (text mode only).
* `Buy` / `NoBuy`: persuasion buyer's decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Accept",
    "Action",
    "Buy",
    "Message",
    "NoBuy",
    "Offer",
    "OutsideOption",
    "Reject",
    "Signal",
    "action_from_dict",
]


def _check_message(message: Any) -> None:
    if message is not None and not isinstance(message, str):
        raise TypeError(f"message: expected str or None, got {type(message).__name__}")


@dataclass(frozen=True)
class Offer:
    """A proposal. ``amount`` is Alice's gain (bargaining) or the price (negotiation), >= 0."""

    amount: float
    message: str | None = None
    kind = "offer"

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int | float):
            raise TypeError(f"amount: expected a real number, got {type(self.amount).__name__}")
        if not math.isfinite(self.amount) or self.amount < 0:
            raise ValueError(f"amount: expected a finite number >= 0, got {self.amount!r}")
        _check_message(self.message)


@dataclass(frozen=True)
class Accept:
    """Accept the pending offer."""

    message: str | None = None
    kind = "accept"

    def __post_init__(self) -> None:
        _check_message(self.message)


@dataclass(frozen=True)
class Reject:
    """Reject the pending offer (a counter-offer follows unless this was the last round)."""

    message: str | None = None
    kind = "reject"

    def __post_init__(self) -> None:
        _check_message(self.message)


@dataclass(frozen=True)
class OutsideOption:
    """Negotiation: walk away and trade with the outside party at one's own value (gain 0)."""

    message: str | None = None
    kind = "outside_option"

    def __post_init__(self) -> None:
        _check_message(self.message)


@dataclass(frozen=True)
class Signal:
    """Persuasion seller: recommend buying (``True``) or not; ``message`` optional in text mode."""

    recommend: bool
    message: str | None = None
    kind = "signal"

    def __post_init__(self) -> None:
        if not isinstance(self.recommend, bool):
            raise TypeError(f"recommend: expected bool, got {type(self.recommend).__name__}")
        _check_message(self.message)


@dataclass(frozen=True)
class Message:
    """Persuasion seller's free-text message (text mode)."""

    text: str
    kind = "message"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text: expected str, got {type(self.text).__name__}")


@dataclass(frozen=True)
class Buy:
    """Persuasion buyer buys this round's product."""

    message: str | None = None
    kind = "buy"

    def __post_init__(self) -> None:
        _check_message(self.message)


@dataclass(frozen=True)
class NoBuy:
    """Persuasion buyer declines this round's product."""

    message: str | None = None
    kind = "no_buy"

    def __post_init__(self) -> None:
        _check_message(self.message)


Action = Offer | Accept | Reject | OutsideOption | Signal | Message | Buy | NoBuy

_BY_KIND = {
    cls.kind: cls for cls in (Offer, Accept, Reject, OutsideOption, Signal, Message, Buy, NoBuy)
}


def action_to_dict(action: Action) -> dict[str, Any]:
    """``{"kind": ..., **fields}`` for transcripts and JSON."""
    from dataclasses import asdict

    return {"kind": action.kind, **asdict(action)}


def action_from_dict(data: dict[str, Any]) -> Action:
    """Inverse of `action_to_dict`.

    Examples:
        >>> action_from_dict({"kind": "offer", "amount": 5.0})
        Offer(amount=5.0, message=None)
    """
    if not isinstance(data, dict) or data.get("kind") not in _BY_KIND:
        raise ValueError(f"data: expected a dict with 'kind' in {sorted(_BY_KIND)}, got {data!r}")
    fields = {k: v for k, v in data.items() if k != "kind"}
    return _BY_KIND[data["kind"]](**fields)


__all__ += ["action_to_dict"]

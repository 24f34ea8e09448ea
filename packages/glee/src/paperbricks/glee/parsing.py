"""Tolerant parsing of LLM replies into GLEE actions (spec §2 "Protocol", §3 "Parsing").

The official GLEE code finds a JSON object by regex and ``assert``s on anything unexpected, so a
reply such as ``{"alice_gain": "7,354", ...}`` or ``{"product_price": "$1,000"}`` crashes a game.
Here amounts may carry thousands separators (``,``, ``_``, thin/normal spaces, apostrophes),
currency signs (``$``, ``€``, ``£``, ``USD``) and decimals; bargaining splits are checked as exact
rationals (:class:`fractions.Fraction`) against the pie ``M`` (no float equality); negotiation
replies accept both spellings of the outside option (``SellToJhon``/``SellToJohn``,
``BuyFromJhon``/``BuyFromJohn``, any case, with or without spaces/underscores); JSON may be
fenced, embedded in prose, or absent (plain ``accept``/``reject``/``yes``/``no`` is understood
when unambiguous). Anything else raises :class:`FormatError` (a ``ValueError``) whose message
says what was expected, so :func:`paperbricks.core_kernels.llm.with_format_retries` can feed it
back to the model.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any

from paperbricks.core_kernels.llm import extract_json

__all__ = [
    "FormatError",
    "parse_action",
    "parse_amount",
    "parse_decision",
]

_MAX_TEXT = 100_000

_CURRENCY = re.compile(r"(?i)(us\s*\$|usd|eur|gbp|dollars?|[$€£¥])")
_SEPARATORS = str.maketrans("", "", ",_'\u2009\u202f\u00a0 ")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_NUMBER_IN_TEXT = re.compile(
    r"[$€£]?\s*[+-]?\d{1,3}(?:[,'_\u2009\u202f\u00a0 ]\d{3})+(?:\.\d+)?|[$€£]?\s*[+-]?\d+(?:\.\d+)?"
)


class FormatError(ValueError):
    """A reply that cannot be turned into a legal-format action; the message says what was expected."""


def parse_amount(value: Any, *, name: str = "amount") -> Fraction:
    """Parse a money amount, tolerating thousands separators, currency signs and decimals.

    Args:
        value: an ``int``, finite ``float``, or a string such as ``"7,354"``, ``"$1,000"``,
            ``"1 000 000"``, ``"12.50 USD"``. ``bool`` is rejected.
        name: how the value is called in the error message.

    Returns:
        The amount as an exact :class:`fractions.Fraction` (floats are converted through their
        shortest decimal ``repr``, so ``0.1`` is ``1/10``).

    Raises:
        FormatError: not a number.

    Examples:
        >>> parse_amount("$7,354")
        Fraction(7354, 1)
        >>> parse_amount("1 000.5 USD")
        Fraction(2001, 2)
    """
    if isinstance(value, bool):
        raise FormatError(f"{name}: expected a number, got the boolean {value!r}")
    if isinstance(value, int):
        if abs(value) >= 10**30:
            raise FormatError(
                f"{name}: expected a realistic amount (< 1e30), got a {value.bit_length()}-bit integer"
            )
        return Fraction(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FormatError(f"{name}: expected a finite number, got {value!r}")
        if abs(value) >= 1e30:
            raise FormatError(f"{name}: expected a realistic amount (< 1e30), got {value!r}")
        return Fraction(repr(value))
    if not isinstance(value, str):
        raise FormatError(f"{name}: expected a number, got {type(value).__name__} {value!r:.60}")
    s = _CURRENCY.sub("", value.strip()).translate(_SEPARATORS)
    if not _NUMBER.match(s) or len(s.split(".")[0].lstrip("+-")) > 30 or len(s) > 64:
        raise FormatError(f'{name}: expected a number such as 1234 or "1,234", got {value!r:.60}')
    return Fraction(s)


_DECISION_WORDS = {
    "accept": "accept",
    "accepted": "accept",
    "acceptoffer": "accept",
    "reject": "reject",
    "rejected": "reject",
    "rejectoffer": "reject",
    "yes": "yes",
    "no": "no",
    "buy": "yes",
    "selltojhon": "outside",
    "selltojohn": "outside",
    "buyfromjhon": "outside",
    "buyfromjohn": "outside",
}


def _norm_word(s: str) -> str:
    return re.sub(r"[\s_\-\"'.!]", "", s).lower()


def parse_decision(value: Any, allowed: tuple[str, ...], *, name: str = "decision") -> str:
    """Normalise a decision token to one of ``allowed``.

    Tokens map as: accept/AcceptOffer -> ``"accept"``; reject/RejectOffer -> ``"reject"``;
    yes/no; SellToJhon, SellToJohn, BuyFromJhon, BuyFromJohn (any case, spaces or underscores)
    -> ``"outside"``.

    Raises:
        FormatError: the token is not one of ``allowed``.
    """
    if not isinstance(value, str):
        raise FormatError(f"{name}: expected one of {list(allowed)}, got {value!r:.60}")
    word = _DECISION_WORDS.get(_norm_word(value))
    if word is None or word not in allowed:
        raise FormatError(f"{name}: expected one of {list(allowed)}, got {value!r:.60}")
    return word


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (amounts with separators are quoted first), or None."""
    try:
        obj = extract_json(text)
    except ValueError:
        # Models write {"alice_gain": 7,354}: quote bare numbers with separators and retry.
        fixed = re.sub(
            r"(:\s*)([$€£]?\s*\d{1,3}(?:,\d{3})+(?:\.\d+)?)(\s*[,}])",
            lambda m: f'{m.group(1)}"{m.group(2)}"{m.group(3)}',
            text,
        )
        fixed = re.sub(
            r"(:\s*)(\$\s*[\d.]+)(\s*[,}])",
            lambda m: f'{m.group(1)}"{m.group(2)}"{m.group(3)}',
            fixed,
        )
        if fixed == text:
            return None
        try:
            obj = extract_json(fixed)
        except ValueError:
            return None
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, dict)), None)
    return obj if isinstance(obj, dict) else None


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in obj.items()}


def _message(obj: dict[str, Any] | None) -> str:
    if obj is None:
        return ""
    msg = obj.get("message", "")
    return msg if isinstance(msg, str) else json.dumps(msg)


def _plain_decision(text: str, allowed: tuple[str, ...]) -> str:
    """A decision from plain text: exactly one distinct allowed token must occur."""
    found = set()
    for tok in re.findall(r"[A-Za-z_]+", text):
        word = _DECISION_WORDS.get(_norm_word(tok))
        if word is not None and word in allowed:
            found.add(word)
    if len(found) != 1:
        what = "no" if not found else f"conflicting ({sorted(found)})"
        raise FormatError(
            f'decision: expected a JSON object {{"decision": ...}} with one of {list(allowed)}; '
            f"found {what} decision words in the reply"
        )
    return found.pop()


_ROLES = ("alice", "bob")
_EXPECTS = ("offer", "response")


def parse_action(
    text: str,
    family: str,
    role: str,
    *,
    expect: str,
    money: float | None = None,
    message_type: str = "text",
    names: tuple[str, str] = ("Alice", "Bob"),
) -> Any:
    """Turn a model reply into a GLEE action, or raise :class:`FormatError` saying what was expected.

    Args:
        text: the reply (JSON anywhere in it, fenced or not; plain words for decisions).
        family: ``"bargaining"``, ``"negotiation"`` or ``"persuasion"``.
        role: ``"alice"`` (bargaining first mover, negotiation/persuasion seller) or ``"bob"``.
        expect: ``"offer"`` (bargaining/negotiation proposal; the persuasion seller's turn) or
            ``"response"`` (decision on the pending offer; the persuasion buyer's turn).
        money: bargaining only: the pie M; when given, ``<alice>_gain + <bob>_gain`` must equal
            it exactly (compared as rationals).
        message_type: persuasion seller only: ``"text"`` (free text, or ``{"message": ...}``)
            or ``"binary"`` (``{"decision": "yes"|"no"}``). Default ``"text"``.
        names: the players' display names; bargaining keys are ``<lowercase name>_gain``.

    Returns:
        An action from :mod:`paperbricks.glee.actions`: ``Offer``, ``Accept``, ``Reject``,
        ``OutsideOption``, ``Signal``, ``Message``, ``Buy`` or ``NoBuy``.

    Raises:
        FormatError: the reply does not hold the expected action (message names what was wanted).
        TypeError / ValueError: bad ``family``, ``role``, ``expect`` or ``text`` type.

    Examples:
        >>> parse_action('{"alice_gain": "7,354", "bob_gain": "$2,646"}', "bargaining", "alice",
        ...              expect="offer", money=10_000)
        Offer(amount=7354.0, message=None)
        >>> parse_action('I take it: {"decision": "SellToJohn"}', "negotiation", "alice",
        ...              expect="response")
        OutsideOption(message=None)
    """
    from .actions import Accept, Buy, Message, NoBuy, Offer, OutsideOption, Reject, Signal

    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    if family not in ("bargaining", "negotiation", "persuasion"):
        raise ValueError(
            f"family: expected 'bargaining', 'negotiation' or 'persuasion', got {family!r}"
        )
    if role not in _ROLES:
        raise ValueError(f"role: expected one of {list(_ROLES)}, got {role!r}")
    if expect not in _EXPECTS:
        raise ValueError(f"expect: expected one of {list(_EXPECTS)}, got {expect!r}")
    if message_type not in ("text", "binary"):
        raise ValueError(f"message_type: expected 'text' or 'binary', got {message_type!r}")
    text = text[:_MAX_TEXT]
    obj = _json_object(text)
    low = _lower_keys(obj) if obj is not None else None
    msg = _message(low) or None

    def decision(allowed: tuple[str, ...]) -> str:
        if low is not None and "decision" in low:
            return parse_decision(low["decision"], allowed)
        return _plain_decision(text, allowed)

    if family == "bargaining" and expect == "offer":
        keys = [f"{n.strip().lower()}_gain" for n in names]
        if low is None or any(k not in low for k in keys):
            raise FormatError(
                f"offer: expected a JSON object with keys {keys} (amounts in money units"
                + (f" summing to {_fmt(money)}" if money is not None else "")
                + ")"
            )
        a = parse_amount(low[keys[0]], name=keys[0])
        b = parse_amount(low[keys[1]], name=keys[1])
        if a < 0 or b < 0:
            raise FormatError(f"offer: gains must be >= 0, got {keys[0]}={a}, {keys[1]}={b}")
        if money is not None and a + b != Fraction(repr(float(money))):
            raise FormatError(
                f"offer: {keys[0]} + {keys[1]} must equal {_fmt(money)} exactly, got "
                f"{_fmt(a)} + {_fmt(b)} = {_fmt(a + b)}"
            )
        return Offer(amount=float(a), message=msg)
    if family == "negotiation" and expect == "offer":
        if low is None or "product_price" not in low:
            raise FormatError('offer: expected a JSON object {"product_price": <number>}')
        price = parse_amount(low["product_price"], name="product_price")
        if price < 0:
            raise FormatError(f"product_price: expected a number >= 0, got {_fmt(price)}")
        return Offer(amount=float(price), message=msg)
    if family == "bargaining":
        d = decision(("accept", "reject"))
        return Accept(message=msg) if d == "accept" else Reject(message=msg)
    if family == "negotiation":
        d = decision(("accept", "reject", "outside"))
        return {"accept": Accept, "reject": Reject, "outside": OutsideOption}[d](message=msg)
    if expect == "response":  # persuasion buyer
        d = decision(("yes", "no"))
        return Buy(message=msg) if d == "yes" else NoBuy(message=msg)
    if message_type == "binary":  # persuasion seller
        d = decision(("yes", "no"))
        return Signal(recommend=d == "yes")
    if low is not None and msg:
        return Message(text=msg)
    if low is not None and "decision" in low:
        return Signal(recommend=parse_decision(low["decision"], ("yes", "no")) == "yes")
    body = text.strip()
    if not body:
        raise FormatError("message: expected a non-empty message to the buyer")
    return Message(text=body)


def _fmt(x: Any) -> str:
    if isinstance(x, Fraction) and x.denominator == 1:
        return f"{x.numerator:,}"
    f = float(x)
    return f"{f:,.0f}" if f.is_integer() else f"{f:,}"


def format_action(action: Any, family: str, *, money: float | None = None) -> str:
    """Render an action as the JSON reply :func:`parse_action` reads back (its inverse).

    Args:
        action: an action from :mod:`paperbricks.glee.actions`.
        family: the game family.
        money: bargaining offers only: the pie M (``bob_gain = M - alice_gain``).

    Returns:
        A JSON object string, e.g. ``{"alice_gain": 6000, "bob_gain": 4000}``.

    Examples:
        >>> from paperbricks.glee.actions import OutsideOption
        >>> format_action(OutsideOption(), "negotiation")
        '{"decision": "SellToJhon"}'
    """
    kind = getattr(action, "kind", None)
    msg = getattr(action, "message", None)
    out: dict[str, Any]
    if kind == "offer":
        if family == "bargaining":
            if money is None:
                raise ValueError("money: required to format a bargaining offer, got None")
            a = Fraction(repr(float(action.amount)))
            b = Fraction(repr(float(money))) - a
            out = {"alice_gain": _num(a), "bob_gain": _num(b)}
        else:
            out = {"product_price": _num(Fraction(repr(float(action.amount))))}
    elif kind in ("accept", "reject"):
        word = {"accept": "accept", "reject": "reject"}[kind]
        if family == "negotiation":
            word = "AcceptOffer" if kind == "accept" else "RejectOffer"
        out = {"decision": word}
    elif kind == "outside_option":
        out = {"decision": "SellToJhon"}
    elif kind in ("buy", "no_buy"):
        out = {"decision": "yes" if kind == "buy" else "no"}
    elif kind == "signal":
        out = {"decision": "yes" if action.recommend else "no"}
    elif kind == "message":
        out = {"message": action.text}
        msg = None
    else:
        raise TypeError(f"action: expected a GLEE action, got {type(action).__name__}")
    if msg:
        out["message"] = msg
    return json.dumps(out)


def _num(x: Fraction) -> int | float:
    return x.numerator if x.denominator == 1 else float(x)


__all__ += ["format_action"]

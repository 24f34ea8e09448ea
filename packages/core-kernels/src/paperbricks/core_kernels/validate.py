"""Argument checks with the house error format: ``"<name>: expected <what>, got <value>"``.

Configs and public functions across the packages validate their inputs the same way; these are
the shared checks (stdlib only, so any module may import them without cost).
"""

from __future__ import annotations

import math
from collections.abc import Collection

__all__ = ["check_bool", "check_choice", "check_float", "check_int"]


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` if it is an int (not a bool) ``>= minimum``, else raise ``ValueError``.

    Examples:
        >>> check_int("layers", 4, 1)
        4
        >>> check_int("layers", 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: layers: expected an int >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def check_float(
    name: str, value: object, minimum: float | None = None, *, strict: bool = False
) -> float:
    """Return ``value`` if it is a finite real number (not a bool) above the bound, else raise.

    Args:
        name: argument name used in the message.
        value: the value to check (ints are accepted as reals).
        minimum: lower bound, or None for any finite value.
        strict: ``value > minimum`` instead of ``>=``.

    Raises:
        ValueError: ``"<name>: expected a finite float >= <minimum>, got <value>"``.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum}"
        raise ValueError(f"{name}: expected a finite float{bound}, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Collection[object]) -> object:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming its type."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value

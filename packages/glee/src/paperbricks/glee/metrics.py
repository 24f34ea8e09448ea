"""GLEE outcome metrics: self-gain, efficiency and fairness per family (arXiv 2410.05254, §2 "Metrics").

All three are normalised by the money scale M. Records are plain mappings or objects with the
attributes ``family, config, agreed, rounds, alice_gain, bob_gain, money`` (plus ``extra`` or
top-level keys for family-specific fields); ``config`` holds the grid parameters.

The default (corrected) formulas differ from the official ``analyze/metrics.py`` in exactly two
places, both reproduced bit-for-bit with ``glee_compat=True``:

============================  ==============================  ===================================
quantity                      corrected (default)             ``glee_compat=True`` (official)
============================  ==============================  ===================================
bargaining, no deal: Bob      0                               δ_B^(T−1) (T = rounds played)
persuasion buyer self-gain    [k(v−1) + ℓ(c−1)] / R           [k(v−1) + r(c−1)] / R
============================  ==============================  ===================================

(k = high quality and bought, ℓ = low quality and bought, r = low quality and *not* bought.) The
official buyer formula charges the buyer for correctly rejecting a low-quality product; the
official bargaining code computes Bob's share as (1 − p)·δ_B^(t−1) with p = 0 when no offer was
accepted, so a failed negotiation pays Bob.

Per-family fields a record must carry (names accepted in both our and the official spelling):

- bargaining: ``agreed``; ``rounds`` (agreement round t, or rounds played T with no deal); M
  (``money``/``money_to_divide``); Alice's share p as ``alice_share`` (None with no deal) or the
  nominal ``alice_money`` of the accepted offer; δ_A (``delta_alice``/``delta_1``) and δ_B
  (``delta_bob``/``delta_2``). When the deltas are absent (a ``games.Outcome``, which has no
  config), the record's ``alice_gain``/``bob_gain`` are taken as the already-discounted normalised
  self-gains and the compat no-deal value is read from ``glee_compat_bob_no_deal``.
- negotiation: F_A (``seller_value``/``f_a``), F_B (``buyer_value``/``f_b``), M (``money``/
  ``product_price_order``); ``agreed`` (the receiver played AcceptOffer); ``price`` (nominal price
  of the accepted offer, also read as ``product_price``).
- persuasion: v (``v``/``buyer_value_high``), c (``c``/``buyer_value_low``, default 0); ``rounds``
  = R; counts ``n_high`` (n), ``high_bought`` (k), ``low_bought`` (ℓ), ``low_rejected`` (r) and
  ``sales``; or a ``history`` list of ``{"high": bool, "bought": bool}`` per round.

Examples:
    >>> rec = {"family": "bargaining", "agreed": True, "rounds": 1, "alice_share": 0.5,
    ...        "config": {"delta_alice": 0.9, "delta_bob": 0.9, "money": 100}}
    >>> efficiency(rec), fairness(rec)
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FAMILIES = ("bargaining", "negotiation", "persuasion")

_ALIASES: dict[str, tuple[str, ...]] = {
    "delta_alice": ("delta_alice", "delta_a", "delta_1"),
    "delta_bob": ("delta_bob", "delta_b", "delta_2"),
    "money": ("money", "money_to_divide", "product_price_order", "product_price", "M"),
    "seller_value": ("seller_value", "f_a", "F_A"),
    "buyer_value": ("buyer_value", "f_b", "F_B"),
    "v": ("v", "buyer_value_high"),
    "c": ("c", "buyer_value_low"),
    "price": ("price", "product_price"),
}

_MISSING = object()


def _field(record: Any, name: str, default: Any = _MISSING) -> Any:
    """Read ``name`` from a record's top level, its ``extra`` and then its ``config``."""
    names = _ALIASES.get(name, (name,))
    sources: list[Any] = [record]
    extra = record.get("extra") if isinstance(record, Mapping) else getattr(record, "extra", None)
    config = (
        record.get("config") if isinstance(record, Mapping) else getattr(record, "config", None)
    )
    for src in (extra, config):
        if src is not None:
            sources.append(src)
    for src in sources:
        for n in names:
            if isinstance(src, Mapping):
                if n in src and src[n] is not None:
                    return src[n]
            elif getattr(src, n, None) is not None:
                return getattr(src, n)
    if default is not _MISSING:
        return default
    raise ValueError(
        f"record: expected field {name!r} (any of {list(names)}) at top level, in 'extra' or in "
        f"'config'; record has {_describe(record)}"
    )


def _describe(record: Any) -> str:
    if isinstance(record, Mapping):
        return f"keys {sorted(map(str, record))}"
    return f"type {type(record).__name__}"


def _num(record: Any, name: str, default: Any = _MISSING) -> float:
    value = _field(record, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"record field {name!r}: expected a number, got {value!r}") from None
    return float(value)


def _family(record: Any) -> str:
    fam = _field(record, "family")
    if fam not in FAMILIES:
        raise ValueError(f"record field 'family': expected one of {FAMILIES}, got {fam!r}")
    return fam


def _money(record: Any) -> float:
    m = _num(record, "money")
    if not m > 0:
        raise ValueError(f"record field 'money': expected M > 0, got {m}")
    return m


def _persuasion_counts(record: Any) -> tuple[int, int, int, int, int, int]:
    """Return (R, n, k, ℓ, r, sales) for a persuasion record."""
    history = _field(record, "history", None)
    if history is not None:
        hist = [(bool(_field(h, "high")), bool(_field(h, "bought"))) for h in history]
        n = sum(h for h, _ in hist)
        k = sum(h and b for h, b in hist)
        ell = sum((not h) and b for h, b in hist)
        r_ = sum((not h) and (not b) for h, b in hist)
        return len(hist), n, k, ell, r_, k + ell
    big_r = int(_num(record, "rounds"))
    n = int(_num(record, "n_high"))
    k = int(_num(record, "high_bought"))
    ell = int(_num(record, "low_bought"))
    r_ = int(_num(record, "low_rejected", big_r - n - ell))
    sales = int(_num(record, "sales", k + ell))
    if big_r <= 0 or min(n, k, ell, r_) < 0 or k > n or ell + r_ != big_r - n or sales != k + ell:
        raise ValueError(
            "persuasion record: inconsistent counts, expected R > 0, 0 <= k <= n, ℓ + r = R − n and "
            f"sales = k + ℓ; got R={big_r}, n={n}, k={k}, ℓ={ell}, r={r_}, sales={sales}"
        )
    return big_r, n, k, ell, r_, sales


def _bargaining_share(record: Any) -> float:
    """Alice's nominal share p of M (0 with no deal, as in the official code)."""
    if not bool(_field(record, "agreed")):
        return 0.0
    share = _field(record, "alice_share", None)
    if share is not None:
        return float(share)
    money = _field(record, "alice_money", None)
    if money is None:
        raise ValueError(
            "bargaining record: expected 'alice_share' (p in [0, 1]) or 'alice_money' (nominal "
            f"amount of the accepted offer) for a deal; record has {_describe(record)}"
        )
    return float(money) / _money(record)


def _bargaining_gains(record: Any, glee_compat: bool) -> tuple[float, float]:
    agreed = bool(_field(record, "agreed"))
    t = int(_num(record, "rounds"))
    if t < 1:
        raise ValueError(f"record field 'rounds': expected >= 1, got {t}")
    d_a, d_b = _field(record, "delta_alice", None), _field(record, "delta_bob", None)
    if d_a is None or d_b is None:  # a games.Outcome: gains are already discounted and normalised
        needed = "glee_compat_bob_no_deal" if glee_compat and not agreed else "alice_gain"
        if not agreed and not glee_compat:
            needed = None
        if needed is not None and _field(record, needed, None) is None:
            raise ValueError(
                "bargaining record: expected 'delta_alice'/'delta_bob' (or delta_1/delta_2) in the "
                f"config, or precomputed normalised gains ({needed!r}); record has "
                f"{_describe(record)}"
            )
        if not agreed:
            compat = _num(record, "glee_compat_bob_no_deal") if glee_compat else 0.0
            return 0.0, compat
        return _num(record, "alice_gain"), _num(record, "bob_gain")
    if not agreed and not glee_compat:
        return 0.0, 0.0
    p = _bargaining_share(record)
    return p * float(d_a) ** (t - 1), (1.0 - p) * float(d_b) ** (t - 1)


def self_gain(record: Any, *, glee_compat: bool = False) -> dict[str, float]:
    """Self-gain of Alice and Bob, normalised by M.

    Args:
        record: a game record (mapping or object, see the module docstring).
        glee_compat: reproduce the official numbers, defects included. Default False.

    Returns:
        ``{"alice": float, "bob": float}``. Roles: bargaining Alice/Bob; negotiation seller/buyer;
        persuasion seller/buyer.

    Formulas (corrected | official where different):
        - bargaining: Alice p·δ_A^(t−1), Bob (1−p)·δ_B^(t−1); no deal: 0 and 0 | 0 and δ_B^(T−1).
        - negotiation: Alice p − F_A, Bob F_B − p with trade, else 0 and 0.
        - persuasion: seller sales/R; buyer [k(v−1) + ℓ(c−1)]/R | [k(v−1) + r(c−1)]/R.

    Examples:
        >>> self_gain({"family": "bargaining", "agreed": False, "rounds": 3, "alice_share": None,
        ...            "config": {"delta_1": 1.0, "delta_2": 0.5, "money": 10}}, glee_compat=True)
        {'alice': 0.0, 'bob': 0.25}
    """
    fam = _family(record)
    if fam == "bargaining":
        alice, bob = _bargaining_gains(record, glee_compat)
        return {"alice": alice, "bob": bob}
    if fam == "negotiation":
        if not bool(_field(record, "agreed")):
            return {"alice": 0.0, "bob": 0.0}
        p = _num(record, "price") / _money(record)
        return {"alice": p - _num(record, "seller_value"), "bob": _num(record, "buyer_value") - p}
    big_r, _n, k, ell, r_, sales = _persuasion_counts(record)
    v, c = _num(record, "v"), _num(record, "c", 0.0)
    charged = r_ if glee_compat else ell
    return {"alice": sales / big_r, "bob": (k * (v - 1.0) + charged * (c - 1.0)) / big_r}


def efficiency(record: Any, *, glee_compat: bool = False) -> float:
    """Efficiency of one game (1 = the whole surplus realised).

    Args:
        record: a game record (see the module docstring).
        glee_compat: reproduce the official numbers (bargaining no deal counts Bob's δ_B^(T−1)).

    Returns:
        bargaining: the sum of the two self-gains; negotiation: 1[trade] if F_B > F_A,
        1[no trade] if F_B < F_A, 1 if equal; persuasion: k/n (NaN when no round was high quality).
    """
    fam = _family(record)
    if fam == "bargaining":
        g = self_gain(record, glee_compat=glee_compat)
        return g["alice"] + g["bob"]
    if fam == "negotiation":
        f_a, f_b = _num(record, "seller_value"), _num(record, "buyer_value")
        trade = bool(_field(record, "agreed"))
        if f_b > f_a:
            return float(trade)
        if f_b < f_a:
            return float(not trade)
        return 1.0
    _r, n, k, _l, _rr, _s = _persuasion_counts(record)
    return k / n if n > 0 else math.nan


def fairness(record: Any, *, glee_compat: bool = False) -> float:
    """Fairness of one game, in [0, 1].

    Args:
        record: a game record (see the module docstring).
        glee_compat: accepted for symmetry; fairness has no flagged defect so both modes agree.

    Returns:
        bargaining: 1 − 4(p − 0.5)² with p = Alice's nominal share (p = 0 with no deal, as in the
        official code); negotiation: 1 − 4(p − p_f)² with trade (p_f = (F_A+F_B)/2), else 1, clipped
        to [0, 1] as in the paper; persuasion: r/(R − n), NaN when every round was high quality.
    """
    del glee_compat
    fam = _family(record)
    if fam == "bargaining":
        p = _bargaining_share(record)
        return 1.0 - 4.0 * (p - 0.5) ** 2
    if fam == "negotiation":
        if not bool(_field(record, "agreed")):
            return 1.0
        p = _num(record, "price") / _money(record)
        p_f = (_num(record, "seller_value") + _num(record, "buyer_value")) / 2.0
        return min(1.0, max(0.0, 1.0 - 4.0 * (p - p_f) ** 2))
    big_r, n, _k, _l, r_, _s = _persuasion_counts(record)
    return r_ / (big_r - n) if big_r > n else math.nan


def game_metrics(record: Any, *, glee_compat: bool = False) -> dict[str, float]:
    """All metrics of one game as a flat dict.

    Returns:
        ``{"self_gain_alice", "self_gain_bob", "efficiency", "fairness"}`` (floats; NaN where a
        persuasion metric is undefined).
    """
    g = self_gain(record, glee_compat=glee_compat)
    return {
        "self_gain_alice": g["alice"],
        "self_gain_bob": g["bob"],
        "efficiency": efficiency(record, glee_compat=glee_compat),
        "fairness": fairness(record, glee_compat=glee_compat),
    }


__all__ = ["FAMILIES", "efficiency", "fairness", "game_metrics", "self_gain"]

"""Prompt templates for LLM players of the three GLEE families (spec §2 "Protocol").

The package's own wording (the official templates are unlicensed and not used): a system message
made of the **rules** of the player's family and seat plus a **format request** for the current
kind of move, and a per-turn **turn message** with the round header, the discount ("inflation")
or record line, and the opponent's last offer/message. Slots follow GLEE: the round limit is
shown only when the engine announces it (0 < T <= 20), bargaining with incomplete information
shows only the player's own δ, and the persuasion buyer sees v (and c) while the seller sees
them only when ``seller_knows_values``.

Everything is built from the observation dict of a game engine (``game.observation(player)``),
so a prompt never leaks what the information structure hides.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_messages", "expected_move", "format_request", "rules", "turn_message"]

NAMES = {"alice": "Alice", "bob": "Bob"}


def _money(x: float) -> str:
    return f"${x:,.0f}" if float(x).is_integer() else f"${x:,.2f}"


def expected_move(view: dict[str, Any]) -> str:
    """``"offer"`` when the player proposes (or is the persuasion seller), else ``"response"``."""
    if view.get("family") == "persuasion":
        return "offer" if view.get("role") == "alice" else "response"
    legal = view.get("legal") or {}
    return "offer" if "offer" in legal.get("kinds", ()) else "response"


def rules(view: dict[str, Any]) -> str:
    """The rules of the game as seen from ``view['role']`` (no format instructions)."""
    fam, me = view["family"], view["role"]
    other = "bob" if me == "alice" else "alice"
    cfg = view["config"]
    you, them = NAMES[me], NAMES[other]
    if fam == "bargaining":
        lines = [
            f"You are {you}. You and {them} take turns proposing how to divide {_money(cfg['money'])}.",
            "Alice proposes in odd rounds and Bob in even rounds; the other side then accepts "
            "(the game ends with that split) or rejects (the next round starts with a new "
            "proposal by the other player).",
        ]
        mine = cfg.get(f"delta_{me}")
        lines.append(
            f"Money loses value over time: for you, each round that passes shrinks its worth by "
            f"{(1 - mine) * 100:.4g}%."
        )
        if f"delta_{other}" in cfg:
            theirs = cfg[f"delta_{other}"]
            lines.append(f"For {them}, each round shrinks its worth by {(1 - theirs) * 100:.4g}%.")
        else:
            lines.append(f"You do not know how fast money loses value for {them}.")
    elif fam == "negotiation":
        seller = me == "alice"
        lines = [
            f"You are {you}, the {'seller' if seller else 'buyer'} of a product; "
            f"{them} is the {'buyer' if seller else 'seller'}.",
            "The seller makes a price offer in odd rounds and the buyer in even rounds; the "
            "other side accepts the price, rejects it (and counter-offers next round), or walks "
            "away to deal with an outside party, John, at its own valuation.",
        ]
        own = "seller_value" if seller else "buyer_value"
        lines.append(f"The product is worth {_money(cfg[own] * cfg['money'])} to you.")
        oth = "buyer_value" if seller else "seller_value"
        if oth in cfg:
            lines.append(f"It is worth {_money(cfg[oth] * cfg['money'])} to {them}.")
        else:
            lines.append(f"You do not know what it is worth to {them}.")
    else:
        seller = me == "alice"
        lines = [
            f"You are {you}, {'a seller' if seller else 'a buyer'} in a market that repeats for "
            f"{cfg['rounds']} rounds. Each round one product is offered at {_money(cfg['money'])}.",
            f"A product is of high quality with probability {cfg['p']:.4g}; only the seller "
            "sees the quality before the sale, and the buyer learns it after deciding.",
        ]
        if "v" in cfg:
            lines.append(
                f"To the buyer a high-quality product is worth {_money(cfg['v'] * cfg['money'])} "
                f"and a low-quality one {_money(cfg['c'] * cfg['money'])}."
            )
        if seller:
            lines.append(f"You earn {_money(cfg['money'])} for every product the buyer takes.")
        if cfg.get("myopic"):
            lines.append("Each round a new buyer arrives who sees only the seller's track record.")
    if cfg.get("max_rounds"):
        lines.append(
            f"The game lasts at most {cfg['max_rounds']} rounds; then nobody gets anything."
        )
    return "\n".join(lines)


def format_request(view: dict[str, Any]) -> str:
    """How the reply must be written for the current move (a JSON object, keys named)."""
    fam, me = view["family"], view["role"]
    cfg = view["config"]
    move = expected_move(view)
    msg = ', "message": "<optional text>"' if cfg.get("messages") else ""
    if fam == "bargaining" and move == "offer":
        return (
            'Answer with one JSON object {"alice_gain": <number>, "bob_gain": <number>' + msg + "}"
            f" whose two amounts add up to exactly {cfg['money']:.0f}."
        )
    if fam == "negotiation" and move == "offer":
        return 'Answer with one JSON object {"product_price": <number>' + msg + "}."
    if fam == "bargaining":
        return 'Answer with one JSON object {"decision": "accept"} or {"decision": "reject"}.'
    if fam == "negotiation":
        outside = "SellToJohn" if me == "alice" else "BuyFromJohn"
        return (
            'Answer with one JSON object {"decision": "AcceptOffer"}, {"decision": "RejectOffer"} '
            f'or {{"decision": "{outside}"}}.'
        )
    if me == "bob":
        return 'Answer with one JSON object {"decision": "yes"} (buy) or {"decision": "no"}.'
    if cfg.get("message_type") == "binary":
        return 'Answer with one JSON object {"decision": "yes"} (recommend buying) or {"decision": "no"}.'
    return 'Answer with one JSON object {"message": "<what you tell the buyer>"}.'


def turn_message(view: dict[str, Any]) -> str:
    """This turn's message: round header, inflation/record line, the opponent's last move."""
    fam, me = view["family"], view["role"]
    cfg = view["config"]
    t = view["round"]
    lines = [f"Round {t}."]
    if fam == "bargaining":
        d = cfg.get(f"delta_{me}")
        lines.append(f"Inflation so far for you: {(1 - d ** (t - 1)) * 100:.4g}%.")
    if fam in ("bargaining", "negotiation"):
        pending = view.get("pending_offer")
        if pending is not None and expected_move(view) == "response":
            other = NAMES["bob" if me == "alice" else "alice"]
            if fam == "bargaining":
                mine = pending if me == "alice" else cfg["money"] - pending
                lines.append(f"{other} offers you {_money(mine)} (keeping the rest).")
            else:
                lines.append(f"{other} offers a price of {_money(pending)}.")
            if view.get("pending_message"):
                lines.append(f'{other} says: "{view["pending_message"]}"')
        else:
            lines.append("It is your turn to propose.")
    else:
        rec = view.get("record", {})
        lines.append(
            f"Record so far: {rec.get('sales', 0)} sold in {rec.get('rounds_played', 0)} rounds, "
            f"{rec.get('high_quality_sales', 0)} of them high quality."
        )
        if me == "alice":
            q = view.get("quality_high")
            lines.append(f"This round's product is of {'high' if q else 'low'} quality.")
        else:
            sig = view.get("signal") or {}
            if sig.get("kind") == "message":
                lines.append(f'The seller says: "{sig.get("text", "")}"')
            elif sig.get("kind") == "signal":
                rec_txt = (
                    "recommends buying" if sig.get("recommend") else "does not recommend buying"
                )
                lines.append(f"The seller {rec_txt}.")
                if sig.get("message"):
                    lines.append(f'The seller says: "{sig["message"]}"')
    return "\n".join(lines)


def build_messages(view: dict[str, Any]) -> list[dict[str, str]]:
    """``[system: rules + format request, user: turn message]`` for one decision."""
    return [
        {"role": "system", "content": rules(view) + "\n\n" + format_request(view)},
        {"role": "user", "content": turn_message(view) + "\n" + format_request(view)},
    ]

"""The `Player` protocol shared by rational bots and LLM players, and a game loop `play`.

A player maps a game view (the dict returned by ``game.observation(role)``: ``family``,
``role``, ``round``, ``config`` (the parameters visible to that role), ``legal``, ``history``,
``pending_offer``/``signal``/``quality_high`` as applicable) to an action from `actions`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .actions import Action
from .games import Game, Outcome

__all__ = ["Player", "play"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Player(Protocol):
    """Anything with ``act(game_view) -> Action``."""

    def act(self, game_view: Mapping[str, Any]) -> Action:
        """Choose an action for the role described by ``game_view``."""
        ...


def play(game: Game, alice: Player, bob: Player, *, max_steps: int = 100_000) -> Outcome:
    """Run ``game`` to the end with the two players and return its `Outcome`.

    Args:
        game: a fresh or partially played engine (mutated in place).
        alice / bob: players for the two roles (seller/buyer in negotiation and persuasion).
        max_steps: safety bound on the number of actions (default 100,000).

    Examples:
        >>> from paperbricks.glee.config import BargainingConfig
        >>> from paperbricks.glee.games import BargainingGame
        >>> from paperbricks.glee.bots import RubinsteinSPEBot
        >>> out = play(BargainingGame(BargainingConfig(0.9, 0.9)), RubinsteinSPEBot(), RubinsteinSPEBot())
        >>> round(out.alice_gain, 4), out.rounds
        (0.5263, 1)
    """
    for name, p in (("alice", alice), ("bob", bob)):
        if not callable(getattr(p, "act", None)):
            raise TypeError(
                f"{name}: expected a Player with act(game_view), got {type(p).__name__}"
            )
    players = {"alice": alice, "bob": bob}
    steps = 0
    while not game.done:
        if steps >= max_steps:
            raise RuntimeError(f"max_steps: the game did not finish within {max_steps} actions")
        role = game.current_player
        game.apply(players[role].act(game.observation(role)))
        steps += 1
    return game.outcome()

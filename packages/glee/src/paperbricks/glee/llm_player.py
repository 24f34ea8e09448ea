"""LLM players for GLEE games: free-text chat with format retries, and choice scoring.

* :class:`LLMPlayer` asks any core-kernels ``ChatBackend`` (OpenAI-compatible server, local
  transformers model, scripted test backend) for a JSON move built from our prompts
  (:mod:`paperbricks.glee.prompts`), parses it tolerantly (:mod:`paperbricks.glee.parsing`) and,
  where GLEE asserts and crashes on a malformed reply, feeds the error back and asks again
  (core-kernels ``with_format_retries``; ``retries=3`` by default). Format errors are counted
  (``format_errors``) so they can be reported as a metric (spec §3 "Parsing").
* :class:`ChoiceScoringPolicy` never generates: it enumerates a finite menu of legal moves
  (accept/reject/outside option, yes/no, offers in ``step`` fractions of M) and picks the one with
  the highest log-likelihood under the model (core-kernels ``score_choices``, all candidates in
  one batched pass), so even a tiny random local model always makes a legal move (spec §8).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from paperbricks.core_kernels.llm import score_choices, with_format_retries

from .actions import Accept, Buy, NoBuy, Offer, OutsideOption, Reject, Signal
from .parsing import FormatError, format_action, parse_action
from .prompts import build_messages, expected_move

__all__ = ["ChoiceScoringPolicy", "LLMPlayer", "candidate_actions"]

logger = logging.getLogger(__name__)


def _check_view(view: Any) -> dict[str, Any]:
    if not isinstance(view, dict) or "family" not in view or "role" not in view:
        raise TypeError(
            "game_view: expected an observation dict from game.observation(player) "
            f"(keys 'family', 'role', 'config', ...), got {type(view).__name__}"
        )
    return view


def _allows_messages(view: dict[str, Any]) -> bool:
    if view["family"] == "persuasion":
        return bool((view.get("legal") or {}).get("message", False))
    return bool(view["config"].get("messages", False))


def validate_reply(text: str, view: dict[str, Any]) -> Any:
    """Parse ``text`` for ``view`` and check the move is of a legal kind; raise `FormatError`."""
    cfg = view["config"]
    action = parse_action(
        text,
        view["family"],
        view["role"],
        expect=expected_move(view),
        money=cfg.get("money") if view["family"] == "bargaining" else None,
        message_type=cfg.get("message_type", "text"),
    )
    legal = view.get("legal") or {}
    kinds = legal.get("kinds", ())
    if kinds and action.kind not in kinds:
        raise FormatError(f"move: expected one of {list(kinds)}, got {action.kind!r}")
    if getattr(action, "message", None) is not None and not _allows_messages(view):
        action = dataclasses.replace(action, message=None)
    return action


class LLMPlayer:
    """A GLEE player backed by a chat model, with tolerant parsing and format retries.

    Args:
        backend: any core-kernels chat backend (``chat(messages, *, max_tokens, temperature,
            seed, ...)``).
        retries: extra attempts after a malformed reply (default 3: at most 4 calls per move).
        max_tokens: reply budget per call. Default 256.
        temperature: sampling temperature. Default 0.0 (greedy).
        seed: base seed passed to the backend; move ``i`` uses ``seed + i`` (``None``: not sent).

    Attributes:
        format_errors: rejected replies so far (a metric; GLEE would have crashed on each).
        moves: moves made so far.

    Raises:
        FormatRetriesExhausted: from :meth:`act` when no attempt produced a valid move; it
            carries every reply and error (``.attempts``, ``.errors``).

    Examples:
        >>> from paperbricks.core_kernels.llm import ScriptedBackend
        >>> from paperbricks.glee.config import BargainingConfig
        >>> from paperbricks.glee.games import BargainingGame
        >>> game = BargainingGame(BargainingConfig(money=100.0))
        >>> bot = LLMPlayer(ScriptedBackend(["sixty for me", '{"alice_gain": 60, "bob_gain": "40"}']))
        >>> bot.act(game.observation("alice")), bot.format_errors
        (Offer(amount=60.0, message=None), 1)
    """

    def __init__(
        self,
        backend: Any,
        retries: int = 3,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not callable(getattr(backend, "chat", None)):
            raise TypeError(
                f"backend: expected a chat backend with a chat() method, got {type(backend).__name__}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: expected an int >= 0, got {retries!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens: expected an int >= 1, got {max_tokens!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
        self.backend = backend
        self.retries = retries
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.format_errors = 0
        self.moves = 0

    def _chat_backend(self, view: dict[str, Any]) -> Any:
        return self.backend

    def act(self, game_view: dict[str, Any]) -> Any:
        """Choose a move for ``game_view`` (an engine observation for this player)."""
        view = _check_view(game_view)

        def validate(text: str) -> Any:
            try:
                return validate_reply(text, view)
            except FormatError:
                self.format_errors += 1
                raise

        wrapped = with_format_retries(self._chat_backend(view), validate, self.retries)
        kwargs: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.seed is not None:
            kwargs["seed"] = self.seed + self.moves
        action, _ = wrapped.chat_parsed(build_messages(view), **kwargs)
        self.moves += 1
        return action

    def __repr__(self) -> str:
        return f"LLMPlayer({self.backend!r}, retries={self.retries})"


def candidate_actions(view: dict[str, Any], *, step: float = 0.05) -> list[Any]:
    """A finite menu of legal moves for ``view`` (every entry passes the engine's checks).

    Offers: bargaining gives Alice ``k·step·M`` (k = 0..1/step); negotiation prices are
    ``k·step·M`` for k with ``0 < k·step <= 2`` (the grid's valuations lie in [0.8, 1.5]).
    Decisions: accept/reject (+ outside option in negotiation), buy/no-buy, recommend yes/no.
    """
    view = _check_view(view)
    if not (isinstance(step, float | int) and 0 < step <= 0.5):
        raise ValueError(f"step: expected a number in (0, 0.5], got {step!r}")
    fam, move = view["family"], expected_move(view)
    money = float(view["config"]["money"])
    n = round(1 / step)
    if fam == "persuasion":
        if view["role"] == "alice":
            return [Signal(True), Signal(False)]
        return [Buy(), NoBuy()]
    if move == "response":
        out = [Accept(), Reject()]
        return [*out, OutsideOption()] if fam == "negotiation" else out
    if fam == "bargaining":
        return [Offer(money * k / n) for k in range(n + 1)]
    return [Offer(money * k / n) for k in range(1, 2 * n + 1)]


class ChoiceScoringPolicy:
    """Pick the most likely move among a finite legal menu (log-likelihood under a local model).

    Args:
        backend: a backend that can score (``TransformersBackend``, or a scripted backend with
            ``score_fn``); see core-kernels ``score_choices``.
        step: offer grid as a fraction of M. Default 0.05 (5% steps).

    Examples:
        >>> from paperbricks.core_kernels.llm import ScriptedBackend
        >>> from paperbricks.glee.config import BargainingConfig
        >>> from paperbricks.glee.games import BargainingGame
        >>> g = BargainingGame(BargainingConfig(money=100.0))
        >>> pol = ChoiceScoringPolicy(ScriptedBackend([], score_fn=lambda m, c: [len(x) for x in c]))
        >>> pol.act(g.observation("alice")).kind
        'offer'
    """

    def __init__(self, backend: Any, *, step: float = 0.05) -> None:
        if not callable(getattr(backend, "score_choices", None)):
            raise TypeError(
                "backend: expected a backend with score_choices() (a local model), got "
                f"{type(backend).__name__}"
            )
        self.backend = backend
        self.step = step

    def act(self, game_view: dict[str, Any]) -> Any:
        """The highest-scoring legal move (ties: the first in menu order)."""
        view = _check_view(game_view)
        actions = candidate_actions(view, step=self.step)
        money = view["config"].get("money")
        texts = [format_action(a, view["family"], money=money) for a in actions]
        scores = score_choices(self.backend, build_messages(view), texts)
        best = max(range(len(actions)), key=lambda i: (scores[i], -i))
        logger.debug("choice scores %s -> %s", scores, texts[best])
        return actions[best]

    def __repr__(self) -> str:
        return f"ChoiceScoringPolicy({self.backend!r}, step={self.step})"

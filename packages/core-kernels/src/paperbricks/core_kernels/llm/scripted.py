"""A scripted chat backend for tests: canned replies in order, or a function of the request.

It records every request (messages and arguments) so a test can assert what a caller sent, and
raises :class:`ScriptExhaustedError` when asked for more replies than it was given, so a caller
that loops more often than expected fails loudly instead of hanging or repeating itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import (
    ChatBackendError,
    ChatResult,
    Message,
    check_candidates,
    check_chat_args,
    content_text,
    normalize_messages,
)

__all__ = ["ChatRequest", "ScriptExhaustedError", "ScriptedBackend"]


class ScriptExhaustedError(ChatBackendError):
    """A :class:`ScriptedBackend` was asked for more replies than its script holds."""


@dataclass(frozen=True)
class ChatRequest:
    """One recorded ``chat`` call (a deep copy of what the caller passed)."""

    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    stop: list[str] | None
    seed: int | None
    json_mode: bool


Reply = str | ChatResult
ReplyFn = Callable[[list[dict[str, str]], ChatRequest], Reply]


class ScriptedBackend:
    """Replies from a script (tests only; see ``docs/llm.md``).

    Args:
        responses: either a sequence of replies (``str`` or :class:`ChatResult`) handed out in
            order, one per ``chat`` call, or a function ``fn(messages, request) -> str | ChatResult``
            called for every request (it may raise to simulate failures).
        score_fn: optional ``fn(messages, choices) -> list[float]``; when given, the backend
            supports :func:`~paperbricks.core_kernels.llm.score_choices`. Default None (it then
            behaves like an HTTP backend that cannot score).

    Attributes:
        requests: every :class:`ChatRequest` received, in order.

    A plain string reply is returned as ``ChatResult(text, "stop", usage)`` where ``usage``
    counts whitespace-separated words, so budget code sees non-zero numbers. ``max_tokens`` and
    ``stop`` are recorded but not applied: the script is returned verbatim.

    Examples:
        >>> from paperbricks.core_kernels.llm import ScriptedBackend
        >>> b = ScriptedBackend(["hello", '{"move": "up"}'])
        >>> b.chat([{"role": "user", "content": "hi"}], max_tokens=8).text
        'hello'
        >>> b.chat([{"role": "user", "content": "go"}], max_tokens=8, json_mode=True).text
        '{"move": "up"}'
        >>> b.requests[1].json_mode, b.remaining
        (True, 0)
    """

    def __init__(
        self,
        responses: Sequence[Reply] | ReplyFn,
        *,
        score_fn: Callable[[Sequence[Message], list[str]], Sequence[float]] | None = None,
    ) -> None:
        if callable(responses):
            self._fn: ReplyFn | None = responses
            self._script: list[Reply] = []
        elif isinstance(responses, Sequence) and not isinstance(responses, (str, bytes)):
            for i, r in enumerate(responses):
                if not isinstance(r, (str, ChatResult)):
                    raise TypeError(
                        f"responses[{i}]: expected str or ChatResult, got {type(r).__name__}"
                    )
            self._fn = None
            self._script = list(responses)
        else:
            raise TypeError(
                "responses: expected a sequence of str/ChatResult or a callable "
                f"fn(messages, request), got {type(responses).__name__}"
            )
        if score_fn is not None and not callable(score_fn):
            raise TypeError(f"score_fn: expected a callable or None, got {type(score_fn).__name__}")
        self._score_fn = score_fn
        self._next = 0
        self.requests: list[ChatRequest] = []

    @property
    def supports_scoring(self) -> bool:
        """True when a ``score_fn`` was given."""
        return self._score_fn is not None

    @property
    def remaining(self) -> int | None:
        """Replies left in the script (None for a function-driven backend)."""
        return None if self._fn is not None else len(self._script) - self._next

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        json_mode: bool = False,
    ) -> ChatResult:
        """Record the request and return the next scripted reply (see the class docstring)."""
        msgs = normalize_messages(messages)
        stops = check_chat_args(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            json_mode=json_mode,
        )
        request = ChatRequest(
            copy.deepcopy(msgs), max_tokens, float(temperature), stops, seed, json_mode
        )
        self.requests.append(request)
        if self._fn is not None:
            reply = self._fn(copy.deepcopy(msgs), request)
        else:
            if self._next >= len(self._script):
                last = content_text(msgs[-1]["content"])
                raise ScriptExhaustedError(
                    f"ScriptedBackend: script exhausted after {len(self._script)} replies; "
                    f"request #{len(self.requests)} (last message: {last[:80]!r}) has no reply"
                )
            reply = self._script[self._next]
            self._next += 1
        if isinstance(reply, ChatResult):
            return reply
        if not isinstance(reply, str):
            raise TypeError(
                f"ScriptedBackend reply function returned {type(reply).__name__}, expected str or ChatResult"
            )
        prompt_words = sum(len(content_text(m["content"]).split()) for m in msgs)
        words = len(reply.split())
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": words,
            "total_tokens": prompt_words + words,
        }
        return ChatResult(reply, "stop", usage, raw={"scripted": True})

    def score_choices(self, messages: Sequence[Message], choices: Sequence[str]) -> list[float]:
        """Scores from ``score_fn``; raises TypeError when none was given."""
        if self._score_fn is None:
            raise TypeError("ScriptedBackend: no score_fn was given, so it cannot score choices")
        normalize_messages(messages)
        cs = check_candidates(choices)
        return [float(s) for s in self._score_fn(messages, cs)]

    def __repr__(self) -> str:
        kind = (
            "fn" if self._fn is not None else f"{len(self._script)} replies, {self.remaining} left"
        )
        return f"ScriptedBackend({kind}, {len(self.requests)} requests)"

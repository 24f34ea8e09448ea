"""Getting structured output out of chat models: JSON extraction and validate-and-retry.

- :func:`extract_json` finds the first JSON object or array in a reply, preferring the content
  of a fenced code block (```` ```json ... ``` ````), so chatty models that wrap JSON in prose
  or markdown still parse.
- :func:`with_format_retries` wraps a backend so that every reply goes through a ``validate``
  function; when it raises, the reply and the error are appended to the conversation (as an
  assistant turn and a user turn) and the model is asked again, up to ``retries`` times.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .base import ChatBackend, ChatBackendError, ChatResult, Message, normalize_messages

__all__ = ["FormatRetriesExhausted", "FormatRetryBackend", "extract_json", "with_format_retries"]

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def _first_json_in(text: str) -> tuple[bool, Any]:
    """Scan ``text`` for the first position where a JSON object/array parses completely."""
    for i, ch in enumerate(text):
        if ch not in "{[":
            continue
        try:
            value, _ = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        return True, value
    return False, None


def extract_json(text: str) -> Any:
    """Return the first JSON object or array found in ``text``, parsed.

    Fenced code blocks (```` ```json ```` or a bare ```` ``` ````) are searched first, in order;
    then the whole text is scanned left to right for the first ``{`` or ``[`` at which a complete,
    valid JSON value starts (so ``"I think [sic] {"a": 1}"`` yields ``{"a": 1}``: ``[sic]`` is
    not valid JSON). Bare scalars (``"42"``, ``"true"``) are not returned.

    Args:
        text: a model reply.

    Returns:
        ``dict`` or ``list``.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: no JSON object or array could be parsed; the message quotes the text's start.

    Examples:
        >>> from paperbricks.core_kernels.llm import extract_json
        >>> extract_json('Sure! ```json\\n{"action": "up", "steps": [1, 2]}\\n``` Done.')
        {'action': 'up', 'steps': [1, 2]}
        >>> extract_json('The answer is [1, 2] and {"k": true}.')
        [1, 2]
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    for match in _FENCE.finditer(text):
        found, value = _first_json_in(match.group(2))
        if found:
            return value
    found, value = _first_json_in(text)
    if found:
        return value
    snippet = text.strip()[:200]
    raise ValueError(f"text: no JSON object or array found in {snippet!r}")


class FormatRetriesExhausted(ChatBackendError):
    """Every attempt of a :class:`FormatRetryBackend` failed validation.

    Attributes:
        attempts: the replies (:class:`ChatResult`) in order.
        errors: the validation error of each reply.
    """

    def __init__(self, message: str, attempts: list[ChatResult], errors: list[Exception]) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.errors = errors


_FEEDBACK = (
    "Your previous reply could not be used: {error}. Reply again with the complete answer in the "
    "required format and nothing else."
)


class FormatRetryBackend:
    """A chat backend whose replies must pass ``validate`` (see :func:`with_format_retries`)."""

    def __init__(
        self,
        backend: ChatBackend,
        validate: Callable[[str], Any],
        retries: int = 3,
        *,
        catch: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError),
        feedback: str = _FEEDBACK,
    ) -> None:
        if not callable(getattr(backend, "chat", None)):
            raise TypeError(
                f"backend: expected an object with a chat() method, got {type(backend).__name__}"
            )
        if not callable(validate):
            raise TypeError(
                f"validate: expected a callable fn(text) -> value, got {type(validate).__name__}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: expected an int >= 0, got {retries!r}")
        if "{error}" not in feedback:
            raise ValueError("feedback: expected a template containing '{error}'")
        self.backend = backend
        self.validate = validate
        self.retries = retries
        self.catch = catch
        self.feedback = feedback

    @property
    def supports_scoring(self) -> bool:
        """Scoring passes through to the wrapped backend."""
        return callable(getattr(self.backend, "score_choices", None)) and getattr(
            self.backend, "supports_scoring", True
        )

    def score_choices(self, messages: Sequence[Message], choices: Sequence[str]) -> list[float]:
        """The wrapped backend's ``score_choices`` (no validation applies to scoring)."""
        from .base import score_choices

        return score_choices(self.backend, messages, choices)

    def chat_parsed(self, messages: Sequence[Message], **kwargs: Any) -> tuple[Any, ChatResult]:
        """Like :meth:`chat`, but also return what ``validate`` returned for the accepted reply."""
        msgs = normalize_messages(messages)
        attempts: list[ChatResult] = []
        errors: list[Exception] = []
        for attempt in range(self.retries + 1):
            result = self.backend.chat(msgs, **kwargs)
            attempts.append(result)
            try:
                value = self.validate(result.text)
            except self.catch as err:
                errors.append(err)
                logger.info(
                    "format check failed on attempt %d/%d: %s", attempt + 1, self.retries + 1, err
                )
                msgs = [
                    *msgs,
                    {"role": "assistant", "content": result.text},
                    {"role": "user", "content": self.feedback.format(error=err)},
                ]
                continue
            usage: dict[str, int] = {}
            for r in attempts:
                for k, v in r.usage.items():
                    usage[k] = usage.get(k, 0) + v
            return value, replace(result, usage=usage)
        raise FormatRetriesExhausted(
            f"no valid reply after {len(attempts)} attempt(s); last error: {errors[-1]}; "
            f"last reply: {attempts[-1].text[:200]!r}",
            attempts,
            errors,
        )

    def chat(self, messages: Sequence[Message], **kwargs: Any) -> ChatResult:
        """Chat until a reply passes ``validate`` (at most ``retries + 1`` calls).

        Returns the accepted reply, with ``usage`` summed over all attempts.

        Raises:
            FormatRetriesExhausted: no attempt passed; it carries every reply and error.
        """
        return self.chat_parsed(messages, **kwargs)[1]

    def __repr__(self) -> str:
        return f"FormatRetryBackend({self.backend!r}, retries={self.retries})"


def with_format_retries(
    backend: ChatBackend,
    validate: Callable[[str], Any],
    retries: int = 3,
    **kwargs: Any,
) -> FormatRetryBackend:
    """Wrap ``backend`` so that replies must pass ``validate``, feeding errors back to the model.

    On a failed check the conversation grows by the rejected reply (assistant turn) and a user
    turn ``"Your previous reply could not be used: <error>. Reply again ..."``, and the model is
    asked again.

    Args:
        backend: any chat backend.
        validate: ``fn(text) -> value``; raises ``ValueError``/``TypeError``/``KeyError`` (by
            default; see ``catch``) with a message the model can act on when the reply is
            unusable. Other exceptions propagate immediately.
        retries: extra attempts after the first (default 3, so at most 4 calls).
        **kwargs: ``catch`` (tuple of exception types treated as format errors) and
            ``feedback`` (template with ``{error}``) for :class:`FormatRetryBackend`.

    Returns:
        A :class:`FormatRetryBackend`; its ``chat`` returns the accepted :class:`ChatResult`
        and ``chat_parsed`` returns ``(validate(text), result)``.

    Examples:
        >>> from paperbricks.core_kernels.llm import ScriptedBackend, extract_json, with_format_retries
        >>> def parse(text):
        ...     obj = extract_json(text)
        ...     if "move" not in obj:
        ...         raise ValueError("missing key 'move'")
        ...     return obj["move"]
        >>> inner = ScriptedBackend(["no idea", '{"move": "left"}'])
        >>> value, result = with_format_retries(inner, parse).chat_parsed(
        ...     [{"role": "user", "content": "Reply in JSON."}], max_tokens=16)
        >>> value, len(inner.requests), inner.requests[1].messages[-1]["role"]
        ('left', 2, 'user')
    """
    return FormatRetryBackend(backend, validate, retries, **kwargs)

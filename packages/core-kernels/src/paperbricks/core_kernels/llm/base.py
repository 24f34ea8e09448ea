"""The chat-backend contract: messages in, text out.

A backend is any object with a ``chat`` method of the signature below (a structural
:class:`typing.Protocol`, so no base class is needed). Local backends may also offer
``score_choices(messages, choices) -> list[float]``: the summed log-likelihood of each candidate
assistant reply, which lets even a tiny random model pick a *legal* action.

This file is stdlib only: importing the ``llm`` module must stay cheap (no torch, no transformers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ROLES",
    "ChatBackend",
    "ChatBackendError",
    "ChatResult",
    "Message",
    "ScoringBackend",
    "check_candidates",
    "check_chat_args",
    "content_text",
    "normalize_messages",
    "score_choices",
    "text_only",
]

#: Message roles accepted by every backend (the OpenAI chat roles).
ROLES = ("system", "user", "assistant", "tool")

#: One chat message: ``{"role": "user", "content": "..."}``. ``content`` may also be a list of
#: OpenAI-style parts, ``{"type": "text", "text": ...}`` and
#: ``{"type": "image_url", "image_url": {"url": ...}}`` (an http(s) URL or a ``data:`` URL), for
#: vision-language models behind an OpenAI-compatible server.
Message = Mapping[str, Any]

_PART_TYPES = ("text", "image_url")


class ChatBackendError(RuntimeError):
    """A backend could not produce a reply: HTTP failure, malformed response, exhausted script."""


@dataclass(frozen=True)
class ChatResult:
    """What one ``chat`` call returns.

    Attributes:
        text: the assistant reply (already truncated at a stop string, if one was hit).
        finish_reason: ``"stop"`` (end of turn or a stop string), ``"length"`` (``max_tokens``
            reached), or whatever the server reported.
        usage: token counts, ``{"prompt_tokens", "completion_tokens", "total_tokens"}`` where the
            backend knows them (an empty dict otherwise).
        raw: the backend's raw response (the decoded JSON for HTTP backends, token ids and the
            rendered prompt for local models), for debugging; not part of the stable contract.
    """

    text: str
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    raw: Any = None


@runtime_checkable
class ChatBackend(Protocol):
    """Structural type of a chat backend.

    ``chat(messages, *, max_tokens, temperature=0.0, stop=None, seed=None, json_mode=False)``:

    - ``messages``: a non-empty sequence of ``{"role": ..., "content": ...}`` with a role in
      :data:`ROLES` and string content;
    - ``max_tokens``: positive int, the most tokens to generate;
    - ``temperature``: ``0.0`` is greedy / deterministic, larger samples;
    - ``stop``: strings that end the reply (not included in ``text``);
    - ``seed``: makes sampling reproducible where the backend supports it;
    - ``json_mode``: ask for a JSON object (enforced by servers that support it, advisory for
      local models; pair it with :func:`~paperbricks.core_kernels.llm.extract_json`).
    """

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        json_mode: bool = False,
    ) -> ChatResult: ...


@runtime_checkable
class ScoringBackend(ChatBackend, Protocol):
    """A chat backend that can also score candidate replies (local models)."""

    def score_choices(self, messages: Sequence[Message], choices: Sequence[str]) -> list[float]: ...


def _check_parts(i: int, content: Any) -> list[dict[str, Any]]:
    if isinstance(content, (str, bytes)) or not isinstance(content, Sequence) or not content:
        raise TypeError(
            f"messages[{i}]['content']: expected str or a non-empty list of parts, "
            f"got {type(content).__name__}"
        )
    parts: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        where = f"messages[{i}]['content'][{k}]"
        if not isinstance(part, Mapping) or part.get("type") not in _PART_TYPES:
            raise ValueError(
                f"{where}: expected a part with type in {_PART_TYPES}, got {part!r:.80}"
            )
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise TypeError(
                    f"{where}['text']: expected str, got {type(part.get('text')).__name__}"
                )
            parts.append({"type": "text", "text": part["text"]})
        else:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else None
            if not isinstance(url, str) or not url:
                raise ValueError(
                    f"{where}['image_url']: expected {{'url': str}}, got {image!r:.80}"
                )
            parts.append({"type": "image_url", "image_url": dict(image)})
    return parts


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate ``messages`` and return them as a list of plain ``{"role", "content"}`` dicts.

    ``content`` is a string, or a list of OpenAI-style text / image_url parts (see
    :data:`Message`); parts are validated and copied.

    Raises:
        TypeError: ``messages`` is not a sequence of mappings, or a content is neither a string
            nor a list of parts.
        ValueError: the list is empty, a role is missing or not one of :data:`ROLES`, or a part
            is malformed.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages: expected a sequence of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    if len(messages) == 0:
        raise ValueError("messages: expected at least one message, got an empty sequence")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(
                f"messages[{i}]: expected a mapping with role and content, got {type(m).__name__}"
            )
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}]['role']: expected one of {ROLES}, got {role!r}")
        content = m.get("content")
        if not isinstance(content, str):
            content = _check_parts(i, content)
        out.append({"role": role, "content": content})
    return out


def content_text(
    content: str | Sequence[Mapping[str, Any]], *, image_marker: str = "<image>"
) -> str:
    """The text of a message content; image parts become ``image_marker`` (for logs and counts)."""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] if p["type"] == "text" else image_marker for p in content)


def text_only(messages: Sequence[Message], backend: str) -> list[dict[str, str]]:
    """Normalised messages with string contents, for backends that take no images.

    Text parts are joined with newlines. Raises ``ValueError`` naming ``backend`` when a message
    carries an image part.
    """
    out = []
    for i, m in enumerate(normalize_messages(messages)):
        content = m["content"]
        if not isinstance(content, str):
            if any(p["type"] != "text" for p in content):
                raise ValueError(
                    f"messages[{i}]: {backend} is text-only and cannot take image parts; use a "
                    "vision-language model behind OpenAICompatBackend"
                )
            content = content_text(content)
        out.append({"role": m["role"], "content": content})
    return out


def check_chat_args(
    *,
    max_tokens: Any,
    temperature: Any,
    stop: Any,
    seed: Any,
    json_mode: Any,
) -> list[str] | None:
    """Validate the keyword arguments shared by every ``chat``; return ``stop`` as a list or None.

    A single string ``stop`` is accepted and wrapped in a list (as the OpenAI API does).

    Raises:
        TypeError / ValueError naming the offending argument.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens: expected a positive int, got {type(max_tokens).__name__}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens: expected a positive int, got {max_tokens}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature: expected a float >= 0, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a finite float >= 0, got {temperature}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
    if not isinstance(json_mode, bool):
        raise TypeError(f"json_mode: expected bool, got {type(json_mode).__name__}")
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, Sequence):
        raise TypeError(
            f"stop: expected a string or a sequence of strings, got {type(stop).__name__}"
        )
    out = []
    for i, s in enumerate(stops):
        if not isinstance(s, str):
            raise TypeError(f"stop[{i}]: expected str, got {type(s).__name__}")
        if s == "":
            raise ValueError(f"stop[{i}]: expected a non-empty string, got ''")
        out.append(s)
    return out or None


def score_choices(
    backend: Any, messages: Sequence[Message], candidates: Sequence[str]
) -> list[float]:
    """Log-likelihood of each candidate assistant reply given ``messages``.

    ``score = Σ_t log p(c_t | prompt, c_<t)`` over the candidate's tokens, computed by the
    backend's own ``score_choices`` (local models such as
    :class:`~paperbricks.core_kernels.llm.TransformersBackend`). The best candidate is
    ``candidates[argmax(scores)]``; summed log-likelihoods favour shorter candidates, so keep
    the candidates comparable (e.g. one action name each).

    Args:
        backend: a chat backend; it must provide ``score_choices`` (HTTP chat APIs do not).
        messages: the conversation so far (sequence of role/content dicts).
        candidates: non-empty sequence of non-empty strings.

    Returns:
        ``list[float]``, one score per candidate (<= 0).

    Raises:
        TypeError: the backend cannot score (no ``score_choices``, or ``supports_scoring`` is
            False), or ``candidates`` is not a sequence of strings.
        ValueError: ``candidates`` is empty or holds an empty string.

    Examples:
        >>> from paperbricks.core_kernels.llm import ScriptedBackend, score_choices
        >>> b = ScriptedBackend([], score_fn=lambda msgs, cs: [-float(len(c)) for c in cs])
        >>> score_choices(b, [{"role": "user", "content": "move?"}], ["left", "up"])
        [-4.0, -2.0]
    """
    method = getattr(backend, "score_choices", None)
    if not callable(method) or not getattr(backend, "supports_scoring", True):
        raise TypeError(
            f"backend: {type(backend).__name__} cannot score choices (it only generates text); "
            "use a local TransformersBackend, or generate and parse the reply instead"
        )
    normalize_messages(messages)
    check_candidates(candidates)
    scores = list(method(messages, list(candidates)))
    if len(scores) != len(candidates):
        raise ChatBackendError(
            f"{type(backend).__name__}.score_choices returned {len(scores)} scores "
            f"for {len(candidates)} candidates"
        )
    return [float(s) for s in scores]


def check_candidates(candidates: Any) -> list[str]:
    """Validate a list of candidate replies (non-empty sequence of non-empty strings)."""
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
        raise TypeError(
            f"candidates: expected a sequence of strings, got {type(candidates).__name__}"
        )
    if len(candidates) == 0:
        raise ValueError("candidates: expected at least one candidate, got an empty sequence")
    for i, c in enumerate(candidates):
        if not isinstance(c, str):
            raise TypeError(f"candidates[{i}]: expected str, got {type(c).__name__}")
        if c == "":
            raise ValueError(f"candidates[{i}]: expected a non-empty string, got ''")
    return list(candidates)

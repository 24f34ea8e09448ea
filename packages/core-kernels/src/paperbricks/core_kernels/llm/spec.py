"""Build a chat backend from a one-line spec string (for CLIs and configs)."""

from __future__ import annotations

import json
import os
from typing import Any

from .base import ChatBackend, ChatResult

__all__ = ["backend_from_spec"]

_FORMS = '"openai@URL#model", "hf:PATH" or "scripted:FILE"'


def backend_from_spec(spec: str, **kwargs: Any) -> ChatBackend:
    """Build a backend from a spec string.

    Forms:

    - ``"openai@URL#model"``: :class:`OpenAICompatBackend` with ``base_url=URL`` and
      ``model=model`` (split at the *first* ``#``: an API base URL has no fragment, while a
      served model name is free-form), e.g.
      ``"openai@http://127.0.0.1:8000/v1#qwen2.5-7b"``;
    - ``"hf:PATH"``: :class:`TransformersBackend` on the local checkpoint directory ``PATH``;
    - ``"scripted:FILE"``: :class:`ScriptedBackend` replaying a JSON file holding a list of
      reply strings (or objects ``{"text", "finish_reason"?, "usage"?}``), for tests and demos.

    Args:
        spec: the spec string.
        **kwargs: passed to the backend's constructor (e.g. ``api_key_env="OPENAI_API_KEY"``,
            ``timeout_s=30`` for openai; ``device="cuda"`` for hf).

    Returns:
        the backend.

    Raises:
        ValueError: an unknown prefix, an empty URL/model/path, or a scripted file that is not a
            JSON list of strings/objects.
        FileNotFoundError: the scripted file or hf directory does not exist.

    Examples:
        >>> from paperbricks.core_kernels.llm import backend_from_spec
        >>> backend_from_spec("openai@http://127.0.0.1:8000/v1#tiny").url
        'http://127.0.0.1:8000/v1/chat/completions'
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string like {_FORMS}, got {type(spec).__name__}")
    if spec.startswith("openai@"):
        rest = spec[len("openai@") :]
        url, sep, model = rest.partition("#")
        if not sep or not url or not model:
            raise ValueError(
                f"spec: expected 'openai@URL#model' with both parts non-empty, got {spec!r}"
            )
        from .openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(url, model, **kwargs)
    if spec.startswith("hf:"):
        path = spec[len("hf:") :]
        if not path:
            raise ValueError(f"spec: expected 'hf:PATH' with a non-empty path, got {spec!r}")
        from .transformers_backend import TransformersBackend

        return TransformersBackend(path, **kwargs)
    if spec.startswith("scripted:"):
        path = spec[len("scripted:") :]
        if not path:
            raise ValueError(f"spec: expected 'scripted:FILE' with a non-empty path, got {spec!r}")
        return _scripted_from_file(path, **kwargs)
    raise ValueError(f"spec: expected {_FORMS}, got {spec!r}")


def _scripted_from_file(path: str, **kwargs: Any) -> ChatBackend:
    from .scripted import ScriptedBackend

    if not os.path.isfile(path):
        raise FileNotFoundError(f"spec: scripted file {path!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        try:
            items = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"spec: scripted file {path!r} is not valid JSON: {err}") from err
    if not isinstance(items, list):
        raise ValueError(
            f"spec: scripted file {path!r} must hold a JSON list, got {type(items).__name__}"
        )
    replies: list[str | ChatResult] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            replies.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            usage = item.get("usage") or {}
            replies.append(
                ChatResult(item["text"], str(item.get("finish_reason", "stop")), dict(usage))
            )
        else:
            raise ValueError(
                f"spec: scripted file {path!r} item {i} must be a string or an object with a 'text' string, "
                f"got {item!r:.80}"
            )
    return ScriptedBackend(replies, **kwargs)

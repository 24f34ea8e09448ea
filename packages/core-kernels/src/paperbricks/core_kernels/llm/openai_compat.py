"""Chat backend for any OpenAI-compatible server (vLLM, llama.cpp server, TGI, SGLang, ...).

It POSTs ``{"model", "messages", "max_tokens", "temperature", ["stop"], ["seed"],
["response_format": {"type": "json_object"}]}`` to ``{base_url}/chat/completions`` with the
standard library's :mod:`urllib` (no ``requests`` dependency) and reads
``choices[0].message.content``.

Retries: 429 and 5xx responses, connection errors and timeouts are retried up to ``max_retries``
times with exponential backoff ``backoff_s · 2^k`` (capped at ``max_backoff_s``); a
``Retry-After`` header (seconds or an HTTP date) replaces the computed delay. Other 4xx are not
retried. The API key is read only from the environment variable named by ``api_key_env``: there
is deliberately no key argument, so keys never end up in code, configs or logs.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .base import ChatBackendError, ChatResult, Message, check_chat_args, normalize_messages

__all__ = ["OpenAICompatBackend"]

logger = logging.getLogger(__name__)

_SNIPPET = 300


def _snippet(body: bytes | str) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text.strip()
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...[truncated]"


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class OpenAICompatBackend:
    """Chat through an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``"http://127.0.0.1:8000/v1"`` (``http://`` or
            ``https://``; a trailing slash is ignored). Requests go to
            ``{base_url}/chat/completions``.
        model: the served model name sent in every request.
        api_key_env: name of the environment variable holding the API key, sent as
            ``Authorization: Bearer <key>``. Default None: no Authorization header (local
            servers). If a name is given and the variable is unset or empty, construction (and
            any later request) raises ``ValueError``.
        timeout_s: socket timeout per attempt, in seconds (default 60).
        max_retries: retries after the first attempt on 429/5xx/connection errors/timeouts
            (default 3, so at most 4 attempts).
        backoff_s: first backoff delay in seconds (default 1.0), doubled per retry.
        max_backoff_s: cap on any single delay, including one asked for by ``Retry-After``
            (default 60.0).
        sleep: the function used to wait (default :func:`time.sleep`; tests pass a recorder).
        extra_body: extra JSON fields merged into every request (e.g. ``{"top_p": 0.9}``);
            they may not override the fields this backend sets.

    Raises (from ``chat``):
        ChatBackendError: a non-retryable HTTP error, retries exhausted, or a malformed
            response. The message names the URL, the status and a snippet of the body.

    Examples:
        >>> from paperbricks.core_kernels.llm import OpenAICompatBackend
        >>> b = OpenAICompatBackend("http://127.0.0.1:8000/v1", "qwen2.5-7b-instruct")
        >>> b.url
        'http://127.0.0.1:8000/v1/chat/completions'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 60,
        max_retries: int = 3,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        sleep: Callable[[float], Any] = time.sleep,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(base_url, str):
            raise TypeError(f"base_url: expected str, got {type(base_url).__name__}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http:// or https:// URL, got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model: expected a non-empty model name, got {model!r}")
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
            raise ValueError(
                f"api_key_env: expected an environment variable name or None, got {api_key_env!r}"
            )
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not timeout_s > 0
        ):
            raise ValueError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: expected an int >= 0, got {max_retries!r}")
        for name, val in (("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
                raise ValueError(f"{name}: expected a number of seconds >= 0, got {val!r}")
        if not callable(sleep):
            raise TypeError(f"sleep: expected a callable, got {type(sleep).__name__}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._api_key()  # fail fast on an unset variable

    @property
    def supports_scoring(self) -> bool:
        """Always False: chat APIs return text, not the log-likelihood of given candidates."""
        return False

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"api_key_env: environment variable {self.api_key_env!r} is unset or empty; "
                "export it with the API key (keys are read from the environment only)"
            )
        return key

    def build_body(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        json_mode: bool = False,
    ) -> dict[str, Any]:
        """The JSON request body ``chat`` sends (validated; useful for logging and tests)."""
        msgs = normalize_messages(messages)
        stops = check_chat_args(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            json_mode=json_mode,
        )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": msgs,
            "max_tokens": max_tokens,
            "temperature": float(temperature),
        }
        if stops:
            body["stop"] = stops
        if seed is not None:
            body["seed"] = seed
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        clash = sorted(set(self.extra_body) & set(body))
        if clash:
            raise ValueError(f"extra_body: may not override the fields {clash} set by chat()")
        body.update(self.extra_body)
        return body

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
        """Send one chat request (with retries) and return the first choice.

        Args: see :class:`~paperbricks.core_kernels.llm.ChatBackend`. ``stop``, ``seed`` and
        ``json_mode`` are forwarded as ``stop``, ``seed`` and
        ``response_format={"type": "json_object"}``; whether they are honoured is up to the server.

        Returns:
            :class:`ChatResult` with ``raw`` the decoded response JSON.
        """
        body = self.build_body(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            json_mode=json_mode,
        )
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key()
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        payload = self._post_with_retries(data, headers)
        return self._parse(payload)

    def _post_with_retries(self, data: bytes, headers: dict[str, str]) -> bytes:
        attempts = self.max_retries + 1
        last_error = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as err:
                body = err.read() if err.fp is not None else b""
                last_error = f"HTTP {err.code} {err.reason}: {_snippet(body)}"
                if err.code != 429 and err.code < 500:
                    raise ChatBackendError(f"POST {self.url} failed with {last_error}") from err
                retry_after = _parse_retry_after(
                    err.headers.get("Retry-After") if err.headers else None
                )
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as err:
                reason = getattr(err, "reason", err)
                last_error = f"{type(err).__name__}: {reason}"
            if attempt + 1 >= attempts:
                break
            delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt
            delay = min(delay, self.max_backoff_s)
            logger.warning(
                "POST %s attempt %d/%d failed (%s); retrying in %.2fs",
                self.url,
                attempt + 1,
                attempts,
                last_error,
                delay,
            )
            self._sleep(delay)
        raise ChatBackendError(
            f"POST {self.url} failed after {attempts} attempt(s); last error: {last_error}"
        )

    def _parse(self, payload: bytes) -> ChatResult:
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ChatBackendError(
                f"POST {self.url}: response is not valid JSON ({err}); body starts: {_snippet(payload)!r}"
            ) from err
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices:
            raise ChatBackendError(
                f"POST {self.url}: response has no 'choices' list; body starts: {_snippet(payload)!r}"
            )
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise ChatBackendError(
                f"POST {self.url}: choices[0] has no 'message' object; body starts: {_snippet(payload)!r}"
            )
        content = message.get("content")
        if content is None:
            content = ""  # e.g. a tool-call-only reply
        if not isinstance(content, str):
            raise ChatBackendError(
                f"POST {self.url}: choices[0].message.content is {type(content).__name__}, expected str; "
                f"body starts: {_snippet(payload)!r}"
            )
        finish = first.get("finish_reason") or "unknown"
        usage_obj = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        usage = {
            k: int(v)
            for k, v in usage_obj.items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
        return ChatResult(content, str(finish), usage, raw=obj)

    def __repr__(self) -> str:
        return (
            f"OpenAICompatBackend(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, timeout_s={self.timeout_s}, max_retries={self.max_retries})"
        )

"""Chat backends for LLM-in-the-loop papers: one small interface, three implementations.

A backend maps a conversation to a reply::

    chat(messages, *, max_tokens, temperature=0.0, stop=None, seed=None, json_mode=False)
        -> ChatResult(text, finish_reason, usage, raw)

and local backends can also score candidate replies,
``score_choices(messages, choices) -> [Σ_t log p(c_t | prompt, c_<t)]``, so even a tiny random
model picks a legal action by ``argmax`` over the candidates.

- :class:`OpenAICompatBackend`: any OpenAI-compatible ``/chat/completions`` server (vLLM,
  llama.cpp, TGI), stdlib ``urllib`` only, key from an environment variable, retries with
  exponential backoff honouring ``Retry-After``.
- :class:`TransformersBackend`: a local transformers checkpoint (``local_files_only=True``), chat
  template when present, greedy or seeded sampling, stop strings, ``score_choices``.
- :class:`ScriptedBackend`: canned replies for tests; records requests, raises when exhausted.
- :func:`backend_from_spec` (``"openai@URL#model" | "hf:PATH" | "scripted:FILE"``),
  :func:`score_choices`, :func:`extract_json` and :func:`with_format_retries`.

Importing this module imports neither torch nor transformers; :class:`TransformersBackend`
imports them when constructed (the ``hf`` extra: ``pip install 'paperbricks-core-kernels[hf]'``).
Protocol-specific backends (e.g. GLEE's ``/chat`` endpoint) live in their paper packages.
"""

from __future__ import annotations

from .base import (
    ROLES,
    ChatBackend,
    ChatBackendError,
    ChatResult,
    Message,
    ScoringBackend,
    content_text,
    normalize_messages,
    score_choices,
    text_only,
)
from .json_utils import (
    FormatRetriesExhausted,
    FormatRetryBackend,
    extract_json,
    with_format_retries,
)
from .openai_compat import OpenAICompatBackend
from .scripted import ChatRequest, ScriptedBackend, ScriptExhaustedError
from .spec import backend_from_spec
from .transformers_backend import TransformersBackend

__all__ = [
    "ROLES",
    "ChatBackend",
    "ChatBackendError",
    "ChatRequest",
    "ChatResult",
    "FormatRetriesExhausted",
    "FormatRetryBackend",
    "Message",
    "OpenAICompatBackend",
    "ScoringBackend",
    "ScriptExhaustedError",
    "ScriptedBackend",
    "TransformersBackend",
    "backend_from_spec",
    "content_text",
    "extract_json",
    "normalize_messages",
    "score_choices",
    "text_only",
    "with_format_retries",
]

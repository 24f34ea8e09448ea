"""Small shims over transformers API drift inside the 5.x series.

transformers 5.x renamed the KV-cache field of its model outputs from ``past_key_values`` to
``cache`` (5.24 has ``cache``; 5.17 still has ``past_key_values``). Models written for this
workspace build and read outputs through these helpers so that one package works on both sides of
the rename instead of failing with ``unexpected keyword argument 'cache'``.

Importing this module does not import transformers; the helpers do, on first use.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

__all__ = ["cache_field", "make_output", "output_cache"]


@functools.cache
def _fields(cls: type) -> frozenset[str]:
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls))
    raise TypeError(f"cls: expected a transformers ModelOutput dataclass, got {cls!r}")


def cache_field(cls: type | None = None) -> str:
    """Name of the KV-cache field of ``cls`` (default: ``BaseModelOutputWithPast``).

    Returns ``"cache"`` or ``"past_key_values"``, whichever the installed transformers uses.
    """
    if cls is None:
        from transformers.modeling_outputs import BaseModelOutputWithPast as cls
    names = _fields(cls)
    for name in ("cache", "past_key_values"):
        if name in names:
            return name
    raise TypeError(f"cls: {cls.__name__} has neither a 'cache' nor a 'past_key_values' field")


def make_output(cls: type, *, cache: Any = None, **fields: Any) -> Any:
    """Construct the output dataclass ``cls`` with the KV cache under whatever name it uses.

    Examples:
        >>> from transformers.modeling_outputs import BaseModelOutputWithPast
        >>> import torch
        >>> out = make_output(BaseModelOutputWithPast, last_hidden_state=torch.zeros(1), cache=None)
        >>> output_cache(out) is None
        True
    """
    return cls(**fields, **{cache_field(cls): cache})


def output_cache(out: Any) -> Any:
    """The KV cache of a model output (``cache`` in recent transformers, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)

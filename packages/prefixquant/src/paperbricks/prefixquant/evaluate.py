"""Perplexity over non-overlapping windows, counting real tokens only (PrefixQuant evaluation, arXiv:2410.05265 §4).

The token stream is cut into non-overlapping windows of ``seqlen`` tokens (the tail shorter than
``seqlen`` is dropped, as in the usual WikiText-2 protocol). With a prefix the window is run after
the prefix KV cache, so the prefix is never scored and never counted; in every window token ``t``
is predicted from tokens ``< t`` of the same window (plus the prefix), so the first token of each
window is not predicted: ``seqlen − 1`` scored tokens per window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["PerplexityResult", "eval_perplexity"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity with its parts: ``ppl = exp(nll / tokens)``."""

    ppl: float
    nll: float  # summed negative log-likelihood (nats)
    tokens: int  # scored tokens
    windows: int  # windows evaluated


def _token_stream(data: Any, tokenizer: Any) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        if data.is_floating_point() or data.dim() not in (1, 2) or data.numel() == 0:
            raise ValueError(
                f"texts_or_token_ids: expected a non-empty integer tensor (L,) or (N, L), got "
                f"{data.dtype} {tuple(data.shape)}"
            )
        return data.reshape(-1).long()
    if isinstance(data, str):
        data = [data]
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        if tokenizer is None:
            raise ValueError("tokenizer: required when texts_or_token_ids are strings")
        enc = tokenizer("\n\n".join(data), add_special_tokens=False)["input_ids"]
        return torch.tensor(enc, dtype=torch.long)
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, int) for t in data):
        return torch.tensor(list(data), dtype=torch.long)
    raise TypeError(
        "texts_or_token_ids: expected a list of strings, a list of ints or an integer tensor, "
        f"got {type(data).__name__}"
    )


@torch.no_grad()
def eval_perplexity(
    model: nn.Module,
    texts_or_token_ids: Any,
    seqlen: int,
    *,
    tokenizer: Any = None,
    prefix: Any = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    return_details: bool = False,
    progress: bool = False,
) -> float | PerplexityResult:
    """Perplexity of ``model`` on non-overlapping ``seqlen``-token windows, real tokens only.

    Args:
        model: an HF causal LM, or a ``PrefixedCausalLM``.
        texts_or_token_ids: list of strings (joined with blank lines, tokenized without special
            tokens), a list of ints, or an integer tensor ``(L,)`` / ``(N, L)`` (flattened).
        seqlen: window length (>= 2).
        tokenizer: needed for strings.
        prefix: None, a ``PrefixSpec`` or a ``PrefixedCausalLM`` (the prefix cache is prepended;
            ignored when ``model`` is a ``PrefixedCausalLM`` already).
        batch_size: windows per forward.
        max_windows: evaluate at most this many windows (None: all).
        return_details: return a :class:`PerplexityResult` instead of the float.
        progress: tqdm bar.

    Returns:
        the perplexity (float), or a :class:`PerplexityResult`.

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.testing import tiny_llama_config
        >>> m = LlamaForCausalLM(tiny_llama_config()).eval()
        >>> r = eval_perplexity(m, torch.arange(3, 43), 10, return_details=True)
        >>> r.tokens, r.windows
        (36, 4)
    """
    from .calibrate import make_runner

    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise ValueError(f"seqlen: expected an int >= 2, got {seqlen!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    stream = _token_stream(texts_or_token_ids, tokenizer)
    n = stream.numel() // seqlen
    if max_windows is not None:
        n = min(n, int(max_windows))
    if n < 1:
        raise ValueError(
            f"texts_or_token_ids: {stream.numel()} tokens, fewer than one window of seqlen={seqlen}"
        )
    windows = stream[: n * seqlen].reshape(n, seqlen)  # (N, T)
    runner = make_runner(model, prefix)
    device = next(model.parameters()).device
    nll = 0.0
    count = 0
    for i in tqdm(range(0, n, batch_size), desc="ppl", disable=not progress):
        batch = windows[i : i + batch_size].to(device)  # (b, T)
        logits = runner(batch).logits  # (b, T, V), real tokens only
        if logits.shape[1] != seqlen:
            raise RuntimeError(
                f"model returned {logits.shape[1]} positions for a window of {seqlen}"
            )
        lp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (b, T-1, V)
        tgt = batch[:, 1:]  # (b, T-1)
        nll -= float(lp.gather(-1, tgt.unsqueeze(-1)).sum())
        count += tgt.numel()
    ppl = math.exp(nll / count)
    logger.info("perplexity %.4f over %d tokens in %d windows", ppl, count, n)
    if return_details:
        return PerplexityResult(ppl=ppl, nll=nll, tokens=count, windows=n)
    return ppl

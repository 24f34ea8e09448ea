"""Text data for calibration and evaluation: local files, token windows, a synthetic smoke source.

PrefixQuant (arXiv 2410.05265, §2 of the spec) calibrates on 64 windows × 512 tokens taken at
random offsets *inside* the token stream (so windows do not start with BOS), and evaluates
perplexity on consecutive non-overlapping windows of ``seqlen`` tokens (the WikiText-2 protocol).
Nothing here downloads: texts come from local files, or from :func:`synthetic_texts` (seeded
pseudo-English over the core-kernels tiny vocabulary) for smoke runs only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from paperbricks.core_kernels.validate import check_int

__all__ = [
    "calibration_windows",
    "eval_windows",
    "read_texts",
    "synthetic_texts",
    "token_stream",
]

logger = logging.getLogger(__name__)

_SPLITS = ("paragraph", "line", "file")


def read_texts(path: str | Path, *, split: str = "paragraph") -> list[str]:
    """Read documents from a UTF-8 text file, or from every ``*.txt`` file of a directory.

    Args:
        path: a file, or a directory whose ``*.txt`` files are read in sorted order.
        split: ``"paragraph"`` (default: documents separated by blank lines), ``"line"`` (one
            document per non-empty line) or ``"file"`` (each file is one document).

    Returns:
        the non-empty documents, stripped.

    Raises:
        FileNotFoundError: ``path`` does not exist (or a directory holds no ``*.txt``).
        ValueError: bad ``split``, undecodable bytes, or no text at all.

    Examples:
        >>> read_texts("calib.txt")  # doctest: +SKIP
        ['first paragraph ...', 'second paragraph ...']
    """
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"path: directory {str(p)!r} holds no *.txt files")
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"path: no such file or directory {str(p)!r}")
    docs: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"path: {str(f)!r} is not UTF-8 text ({exc})") from exc
        if split == "file":
            parts = [text]
        elif split == "line":
            parts = text.splitlines()
        else:
            parts = [blk for blk in text.replace("\r\n", "\n").split("\n\n")]
        docs.extend(d.strip() for d in parts if d.strip())
    if not docs:
        raise ValueError(f"path: {str(p)!r} contains no text")
    return docs


def token_stream(texts: list[str], tokenizer: Any, *, separator: str = "\n\n") -> torch.Tensor:
    """Tokenize the documents joined by ``separator`` into one ``(L,)`` int64 stream, no BOS.

    Args:
        texts: documents (non-empty list of strings).
        tokenizer: an HF tokenizer (``__call__`` with ``add_special_tokens``).
        separator: string placed between documents. Default a blank line (WikiText style).
    """
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError(f"texts: expected a non-empty list of strings, got {type(texts).__name__}")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts: every document must be a str")
    ids = tokenizer(separator.join(texts), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(
    texts: list[str], tokenizer: Any, seqlen: int, *, max_windows: int | None = None
) -> torch.Tensor:
    """Consecutive non-overlapping ``seqlen``-token windows of the stream (the last partial one dropped).

    Args:
        texts, tokenizer: see :func:`token_stream`.
        seqlen: window length (> 1).
        max_windows: keep at most this many windows (the first ones). Default all.

    Returns:
        ``(N, seqlen)`` int64 token ids.

    Raises:
        ValueError: the stream is shorter than one window (the message gives both lengths).
    """
    check_int("seqlen", seqlen, 2)
    stream = token_stream(texts, tokenizer)
    n = stream.numel() // seqlen
    if n == 0:
        raise ValueError(
            f"texts: {stream.numel()} tokens are fewer than one window of seqlen={seqlen}"
        )
    if max_windows is not None:
        check_int("max_windows", max_windows, 1)
        n = min(n, max_windows)
    return stream[: n * seqlen].reshape(n, seqlen)


def calibration_windows(
    texts: list[str], tokenizer: Any, nsamples: int, seqlen: int, *, seed: int = 0
) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens at seeded random offsets inside the stream.

    The official calibration protocol: offsets uniform in ``[0, L − seqlen]``, drawn with a
    private ``torch.Generator`` (no global RNG), so windows generally start mid-document.

    Args:
        texts, tokenizer: see :func:`token_stream`.
        nsamples: number of windows (>= 1).
        seqlen: window length (> 1).
        seed: generator seed. Default 0.

    Returns:
        ``(nsamples, seqlen)`` int64 token ids.

    Raises:
        ValueError: the stream is shorter than ``seqlen``.
    """
    check_int("nsamples", nsamples, 1)
    check_int("seqlen", seqlen, 2)
    stream = token_stream(texts, tokenizer)
    span = stream.numel() - seqlen
    if span < 0:
        raise ValueError(
            f"texts: {stream.numel()} tokens are fewer than one window of seqlen={seqlen}"
        )
    g = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, span + 1, (nsamples,), generator=g)  # (nsamples,)
    idx = starts[:, None] + torch.arange(seqlen)[None, :]  # (nsamples, seqlen)
    return stream[idx]


def synthetic_texts(n: int = 64, seed: int = 0, *, sentences_per_doc: int = 8) -> list[str]:
    """``n`` seeded pseudo-English paragraphs for smoke runs (core-kernels ``synthetic_text``).

    Every word is in the core-kernels tiny tokenizer's vocabulary. This is *not* calibration data
    for a real model: a prefix or scales found on it say nothing about real text.

    Args:
        n: number of paragraphs (>= 1). Default 64.
        seed: seed. Default 0.
        sentences_per_doc: sentences per paragraph. Default 8.
    """
    from paperbricks.core_kernels.testing.factories import synthetic_text

    check_int("n", n, 1)
    check_int("sentences_per_doc", sentences_per_doc, 1)
    sents = synthetic_text(n * sentences_per_doc, seed=seed)
    k = sentences_per_doc
    return [" ".join(sents[i * k : (i + 1) * k]) for i in range(n)]

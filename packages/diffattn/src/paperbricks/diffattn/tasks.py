"""Synthetic multi-needle retrieval (arXiv 2410.05258, §3.4 "Key Information Retrieval"), tokenised.

The paper hides N sentences "CITY is NUMBER" (the needles) at chosen depths of a long filler
context and then asks for the numbers of R of the cities. Here the same task is built directly
out of token ids so that a tiny model can learn it from scratch on a CPU:

    <bos> f f f C7 is N42 f f f f C3 is N05 f f ... f  C7 ? N42  [C3 ? N05 ...]
          \\____ context: filler + N needles ______/   \\_ R queries _/

- a vocabulary of ``num_cities`` city tokens, ``num_numbers`` number tokens and ``num_filler``
  filler ("noise") tokens, plus ``<pad>``, ``<bos>``, ``is`` and ``?`` (:class:`NeedleVocab`);
- the N needles use N distinct cities, each with a uniformly drawn number;
- needle ``i`` sits after a fraction ``depths[i]`` of the filler tokens (0 = right after
  ``<bos>``, 1 = right before the queries), so needles never overlap;
- the queries ask for needles ``0 .. R-1`` in that order: query ``r`` is ``CITY_r ? NUMBER_r``;
  the model is scored on predicting ``NUMBER_r`` at the ``?`` position.

What differs from the paper: the paper uses natural-language haystacks of 4K-64K tokens and
needles written in words; this version is token-level, short (tens to hundreds of tokens) and
has a small vocabulary, so that the two-layer models of the reproduction can learn it. Everything
is drawn from a ``torch.Generator`` (no global RNG) and built with tensor ops, batched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from paperbricks.core_kernels.validate import check_int

__all__ = [
    "IGNORE_INDEX",
    "NeedleBatch",
    "NeedleVocab",
    "multi_needle_batches",
    "multi_needle_task",
]

#: Label value that ``torch.nn.functional.cross_entropy`` (and HF causal-LM losses) ignore.
IGNORE_INDEX = -100


@dataclass(frozen=True)
class NeedleVocab:
    """Token-id layout of the multi-needle task.

    Ids ``0..3`` are ``<pad>``, ``<bos>``, ``is`` and ``?``; then come the cities, the numbers and
    the filler tokens, in that order. ``size`` is the model's ``vocab_size``.
    """

    num_cities: int = 64  # distinct "CITY" tokens (N needles use N distinct cities)
    num_numbers: int = 100  # distinct "NUMBER" tokens (the answers)
    num_filler: int = 32  # distinct filler/noise tokens of the haystack

    pad: int = 0
    bos: int = 1
    is_: int = 2
    ask: int = 3

    def __post_init__(self) -> None:
        for name in ("num_cities", "num_numbers", "num_filler"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NeedleVocab.{name}: expected an int >= 1, got {v!r}")

    @property
    def city0(self) -> int:
        """Id of the first city token."""
        return 4

    @property
    def number0(self) -> int:
        """Id of the first number token."""
        return self.city0 + self.num_cities

    @property
    def filler0(self) -> int:
        """Id of the first filler token."""
        return self.number0 + self.num_numbers

    @property
    def size(self) -> int:
        """Number of token ids (``vocab_size`` of a model for this task)."""
        return self.filler0 + self.num_filler

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Readable form of one sequence: ``<bos> f3 C7 is N42 ... C7 ? N42``."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids: expected one sequence (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        words = []
        for i in ids:
            i = int(i)
            if i == self.pad:
                words.append("<pad>")
            elif i == self.bos:
                words.append("<bos>")
            elif i == self.is_:
                words.append("is")
            elif i == self.ask:
                words.append("?")
            elif self.city0 <= i < self.number0:
                words.append(f"C{i - self.city0}")
            elif self.number0 <= i < self.filler0:
                words.append(f"N{i - self.number0}")
            elif self.filler0 <= i < self.size:
                words.append(f"f{i - self.filler0}")
            else:
                raise ValueError(f"ids: token {i} is outside the vocabulary [0, {self.size})")
        return " ".join(words)


@dataclass
class NeedleBatch:
    """A batch of multi-needle sequences and everything needed to score and analyse them.

    Attributes:
        input_ids: (B, L) int64 token ids (the answers included, so one forward scores all).
        labels: (B, L) int64, HF causal-LM convention (the model shifts): the answer ids at the
            answer positions, :data:`IGNORE_INDEX` elsewhere.
        loss_mask: (B, L) bool, True at the positions whose next-token prediction is scored
            (the ``?`` tokens); ``logits[loss_mask]`` line up with ``targets.flatten()``.
        targets: (B, R) int64 answer (NUMBER) ids, query order.
        query_pos: (B, R) int64 positions of the ``?`` tokens (where the answer is predicted).
        answer_pos: (B, R) int64 positions of the answer tokens (``query_pos + 1``).
        answer_span: (B, R, 2) int64 ``[start, end)`` of the queried needle "CITY is NUMBER".
        needle_span: (B, N, 2) int64 ``[start, end)`` of every needle, needle order.
        noise_mask: (B, L) bool, True on the filler tokens of the context.
        depths: (B, N) float32 depth of every needle in [0, 1].
        num_needles: N.
        num_queries: R.
        vocab: the :class:`NeedleVocab` the ids use.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    loss_mask: torch.Tensor
    targets: torch.Tensor
    query_pos: torch.Tensor
    answer_pos: torch.Tensor
    answer_span: torch.Tensor
    needle_span: torch.Tensor
    noise_mask: torch.Tensor
    depths: torch.Tensor
    num_needles: int
    num_queries: int
    vocab: NeedleVocab

    def to(self, device: torch.device | str) -> NeedleBatch:
        """The same batch with every tensor moved to ``device``."""
        moved = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()
        }
        return NeedleBatch(**moved)


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"seed: expected a CPU torch.Generator, got one on {seed.device}")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _depth_tensor(
    depths: Sequence[float] | torch.Tensor | None,
    batch: int,
    n: int,
    n_fill: int,
    gen: torch.Generator,
) -> torch.Tensor:
    if depths is None:
        # Uniform over the F + 1 filler slots, both ends included (torch.rand never gives 1.0,
        # which would leave the slot right before the queries untrained).
        return torch.randint(n_fill + 1, (batch, n), generator=gen) / n_fill  # (B, N)
    d = torch.as_tensor(depths, dtype=torch.float32)
    if d.shape == (n,):
        d = d.expand(batch, n)
    if d.shape != (batch, n):
        raise ValueError(
            f"depths: expected N={n} values or a (batch_size, N)=({batch}, {n}) tensor, "
            f"got shape {tuple(d.shape)}"
        )
    if not bool(torch.isfinite(d).all()) or bool((d < 0).any()) or bool((d > 1).any()):
        raise ValueError(f"depths: expected values in [0, 1], got {d.flatten().tolist()[:8]}...")
    return d.clone()


def multi_needle_task(
    num_needles: int,
    num_queries: int = 1,
    length: int = 64,
    depths: Sequence[float] | torch.Tensor | None = None,
    seed: int | torch.Generator = 0,
    *,
    vocab: NeedleVocab | None = None,
    batch_size: int = 1,
) -> NeedleBatch:
    """Draw a batch of multi-needle retrieval sequences (paper §3.4, at token level).

    Layout of one sequence of ``length`` L with N needles and R queries (see the module docstring):
    ``<bos>``, then a context of ``L − 1 − 3R`` tokens holding ``L − 1 − 3R − 3N`` filler tokens
    and the N needles "CITY is NUMBER", then R queries "CITY ? NUMBER".

    Args:
        num_needles: N >= 1, needles per sequence (distinct cities; N <= ``vocab.num_cities``).
        num_queries: R, 1 <= R <= N; the queries ask for needles ``0 .. R-1``.
        length: L, total tokens per sequence, answers included; needs at least one filler token
            (L >= 2 + 3N + 3R).
        depths: where the needles go, each in [0, 1] (the fraction of filler tokens before it):
            N floats (the same for every sequence), a (batch_size, N) tensor, or None to draw
            them uniformly over the filler slots. Needle ``i`` has depth ``depths[i]``, so ``depths[0]`` places the
            first queried needle.
        seed: an int, or a CPU ``torch.Generator`` to draw from (advanced in place).
        vocab: token layout (default :class:`NeedleVocab()`: 64 cities, 100 numbers, 32 fillers).
        batch_size: B, sequences to draw.

    Returns:
        :class:`NeedleBatch` with int64 ``input_ids`` of shape (B, L), the labels, the loss mask,
        the answer/needle spans and the noise (filler) mask.

    Raises:
        ValueError: N, R, L or B out of range, N larger than the number of cities, depths of
            the wrong shape or outside [0, 1].
        TypeError: ``seed`` neither an int nor a generator.

    Examples:
        >>> from paperbricks.diffattn.tasks import NeedleVocab, multi_needle_task
        >>> vocab = NeedleVocab(num_cities=8, num_numbers=10, num_filler=4)
        >>> b = multi_needle_task(2, 1, length=16, depths=[0.0, 1.0], seed=0, vocab=vocab)
        >>> b.input_ids.shape, b.answer_span.tolist(), b.query_pos.tolist()
        (torch.Size([1, 16]), [[[1, 4]]], [[14]])
        >>> vocab.decode(b.input_ids[0]).split()[:4]  # the first needle right after <bos>
        ['<bos>', 'C2', 'is', 'N7']
    """
    vocab = NeedleVocab() if vocab is None else vocab
    if not isinstance(vocab, NeedleVocab):
        raise TypeError(f"vocab: expected a NeedleVocab, got {type(vocab).__name__}")
    n = check_int("num_needles", num_needles, 1)
    r = check_int("num_queries", num_queries, 1)
    length = check_int("length", length, 1)
    batch = check_int("batch_size", batch_size, 1)
    if r > n:
        raise ValueError(f"num_queries: expected R <= num_needles={n}, got {r}")
    if n > vocab.num_cities:
        raise ValueError(
            f"num_needles: expected N <= vocab.num_cities={vocab.num_cities} (distinct cities), "
            f"got {n}"
        )
    context = length - 1 - 3 * r  # tokens between <bos> and the queries
    n_fill = context - 3 * n
    if n_fill < 1:
        raise ValueError(
            f"length: expected L >= 2 + 3*N + 3*R = {2 + 3 * n + 3 * r} for N={n}, R={r}, "
            f"got {length}"
        )
    gen = _generator(seed)
    d = _depth_tensor(depths, batch, n, n_fill, gen)  # (B, N)

    # Distinct cities per row: the first N of a random permutation; numbers i.i.d.
    cities = torch.rand(batch, vocab.num_cities, generator=gen).argsort(dim=1)[:, :n]  # (B, N)
    cities = cities + vocab.city0
    numbers = torch.randint(vocab.num_numbers, (batch, n), generator=gen) + vocab.number0  # (B, N)
    ids = torch.randint(vocab.num_filler, (batch, length), generator=gen) + vocab.filler0  # (B, L)
    ids[:, 0] = vocab.bos

    # Needle i starts after floor(d_i * F) fillers and after every needle placed before it.
    # Sorting by (depth, index) gives each needle its rank; rank * 3 shifts past earlier needles.
    fill_before = torch.floor(d * n_fill).long()  # (B, N) in [0, F]; d = 1 -> F
    order = torch.argsort(fill_before * n + torch.arange(n), dim=1)  # (B, N), stable by index
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(batch, n))
    start = 1 + fill_before + 3 * rank  # (B, N)
    needle_span = torch.stack([start, start + 3], dim=-1)  # (B, N, 2)
    ids.scatter_(1, start, cities)
    ids.scatter_(1, start + 1, torch.full_like(start, vocab.is_))
    ids.scatter_(1, start + 2, numbers)

    noise_mask = torch.zeros(batch, length, dtype=torch.bool)
    noise_mask[:, 1 : 1 + context] = True
    for k in range(3):  # the three tokens of every needle
        noise_mask.scatter_(1, start + k, False)

    # Queries: "CITY_r ? NUMBER_r" for r < R, after the context.
    q0 = 1 + context + 3 * torch.arange(r)  # (R,)
    city_pos = q0.expand(batch, r)
    query_pos = city_pos + 1  # (B, R)
    answer_pos = city_pos + 2  # (B, R)
    ids.scatter_(1, city_pos, cities[:, :r])
    ids.scatter_(1, query_pos, torch.full_like(query_pos, vocab.ask))
    targets = numbers[:, :r].clone()  # (B, R)
    ids.scatter_(1, answer_pos, targets)

    labels = torch.full_like(ids, IGNORE_INDEX)
    labels.scatter_(1, answer_pos, targets)
    loss_mask = torch.zeros(batch, length, dtype=torch.bool)
    loss_mask.scatter_(1, query_pos, True)
    return NeedleBatch(
        input_ids=ids,
        labels=labels,
        loss_mask=loss_mask,
        targets=targets,
        query_pos=query_pos.contiguous(),
        answer_pos=answer_pos.contiguous(),
        answer_span=needle_span[:, :r].clone(),
        needle_span=needle_span,
        noise_mask=noise_mask,
        depths=d.float(),
        num_needles=n,
        num_queries=r,
        vocab=vocab,
    )


def multi_needle_batches(
    num_needles: Sequence[int] | int = (1, 2, 4),
    num_queries: int = 1,
    length: int = 64,
    batch_size: int = 32,
    seed: int | torch.Generator = 0,
    *,
    vocab: NeedleVocab | None = None,
    num_batches: int | None = None,
) -> Iterator[NeedleBatch]:
    """An endless (or ``num_batches``-long) stream of training batches with random depths.

    Each batch draws its N uniformly from ``num_needles`` (one N per batch, so shapes stay fixed)
    and every needle's depth uniformly in [0, 1]. ``num_queries`` is capped at each batch's N.

    Args:
        num_needles: the N to draw from (an int for a single one).
        num_queries: R per sequence (at most N).
        length: L, tokens per sequence.
        batch_size: B, sequences per batch.
        seed: an int or a CPU ``torch.Generator``; the stream is a pure function of it.
        vocab: token layout (default :class:`NeedleVocab()`).
        num_batches: stop after this many batches (None: never stop).

    Yields:
        :class:`NeedleBatch` of ``batch_size`` sequences.

    Examples:
        >>> from paperbricks.diffattn.tasks import multi_needle_batches
        >>> batches = multi_needle_batches((1, 2), length=32, batch_size=4, seed=0, num_batches=3)
        >>> [tuple(b.input_ids.shape) for b in batches]
        [(4, 32), (4, 32), (4, 32)]
    """
    choices = [num_needles] if isinstance(num_needles, int) else list(num_needles)
    if not choices:
        raise ValueError("num_needles: expected at least one N, got an empty sequence")
    for c in choices:
        check_int("num_needles", c, 1)
    if num_batches is not None:
        check_int("num_batches", num_batches, 0)
    # Validate the largest N once, up front, instead of failing mid-stream.
    multi_needle_task(
        max(choices),
        min(num_queries, max(choices)),
        length,
        seed=0,
        vocab=vocab,
        batch_size=1,
    )
    gen = _generator(seed)

    def stream() -> Iterator[NeedleBatch]:
        i = 0
        while num_batches is None or i < num_batches:
            n = choices[int(torch.randint(len(choices), (1,), generator=gen))]
            yield multi_needle_task(
                n, min(num_queries, n), length, None, gen, vocab=vocab, batch_size=batch_size
            )
            i += 1

    return stream()

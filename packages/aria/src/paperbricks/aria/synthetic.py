"""Synthetic data for Aria's tiny-scale reproductions (spec §6): no download, fully seeded.

- :func:`multitask_sequences`: a *multi-task token language*. Each sequence starts with a task
  token and continues as a first-order Markov chain whose transition table belongs to that task
  (each table is sparse: every token has a few likely successors, different per task). A model
  must recognise the task and then predict with that task's table, so tokens of different tasks
  want different FFN functions: the setting in which fine-grained routed experts are argued to
  help (paper §2 "fine-grained MoE"). The best achievable loss is the chains' entropy rate,
  returned by :func:`multitask_entropy_rate`.
- :func:`image_caption_batch`: tiny images of K classes (each class a colour and a stripe
  orientation, plus noise) and a caption drawn from a class-specific token chain; the image
  token ``<|img|>`` is expanded to the projector's query count in front of the caption, with
  ``labels = -100`` on the image tokens. ``modality`` marks the image-token positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ImageCaptionBatch",
    "MultiTaskLanguage",
    "image_caption_batch",
    "multitask_entropy_rate",
    "multitask_sequences",
]


@dataclass(frozen=True)
class MultiTaskLanguage:
    """The transition tables of a synthetic multi-task language.

    Attributes:
        content_vocab: number of content tokens V_c (ids ``0 .. V_c-1``).
        n_tasks: number of tasks; task t's marker token is ``V_c + t``.
        transitions: (n_tasks, V_c, V_c) float64 row-stochastic tables.
        start: (n_tasks, V_c) float64 first-token distributions.
    """

    content_vocab: int
    n_tasks: int
    transitions: torch.Tensor
    start: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return self.content_vocab + self.n_tasks

    @classmethod
    def make(
        cls, content_vocab: int = 48, n_tasks: int = 4, branching: int = 3, seed: int = 0
    ) -> MultiTaskLanguage:
        """Random tables: each row puts its mass on ``branching`` successors (Dirichlet weights).

        Raises:
            ValueError: non-positive sizes or ``branching > content_vocab``.
        """
        for name, v in (
            ("content_vocab", content_vocab),
            ("n_tasks", n_tasks),
            ("branching", branching),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if branching > content_vocab:
            raise ValueError(
                f"branching: expected <= content_vocab={content_vocab}, got {branching}"
            )
        g = torch.Generator().manual_seed(seed)
        scores = torch.rand(n_tasks, content_vocab, content_vocab, generator=g, dtype=torch.float64)
        succ = scores.topk(branching, dim=-1).indices  # (n_tasks, V_c, branching)
        # Exp(1) draws, normalised: Dirichlet(1, ..., 1) weights over the successors
        w = -torch.log(
            torch.rand(n_tasks, content_vocab, branching, generator=g, dtype=torch.float64)
        )
        w = w / w.sum(-1, keepdim=True)
        trans = torch.zeros(n_tasks, content_vocab, content_vocab, dtype=torch.float64)
        trans.scatter_(-1, succ, w)
        start = torch.full((n_tasks, content_vocab), 1.0 / content_vocab, dtype=torch.float64)
        return cls(content_vocab, n_tasks, trans, start)


def multitask_entropy_rate(lang: MultiTaskLanguage) -> float:
    """Entropy rate (nats/token) of the content tokens, averaged over tasks at stationarity.

    A lower bound on the achievable next-token loss over content positions (after the first).
    """
    rates = []
    for t in range(lang.n_tasks):
        p = lang.transitions[t]  # (V, V)
        evals, evecs = torch.linalg.eig(p.T)
        i = torch.argmin((evals - 1).abs())
        pi = evecs[:, i].real
        pi = (pi / pi.sum()).clamp_min(0)
        h_rows = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)  # (V,)
        rates.append(float((pi * h_rows).sum()))
    return sum(rates) / len(rates)


def multitask_sequences(
    lang: MultiTaskLanguage, n: int, seq_len: int, *, generator: torch.Generator
) -> torch.Tensor:
    """Sample ``n`` sequences of length ``seq_len`` (task token first), tasks uniform.

    Args:
        lang: the language (:meth:`MultiTaskLanguage.make`).
        n: number of sequences.
        seq_len: tokens per sequence, >= 2 (task token + at least one content token).
        generator: torch.Generator (CPU) for reproducibility.

    Returns:
        (n, seq_len) int64 token ids.

    Examples:
        >>> lang = MultiTaskLanguage.make(content_vocab=8, n_tasks=2, seed=0)
        >>> multitask_sequences(lang, 3, 5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 5])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len: expected an int >= 2, got {seq_len!r}")
    task = torch.randint(0, lang.n_tasks, (n,), generator=generator)  # (n,)
    out = torch.empty(n, seq_len, dtype=torch.long)
    out[:, 0] = lang.content_vocab + task
    tok = torch.multinomial(lang.start[task], 1, generator=generator).squeeze(1)  # (n,)
    out[:, 1] = tok
    for j in range(2, seq_len):  # a Markov chain is sequential in time; batched over sequences
        tok = torch.multinomial(lang.transitions[task, tok], 1, generator=generator).squeeze(1)
        out[:, j] = tok
    return out


@dataclass(frozen=True)
class ImageCaptionBatch:
    """A batch for ``AriaForConditionalGeneration``.

    Attributes:
        input_ids: (B, n_q + L) image tokens (expanded) then caption tokens.
        labels: (B, n_q + L) ``-100`` on image tokens, the caption ids elsewhere.
        pixel_values: (B, 3, H, W) float32.
        pixel_mask: (B, H, W) bool, all True (no padding).
        modality: (B, n_q + L) bool, True on image-token positions.
        classes: (B,) int64 class of each image.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor
    modality: torch.Tensor
    classes: torch.Tensor

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward (with labels)."""
        return {
            "input_ids": self.input_ids,
            "labels": self.labels,
            "pixel_values": self.pixel_values,
            "pixel_mask": self.pixel_mask,
        }


def image_caption_batch(
    n: int,
    *,
    image_size: int,
    num_queries: int,
    caption_len: int,
    vocab_size: int,
    image_token_index: int,
    n_classes: int = 4,
    noise: float = 0.3,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> ImageCaptionBatch:
    """Synthetic image+caption pairs: the caption is a class-specific token chain.

    Class c has a colour (a fixed RGB direction) and a stripe orientation; the image is
    ``colour * stripes + noise``. Caption tokens come from a class-specific deterministic cycle
    over the content ids (ids other than ``image_token_index``), with 10 % random substitutions,
    so the caption is predictable from the image (its first token) and from the previous token.

    Args:
        n: batch size.
        image_size: square side in pixels (a multiple of the ViT patch size).
        num_queries: the projector's query count for this image size (tokens per image).
        caption_len: caption tokens after the image.
        vocab_size: text vocabulary; must exceed ``image_token_index`` and leave content ids.
        image_token_index: id of ``<|img|>``.
        n_classes: number of image classes. Default 4.
        noise: pixel noise std. Default 0.3.
        seed: seed of the class palette (shared between train and validation draws).
        generator: randomness of the draw (default: seeded by ``seed + 1``).

    Returns:
        :class:`ImageCaptionBatch`.
    """
    for name, v in (("n", n), ("image_size", image_size), ("num_queries", num_queries),
                    ("caption_len", caption_len), ("n_classes", n_classes)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if not 0 <= image_token_index < vocab_size or vocab_size < n_classes + 2:
        raise ValueError(
            f"vocab_size: expected > image_token_index={image_token_index} and >= n_classes + 2, "
            f"got {vocab_size}"
        )
    palette_g = torch.Generator().manual_seed(seed)
    colours = torch.rand(n_classes, 3, generator=palette_g) * 2 - 1  # (K, 3)
    content = torch.tensor([i for i in range(vocab_size) if i != image_token_index])
    perms = torch.stack(
        [content[torch.randperm(len(content), generator=palette_g)] for _ in range(n_classes)]
    )
    g = generator if generator is not None else torch.Generator().manual_seed(seed + 1)
    cls = torch.randint(0, n_classes, (n,), generator=g)  # (n,)
    yy, xx = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    angle = cls.float()[:, None, None] * torch.pi / n_classes  # (n, 1, 1)
    phase = torch.cos(angle) * xx + torch.sin(angle) * yy  # (n, H, W)
    stripes = torch.sign(torch.sin(phase * 2 * torch.pi / 7.0))  # (n, H, W)
    px = colours[cls][:, :, None, None] * stripes[:, None] + noise * torch.randn(
        n, 3, image_size, image_size, generator=g
    )  # (n, 3, H, W)
    start = torch.randint(0, len(content), (n,), generator=g)
    steps = (start[:, None] + torch.arange(caption_len)[None]) % len(content)  # (n, L)
    caption = torch.gather(perms[cls], 1, steps)  # (n, L) class-specific cycle
    flip = torch.rand(n, caption_len, generator=g) < 0.1
    caption = torch.where(
        flip, content[torch.randint(0, len(content), (n, caption_len), generator=g)], caption
    )
    img = torch.full((n, num_queries), image_token_index, dtype=torch.long)
    ids = torch.cat([img, caption], dim=1)  # (n, n_q + L)
    labels = torch.cat([torch.full_like(img, -100), caption], dim=1)
    modality = torch.zeros_like(ids, dtype=torch.bool)
    modality[:, :num_queries] = True
    mask = torch.ones(n, image_size, image_size, dtype=torch.bool)
    return ImageCaptionBatch(ids, labels, px.float(), mask, modality, cls)

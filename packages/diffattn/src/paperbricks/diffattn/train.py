"""Train and evaluate tiny causal LMs on the multi-needle task (arXiv 2410.05258, §3.4 at toy scale).

- :func:`train_needle_model`: AdamW with linear warm-up and cosine decay, cross-entropy on the
  answer tokens only (the filler, needles and query cities are not scored), batches drawn by
  :func:`paperbricks.diffattn.tasks.multi_needle_batches` from a seed, a tqdm progress bar that
  ``progress=False`` turns off.
- :func:`evaluate_retrieval`: accuracy by number of needles N and by depth of the queried
  needle, plus the attention allocation on the answer span vs the noise context
  (:func:`paperbricks.diffattn.metrics.attention_allocation`) read from the model's
  ``output_attentions`` — for DIFF models the differential map ``A1 − λ·A2``.

Any causal LM with the Hugging Face call convention works: ``model(input_ids=...,
output_attentions=...)`` returning an object with ``.logits`` (B, L, V) and, when asked,
``.attentions`` (one (B, H, T, S) map per layer). The paper's setting differs in scale only
(4K-64K tokens, 3B models pretrained on 1T tokens; here a few hundred steps from scratch).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .metrics import attention_allocation, retrieval_accuracy
from .tasks import NeedleBatch, NeedleVocab, multi_needle_batches, multi_needle_task

__all__ = [
    "RetrievalReport",
    "TrainResult",
    "answer_loss",
    "evaluate_retrieval",
    "train_needle_model",
]

logger = logging.getLogger(__name__)

DEFAULT_DEPTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class TrainResult:
    """What :func:`train_needle_model` did.

    Attributes:
        losses: the answer-token cross-entropy of every step (before its update).
        steps: optimiser steps taken.
        seconds: wall time of the loop.
    """

    losses: list[float]
    steps: int
    seconds: float

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 10 % of the steps (at least one)."""
        k = max(1, len(self.losses) // 10)
        return sum(self.losses[-k:]) / k


@dataclass
class RetrievalReport:
    """Retrieval accuracy and attention allocation of one model.

    Attributes:
        accuracy: ``{N: {depth: accuracy}}`` over ``samples`` sequences per cell.
        accuracy_by_n: ``{N: accuracy}`` averaged over the depths.
        answer_mass: ``{N: mass}`` mean attention mass of the query rows on the answer span
            (over layers, heads, depths and samples); empty without ``allocation=True``.
        noise_mass: ``{N: mass}`` the same on the noise (filler) tokens.
        answer_mass_per_layer / noise_mass_per_layer: ``{N: [mass per layer]}``.
        samples: sequences per (N, depth) cell.
        normalize: whether the allocation was row-normalised (see ``attention_allocation``).
    """

    accuracy: dict[int, dict[float, float]]
    accuracy_by_n: dict[int, float]
    answer_mass: dict[int, float] = field(default_factory=dict)
    noise_mass: dict[int, float] = field(default_factory=dict)
    answer_mass_per_layer: dict[int, list[float]] = field(default_factory=dict)
    noise_mass_per_layer: dict[int, list[float]] = field(default_factory=dict)
    samples: int = 0
    normalize: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (string keys)."""
        return {
            "accuracy": {
                str(n): {str(d): a for d, a in row.items()} for n, row in self.accuracy.items()
            },
            "accuracy_by_n": {str(n): a for n, a in self.accuracy_by_n.items()},
            "answer_mass": {str(n): v for n, v in self.answer_mass.items()},
            "noise_mass": {str(n): v for n, v in self.noise_mass.items()},
            "answer_mass_per_layer": {str(n): v for n, v in self.answer_mass_per_layer.items()},
            "noise_mass_per_layer": {str(n): v for n, v in self.noise_mass_per_layer.items()},
            "samples": self.samples,
            "normalize": self.normalize,
        }


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _logits(out: Any) -> torch.Tensor:
    logits = out.logits if hasattr(out, "logits") else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError("model: expected an output with .logits of shape (B, L, V)")
    return logits


def answer_loss(logits: torch.Tensor, batch: NeedleBatch) -> torch.Tensor:
    """Mean cross-entropy of the answers, predicted at the ``?`` positions (float32).

    Args:
        logits: (B, L, V) next-token logits on ``batch.input_ids``.
        batch: the :class:`~paperbricks.diffattn.tasks.NeedleBatch`.

    Returns:
        0-d float32 tensor (differentiable).
    """
    if logits.shape[:2] != batch.input_ids.shape:
        raise ValueError(
            f"logits: expected (B, L) = {tuple(batch.input_ids.shape)}, got {tuple(logits.shape[:2])}"
        )
    mask = batch.loss_mask.to(logits.device)  # (B, L), row-major order = (b, r) order
    picked = logits[mask].float()  # (B·R, V)
    return F.cross_entropy(picked, batch.targets.to(logits.device).flatten())


def _lr_at(step: int, steps: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_needle_model(
    model: torch.nn.Module,
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    warmup: int = 20,
    grad_clip: float | None = 1.0,
    num_needles: Sequence[int] | int = (1, 2, 4),
    num_queries: int = 1,
    length: int = 64,
    vocab: NeedleVocab | None = None,
    seed: int = 0,
    batches: Iterable[NeedleBatch] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on the multi-needle task, loss on the answer tokens only.

    AdamW (betas 0.9/0.95) with ``warmup`` linear warm-up steps then cosine decay to zero; the
    gradient norm is clipped at ``grad_clip``. Batches are drawn from ``seed`` (or taken from
    ``batches``); the model's own initialisation is the caller's business.

    Args:
        model: a causal LM (HF call convention) on the device to train on.
        steps: optimiser steps. Default 300.
        batch_size: sequences per step. Default 32.
        lr: peak learning rate. Default 3e-3 (tiny models from scratch).
        weight_decay: AdamW decoupled weight decay. Default 0.01.
        warmup: linear warm-up steps. Default 20.
        grad_clip: max gradient norm, or None for no clipping. Default 1.0.
        num_needles: N drawn per batch (see :func:`~paperbricks.diffattn.tasks.multi_needle_batches`).
        num_queries: R per sequence (capped at N).
        length: L, tokens per sequence.
        vocab: token layout (must fit the model's vocabulary).
        seed: seed of the batch stream.
        batches: an iterable of batches to use instead of drawing them (needs >= ``steps``).
        progress: show a tqdm progress bar (default True).

    Returns:
        :class:`TrainResult` with the per-step losses.

    Raises:
        ValueError: a non-positive ``steps``/``batch_size``/``lr``, or ``batches`` ran out.

    Examples:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from paperbricks.diffattn.tasks import NeedleVocab
        >>> vocab = NeedleVocab(num_cities=4, num_numbers=4, num_filler=4)
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab.size, hidden_size=16,
        ...     intermediate_size=32, num_hidden_layers=1, num_attention_heads=2))
        >>> res = train_needle_model(model, steps=5, batch_size=4, num_needles=1, length=12,
        ...     vocab=vocab, progress=False)
        >>> len(res.losses)
        5
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a finite float > 0, got {lr!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an int >= 0, got {warmup!r}")
    device = _device_of(model)
    if batches is None:
        batches = multi_needle_batches(
            num_needles, num_queries, length, batch_size, seed, vocab=vocab
        )
    it = iter(batches)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.95),
    )
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="train", disable=not progress, leave=False)
    for step in bar:
        try:
            batch = next(it).to(device)
        except StopIteration:
            raise ValueError(f"batches: ran out after {step} batches, expected {steps}") from None
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, warmup, float(lr))
        loss = answer_loss(_logits(model(input_ids=batch.input_ids, use_cache=False)), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    seconds = time.perf_counter() - t0
    model.eval()
    logger.info("trained %d steps in %.1f s, final loss %.4f", steps, seconds, losses[-1])
    return TrainResult(losses=losses, steps=steps, seconds=seconds)


@torch.no_grad()
def evaluate_retrieval(
    model: torch.nn.Module,
    *,
    num_needles: Sequence[int] = (1, 2, 4),
    depths: Sequence[float] = DEFAULT_DEPTHS,
    samples: int = 50,
    num_queries: int = 1,
    length: int = 64,
    vocab: NeedleVocab | None = None,
    seed: int = 1234,
    allocation: bool = True,
    normalize: bool = False,
    progress: bool = False,
) -> RetrievalReport:
    """Retrieval accuracy by N and depth, and the attention allocation (paper Fig. 4/Table 3).

    For every N and every depth ``d``, ``samples`` sequences are drawn with the first queried
    needle at depth ``d`` and the other needles at uniform random depths; a query counts as
    correct when the argmax over the whole vocabulary at its ``?`` is the answer. With
    ``allocation=True`` the model is called with ``output_attentions=True`` and the mass of the
    ``?`` rows on the queried needle span and on the filler tokens is averaged over layers, heads,
    depths and samples (for DIFF models the maps are the differential ones).

    Args:
        model: a causal LM (HF call convention); evaluated in ``eval()`` mode.
        num_needles: the N to test. Default (1, 2, 4).
        depths: depths of the queried needle. Default (0, 0.25, 0.5, 0.75, 1).
        samples: sequences per (N, depth) cell. Default 50 (the paper's count).
        num_queries: R per sequence (capped at N).
        length: L, tokens per sequence.
        vocab: token layout.
        seed: seed of the evaluation draws (keep it apart from the training seed).
        allocation: also measure the attention allocation.
        normalize: row-normalise the maps before measuring the allocation.
        progress: show a tqdm bar over the cells.

    Returns:
        :class:`RetrievalReport`.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected an int >= 1, got {samples!r}")
    ns = [int(n) for n in num_needles]
    ds = [float(d) for d in depths]
    if not ns or not ds:
        raise ValueError("num_needles, depths: expected at least one value each")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    acc: dict[int, dict[float, float]] = {}
    ans_mass: dict[int, list[torch.Tensor]] = {}
    noi_mass: dict[int, list[torch.Tensor]] = {}
    cells = [(n, d) for n in ns for d in ds]
    for n, d in tqdm(cells, desc="eval", disable=not progress, leave=False):
        depth = torch.randint(1_000_001, (samples, n), generator=gen) / 1_000_000  # [0, 1]
        depth[:, 0] = d
        batch = multi_needle_task(
            n, min(num_queries, n), length, depth, gen, vocab=vocab, batch_size=samples
        ).to(device)
        out = model(input_ids=batch.input_ids, use_cache=False, output_attentions=allocation)
        correct = retrieval_accuracy(_logits(out), batch)
        acc.setdefault(n, {})[d] = float(correct.float().mean())
        if allocation:
            maps = getattr(out, "attentions", None)
            if not maps or any(m is None for m in maps):
                raise ValueError(
                    "model: returned no attention maps with output_attentions=True (use an "
                    "implementation that materialises them, e.g. eager attention)"
                )
            alloc = attention_allocation(
                maps,
                batch.answer_span,
                batch.noise_mask,
                query_pos=batch.query_pos,
                normalize=normalize,
            )
            ans_mass.setdefault(n, []).append(alloc.answer)  # (layers, H)
            noi_mass.setdefault(n, []).append(alloc.noise)
    if was_training:
        model.train()
    report = RetrievalReport(
        accuracy=acc,
        accuracy_by_n={n: sum(row.values()) / len(row) for n, row in acc.items()},
        samples=samples,
        normalize=normalize,
    )
    for n in ans_mass:
        a = torch.stack(ans_mass[n]).mean(0)  # (layers, H)
        z = torch.stack(noi_mass[n]).mean(0)
        report.answer_mass[n] = float(a.mean())
        report.noise_mass[n] = float(z.mean())
        report.answer_mass_per_layer[n] = a.mean(1).tolist()
        report.noise_mass_per_layer[n] = z.mean(1).tolist()
    return report

"""Tiny-scale reproduction of the paper's headline claim (arXiv 2410.07167, abstract and experiments).

Claim: after the pre-training (alignment) stage of a vision-language model, a lower MIR predicts
a better model after supervised fine-tuning, and predicts it better than the pre-training loss.

What runs here (registered as ``mir.predicts-sft`` for ``paperbricks reproduce``):

1. a tiny LLaVA (:func:`paperbricks.mir.tinyvlm.build_tiny_vlm`: CLIP 32-wide, 16 image tokens;
   Llama 64-wide, 2 layers) whose language model is warmed up on synthetic text: stories, and
   chats that describe or answer questions about a scene given in words
   (:func:`paperbricks.mir.train.warm_up_language_model_`);
2. from that one model, projector pre-training on procedurally drawn image-caption pairs at
   several data scales and strategies (projector only, + MoCa, + top LM layer), one checkpoint
   each (:func:`paperbricks.mir.train.pretrain_projector_`);
3. per checkpoint: the exact MIR (:func:`paperbricks.mir.compute.compute_mir`, ``method="eigh"``)
   on unrelated image/story pairs, the captioning loss on held-out pairs, then a short SFT on
   synthetic visual questions and the held-out answer accuracy;
4. Spearman correlations (core-kernels ``stats.spearman``) of MIR vs accuracy and of pre-training
   loss vs accuracy over the checkpoints, and a scatter figure of both. As a side analysis (not
   used by the verdict) the same correlations over the checkpoints with a pre-trained projector
   (scale > 0) only, and MIR(+MoCa) − MIR(projector) at equal data.

Verdict: ``reproduced`` when ρ(MIR, acc) < 0 and |ρ(MIR, acc)| > |ρ(loss, acc)|; ``not
reproduced`` when ρ(MIR, acc) >= 0 or |ρ(loss, acc)| exceeds |ρ(MIR, acc)| by at least 0.2;
``inconclusive`` otherwise (loss ahead by less than 0.2, or an undefined correlation because the
accuracy is constant). With 5 (quick) or 10 (full) checkpoints of a model this small the outcome
depends on the seed (``seed_noisy``); read it over several seeds.

What differs from the paper: 7B LLaVA-1.5 models, real data (LAION/CC/SBU captions, TextVQA
images, CNN/DM stories) and 10+ benchmarks are replaced by a ~125k-parameter model, synthetic
pictures and one synthetic VQA task; the vision tower is random (not CLIP-pre-trained) and
frozen; one seed per run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from paperbricks.core_kernels.devices import intra_op_threads
from paperbricks.core_kernels.repro import ReproResult, new_figure

from .tinyvlm import TinyVLMConfig
from .train import PretrainStrategy

__all__ = [
    "CLAIM",
    "FULL_BUDGET",
    "QUICK_BUDGET",
    "Checkpoint",
    "MirBudget",
    "mir_predicts_sft",
    "run_mir_experiment",
    "verdict_from_correlations",
]

logger = logging.getLogger(__name__)

CLAIM = (
    "A lower Modality Integration Rate after pre-training predicts better accuracy after "
    "supervised fine-tuning, and predicts it better than the pre-training loss does "
    "(arXiv 2410.07167, abstract and experiments on pre-training data scale and strategy)."
)

#: |ρ(loss, acc)| − |ρ(MIR, acc)| at or above this margin counts as "not reproduced".
LOSS_MARGIN = 0.2


@dataclass(frozen=True)
class MirBudget:
    """Sizes of one run: model, data, the three stages and the MIR evaluation."""

    model: TinyVLMConfig = field(default_factory=TinyVLMConfig)  # the tiny LLaVA's sizes
    warmup_steps: int = 300  # LM warm-up optimiser steps
    warmup_stories: int = 300  # plain synthetic stories in the warm-up corpus
    warmup_chats: int = 3000  # text-only describe/answer chats in the warm-up corpus
    warmup_lr: float = 3e-3  # LM warm-up peak learning rate
    # (strategy, data scale) of each pre-training checkpoint; scale = caption pairs seen once
    checkpoints: tuple[tuple[PretrainStrategy, int], ...] = ()
    pretrain_batch: int = 32  # caption pairs per pre-training step
    heldout_pairs: int = 128  # held-out caption pairs for the pre-training loss
    mir_pairs: int = 32  # unrelated image/story pairs for MIR (the paper uses 100)
    sft_examples: int = 1024  # visual questions in the SFT set
    sft_steps: int = 80  # SFT optimiser steps (short, so pre-training quality matters)
    sft_lr: float = 2e-3  # SFT peak learning rate (projector, LM, MoCa)
    sft_batch: int = 32  # questions per SFT step
    test_questions: int = 256  # held-out questions for the accuracy
    threads: int | None = 1  # torch intra-op threads during the run (None: leave as is)

    def __post_init__(self) -> None:
        for name in (
            "warmup_steps",
            "warmup_stories",
            "warmup_chats",
            "pretrain_batch",
            "heldout_pairs",
            "mir_pairs",
            "sft_examples",
            "sft_steps",
            "sft_batch",
            "test_questions",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MirBudget.{name}: expected an int >= 1, got {v!r}")
        if self.mir_pairs < 2:
            raise ValueError(f"MirBudget.mir_pairs: expected an int >= 2, got {self.mir_pairs}")
        for name in ("warmup_lr", "sft_lr"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"MirBudget.{name}: expected a finite number > 0, got {v!r}")
        if len(self.checkpoints) < 2:
            raise ValueError(
                "MirBudget.checkpoints: expected at least 2 (strategy, scale) pairs to correlate, "
                f"got {len(self.checkpoints)}"
            )
        for i, item in enumerate(self.checkpoints):
            ok = (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], PretrainStrategy)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
                and item[1] >= 0
            )
            if not ok:
                raise ValueError(
                    f"MirBudget.checkpoints[{i}]: expected (PretrainStrategy, int >= 0), got {item!r}"
                )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(
                f"MirBudget.threads: expected None or an int >= 1, got {self.threads!r}"
            )

    @property
    def max_scale(self) -> int:
        """The largest data scale (caption pairs to generate)."""
        return max(scale for _, scale in self.checkpoints)


_PLAIN = PretrainStrategy(lr=1e-2)
_MOCA = PretrainStrategy(moca=True, lr=1e-2)
_TOP1 = PretrainStrategy(tune_top_layers=1, lr=1e-2)

#: ``--quick``: 5 checkpoints (projector only at 0/256/1024/4096 pairs, + MoCa at 4096); about a
#: minute on a 2-core CPU.
QUICK_BUDGET = MirBudget(
    checkpoints=((_PLAIN, 0), (_PLAIN, 256), (_PLAIN, 1024), (_PLAIN, 4096), (_MOCA, 4096)),
)

#: ``--full``: 10 checkpoints (the untrained projector once, then 3 strategies × 512/2048/8192
#: pairs), 100 MIR pairs (the paper's number), longer warm-up, larger SFT and test sets; about
#: two minutes on a 2-core CPU.
FULL_BUDGET = MirBudget(
    warmup_steps=600,
    warmup_stories=600,
    warmup_chats=6000,
    checkpoints=((_PLAIN, 0), *((s, n) for s in (_PLAIN, _MOCA, _TOP1) for n in (512, 2048, 8192))),
    mir_pairs=100,
    sft_examples=2048,
    sft_steps=120,
    test_questions=512,
)


@dataclass
class Checkpoint:
    """The measurements of one pre-training checkpoint."""

    strategy: str
    scale: int
    mir: float
    per_layer_fd: list[float]
    pretrain_loss: float
    zero_shot_accuracy: float
    accuracy: float
    accuracy_by_kind: dict[str, float]
    seconds: float


def run_mir_experiment(
    budget: MirBudget, *, seed: int = 0, progress: bool = False
) -> list[Checkpoint]:
    """Warm up one tiny LLaVA, then pre-train, measure and fine-tune one copy per checkpoint.

    All data sets are drawn from ``seed`` with disjoint offsets (warm-up text, pre-training
    pairs, held-out pairs, MIR pairs, SFT questions, test questions); every checkpoint sees the
    same data, the first ``scale`` pre-training pairs, and the same SFT batches.

    Args:
        budget: sizes and checkpoints.
        seed: seed of the model initialisation and of all data. Default 0.
        progress: tqdm bars for the stages. Default False.

    Returns:
        one :class:`Checkpoint` per ``budget.checkpoints`` entry, in order.
    """
    from . import data as D
    from .compute import compute_mir
    from .tinyvlm import build_tiny_vlm
    from .train import (
        caption_loss,
        encode_caption_pairs,
        encode_visual_questions,
        finetune_vqa_,
        pretrain_projector_,
        vqa_accuracy,
        warm_up_language_model_,
    )

    if not isinstance(budget, MirBudget):
        raise TypeError(f"budget: expected a MirBudget, got {type(budget).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    size = budget.model.image_size
    out: list[Checkpoint] = []
    with intra_op_threads(budget.threads):
        base, proc = build_tiny_vlm(budget.model, seed=seed)
        t0 = time.perf_counter()
        warm = warm_up_language_model_(
            base,
            proc,
            D.stories(budget.warmup_stories, seed=seed),
            conversations=D.text_conversations(budget.warmup_chats, seed=seed),
            steps=budget.warmup_steps,
            lr=budget.warmup_lr,
            seed=seed,
            progress=progress,
        )
        logger.info(
            "LM warm-up: loss %.3f -> %.3f in %.1f s", warm[0], warm[-1], time.perf_counter() - t0
        )
        train_pairs = (
            encode_caption_pairs(proc, D.caption_pairs(budget.max_scale, seed=seed + 11, size=size))
            if budget.max_scale > 0
            else None
        )
        held = encode_caption_pairs(
            proc, D.caption_pairs(budget.heldout_pairs, seed=seed + 12, size=size)
        )
        mir_images, mir_texts = D.unrelated_pairs(budget.mir_pairs, seed=seed + 13, size=size)
        sft = encode_visual_questions(
            proc, D.visual_questions(budget.sft_examples, seed=seed + 14, size=size)
        )
        test = encode_visual_questions(
            proc, D.visual_questions(budget.test_questions, seed=seed + 15, size=size)
        )
        for strategy, scale in budget.checkpoints:
            t1 = time.perf_counter()
            model = copy.deepcopy(base)  # MoCa hooks are attached to the copy, never to base
            pairs = train_pairs.take(scale) if train_pairs is not None else []
            pretrain_projector_(
                model,
                proc,
                pairs if scale > 0 else [],
                strategy=strategy,
                batch_size=budget.pretrain_batch,
                seed=seed,
                progress=progress,
            )
            loss = caption_loss(model, proc, held)
            mir = compute_mir(
                model, proc, mir_images, mir_texts, method="eigh", batch_size=16, progress=False
            )
            zero_shot = vqa_accuracy(model, proc, test)["accuracy"]
            finetune_vqa_(
                model,
                proc,
                sft,
                steps=budget.sft_steps,
                batch_size=budget.sft_batch,
                lr=budget.sft_lr,
                seed=seed,
                progress=progress,
            )
            acc = vqa_accuracy(model, proc, test)
            ck = Checkpoint(
                strategy=strategy.name,
                scale=scale,
                mir=float(mir.mir),
                per_layer_fd=[float(v) for v in mir.per_layer_fd],
                pretrain_loss=loss,
                zero_shot_accuracy=zero_shot,
                accuracy=acc.pop("accuracy"),
                accuracy_by_kind=acc,
                seconds=time.perf_counter() - t1,
            )
            logger.info(
                "%s@%d: MIR %.3f, loss %.3f, accuracy %.3f (%.1f s)",
                ck.strategy,
                scale,
                ck.mir,
                ck.pretrain_loss,
                ck.accuracy,
                ck.seconds,
            )
            out.append(ck)
    return out


def verdict_from_correlations(rho_mir: float, rho_loss: float) -> str:
    """The verdict rule of this reproduction (see the module docstring).

    Args:
        rho_mir: Spearman ρ(MIR, post-SFT accuracy) over the checkpoints (NaN if undefined).
        rho_loss: Spearman ρ(pre-training loss, post-SFT accuracy) (NaN if undefined).

    Returns:
        ``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"``.

    Examples:
        >>> verdict_from_correlations(-0.8, -0.3), verdict_from_correlations(0.4, -0.9)
        ('reproduced', 'not reproduced')
    """
    if not math.isfinite(rho_mir):
        return "inconclusive"
    if rho_mir >= 0:
        return "not reproduced"
    loss_abs = abs(rho_loss) if math.isfinite(rho_loss) else 0.0
    if abs(rho_mir) > loss_abs:
        return "reproduced"
    if loss_abs - abs(rho_mir) >= LOSS_MARGIN:
        return "not reproduced"
    return "inconclusive"


def _figure(rows: list[Checkpoint], rho_mir: float, rho_loss: float, path: Path) -> Path:
    fig = new_figure(figsize=(8.0, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    strategies = sorted({r.strategy for r in rows})
    markers = dict(zip(strategies, "osD^v", strict=False))
    for ax, key, label, rho in (
        (axes[0], "mir", "MIR after pre-training (log10, lower = better aligned)", rho_mir),
        (axes[1], "pretrain_loss", "pre-training loss (held-out captions, nats)", rho_loss),
    ):
        for s in strategies:
            pts = [r for r in rows if r.strategy == s]
            ax.scatter(
                [getattr(r, key) for r in pts],
                [r.accuracy for r in pts],
                marker=markers.get(s, "o"),
                label=s,
            )
            for r in pts:
                ax.annotate(str(r.scale), (getattr(r, key), r.accuracy), fontsize=7)
        ax.set_xlabel(label, fontsize=8)
        ax.set_title(f"Spearman ρ = {rho:.2f}", fontsize=9)
    axes[0].set_ylabel("accuracy after SFT")
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return path


def mir_predicts_sft(
    *, seed: int, out_dir: Path, quick: bool, _budget: MirBudget | None = None
) -> ReproResult:
    """``paperbricks reproduce mir.predicts-sft``: does lower MIR predict post-SFT accuracy
    better than the pre-training loss does?

    Args:
        seed: seed of the model and all data.
        out_dir: folder for ``mir_vs_accuracy.png`` and ``checkpoints.json``.
        quick: :data:`QUICK_BUDGET` (about a minute on a 2-core CPU) or :data:`FULL_BUDGET`.
        _budget: overrides the budget (tests use a tiny one).

    Returns:
        :class:`paperbricks.core_kernels.repro.ReproResult` with both correlations, every
        checkpoint's MIR, loss and accuracy, the figure, ``seed_noisy=True`` and
        ``device="cpu"`` (the run always uses the CPU: these models are too small to gain from
        a GPU).
    """
    from paperbricks.core_kernels.stats import spearman

    budget = _budget if _budget is not None else (QUICK_BUDGET if quick else FULL_BUDGET)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = run_mir_experiment(budget, seed=seed)
    mir = torch.tensor([r.mir for r in rows], dtype=torch.float64)
    loss = torch.tensor([r.pretrain_loss for r in rows], dtype=torch.float64)
    acc = torch.tensor([r.accuracy for r in rows], dtype=torch.float64)
    rho_mir = float(spearman(mir, acc))
    rho_loss = float(spearman(loss, acc))
    verdict = verdict_from_correlations(rho_mir, rho_loss)

    metrics: dict[str, Any] = {
        "rho_mir_accuracy": rho_mir,
        "rho_loss_accuracy": rho_loss,
        "checkpoints": len(rows),
    }
    trained = [i for i, r in enumerate(rows) if r.scale > 0]
    if len(trained) >= 3:  # side analysis, not used by the verdict: pre-trained connectors only
        sel = torch.tensor(trained)
        metrics["rho_mir_accuracy (scale > 0)"] = float(spearman(mir[sel], acc[sel]))
        metrics["rho_loss_accuracy (scale > 0)"] = float(spearman(loss[sel], acc[sel]))
    for r in rows:
        tag = f"{r.strategy}@{r.scale}"
        metrics[f"{tag} MIR"] = r.mir
        metrics[f"{tag} loss"] = r.pretrain_loss
        metrics[f"{tag} accuracy"] = r.accuracy
    by_key = {(r.strategy, r.scale): r for r in rows}
    for r in rows:  # MoCa vs the plain projector at the same data scale
        plain = by_key.get(("projector", r.scale))
        if r.strategy == "projector+moca" and plain is not None:
            metrics[f"MoCa MIR change @{r.scale}"] = r.mir - plain.mir
    metrics["seconds"] = time.perf_counter() - t0

    (out_dir / "checkpoints.json").write_text(
        json.dumps(
            {"seed": seed, "quick": quick, "checkpoints": [asdict(r) for r in rows]}, indent=2
        )
        + "\n"
    )
    fig = _figure(rows, rho_mir, rho_loss, out_dir / "mir_vs_accuracy.png")
    summary = (
        f"{len(rows)} pre-training checkpoints of a tiny LLaVA: Spearman ρ(MIR, post-SFT acc) = "
        f"{rho_mir:.2f}, ρ(pre-training loss, acc) = {rho_loss:.2f}; accuracy "
        f"{float(acc.min()):.2f}–{float(acc.max()):.2f} -> {verdict} "
        "(reproduced needs ρ(MIR) < 0 and |ρ(MIR)| > |ρ(loss)|)."
    )
    return ReproResult(
        claim=CLAIM,
        verdict=verdict,  # type: ignore[arg-type]
        metrics=metrics,
        summary=summary,
        figures=[fig],
        seed_noisy=True,
        device="cpu",
    )

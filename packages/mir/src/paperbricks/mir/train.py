"""The three training stages of a LLaVA-style model, at tiny scale (arXiv 2410.07167).

1. :func:`warm_up_language_model_`: the language model (embeddings, decoder, LM head) learns the
   vocabulary and the chat format on text only (synthetic stories and captions). A real LLaVA
   starts from a pre-trained LLM; this stands in for it.
2. :func:`pretrain_projector_`: LLaVA's alignment stage. Only the projector is trained on
   image-caption pairs (captioning loss on the caption tokens), one pass over ``len(pairs)``
   pairs, so the data scale sets the number of steps. :class:`PretrainStrategy` adds the paper's
   variations: MoCa (:func:`paperbricks.mir.moca.apply_moca_`, trained with the projector and
   kept in fine-tuning, as ``pre_sft_moca.sh`` does) and unfreezing the top language-model
   layers (the paper's ``--tune_llm_utill_layer`` experiments).
3. :func:`finetune_vqa_`: a short supervised fine-tune on synthetic visual questions
   (projector + language model + MoCa trained; loss on the answer tokens), then
   :func:`vqa_accuracy` scores held-out questions by the argmax of the first answer token.

Loss helpers: :func:`caption_loss` (the pre-training loss on held-out pairs, the baseline signal
the paper compares MIR with). All prompts use the processor's chat template: the user turn holds
the image (and the question), the assistant turn the target. Every loop is seeded through its own
``torch.Generator`` and shows a tqdm bar unless ``progress=False``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "EncodedSet",
    "PretrainStrategy",
    "caption_loss",
    "encode_caption_pairs",
    "encode_conversations",
    "encode_texts",
    "encode_visual_questions",
    "finetune_vqa_",
    "pretrain_projector_",
    "vqa_accuracy",
    "warm_up_language_model_",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class EncodedSet:
    """Token ids, labels and pixels of a set of examples, padded to one length.

    Attributes:
        input_ids: ``(N, T)`` int64, image tokens already expanded, right-padded.
        attention_mask: ``(N, T)`` int64.
        labels: ``(N, T)`` int64, ``-100`` except at the target tokens.
        pixel_values: ``(N, 3, H, W)`` float32, or None for text-only sets.
        tags: ``N`` labels of the rows (e.g. question kinds), or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None = None
    tags: list[str] | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def take(self, n: int) -> EncodedSet:
        """The first ``n`` rows (``0 <= n <= len(self)``)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self):
            raise ValueError(f"n: expected an int in [0, {len(self)}], got {n!r}")
        return EncodedSet(
            self.input_ids[:n],
            self.attention_mask[:n],
            self.labels[:n],
            None if self.pixel_values is None else self.pixel_values[:n],
            None if self.tags is None else self.tags[:n],
        )

    @staticmethod
    def concat(sets: Sequence[EncodedSet], pad_token_id: int) -> EncodedSet:
        """Rows of text-only ``sets`` stacked, right-padded with ``pad_token_id``."""
        if not sets or any(s.pixel_values is not None for s in sets):
            raise ValueError("sets: expected a non-empty sequence of text-only EncodedSets")
        t = max(s.input_ids.shape[1] for s in sets)

        def pad(x: torch.Tensor, value: int) -> torch.Tensor:
            return nn.functional.pad(x, (0, t - x.shape[1]), value=value)

        return EncodedSet(
            torch.cat([pad(s.input_ids, pad_token_id) for s in sets]),
            torch.cat([pad(s.attention_mask, 0) for s in sets]),
            torch.cat([pad(s.labels, IGNORE_INDEX) for s in sets]),
        )

    def batch(
        self, idx: torch.Tensor, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Rows ``idx`` as model keyword arguments, trimmed to their longest sequence."""
        mask = self.attention_mask[idx]
        t = int(mask.sum(dim=1).max())
        out = {
            "input_ids": self.input_ids[idx, :t].to(device),
            "attention_mask": mask[:, :t].to(device),
            "labels": self.labels[idx, :t].to(device),
        }
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values[idx].to(device)
        return out


@dataclass(frozen=True)
class PretrainStrategy:
    """What the alignment (projector pre-training) stage trains.

    Attributes:
        moca: attach MoCa (identity at init, ``moca_std``) and train it with the projector.
        moca_std: initial spread of MoCa's ``γ, β`` (0.0 = identity, the released script).
        tune_top_layers: also train the top ``k`` language-model decoder layers (0 = projector
            only, LLaVA-1.5's default).
        lr: AdamW learning rate of the projector (and MoCa); the unfrozen LM layers get
            ``lr / 10``.
    """

    moca: bool = False
    moca_std: float = 0.0
    tune_top_layers: int = 0
    lr: float = 3e-3

    def __post_init__(self) -> None:
        if not isinstance(self.moca, bool):
            raise TypeError(f"PretrainStrategy.moca: expected a bool, got {self.moca!r}")
        if not isinstance(self.moca_std, int | float) or not self.moca_std >= 0:
            raise ValueError(
                f"PretrainStrategy.moca_std: expected a number >= 0, got {self.moca_std!r}"
            )
        k = self.tune_top_layers
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"PretrainStrategy.tune_top_layers: expected an int >= 0, got {k!r}")
        if not isinstance(self.lr, int | float) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"PretrainStrategy.lr: expected a finite number > 0, got {self.lr!r}")

    @property
    def name(self) -> str:
        """A short label such as ``"projector"``, ``"projector+moca"``, ``"projector+top1"``."""
        parts = ["projector"]
        if self.tune_top_layers:
            parts.append(f"top{self.tune_top_layers}")
        if self.moca:
            parts.append("moca")
        return "+".join(parts)


# --------------------------------------------------------------------------- encoding


def _check_processor(processor: Any) -> None:
    for attr in ("tokenizer", "image_processor", "apply_chat_template"):
        if not hasattr(processor, attr):
            raise TypeError(
                f"processor: expected a HF vision-language processor with .{attr}, got "
                f"{type(processor).__name__}"
            )


def encode_conversations(
    processor: Any,
    targets: Sequence[str],
    *,
    images: Sequence[Any] | None = None,
    prompts: Sequence[str] | None = None,
) -> EncodedSet:
    """Encode one-turn conversations ``user: [<image>] [prompt]`` / ``assistant: target``.

    The user turn holds the image (when ``images`` is given) and then the prompt text (when
    ``prompts`` is given); the prompt is rendered by the processor's chat template with the
    generation prompt, and the target and an EOS token follow it. Only those are labelled: the
    last ``len(tokenize(" target eos"))`` real tokens of each row, which is exact for tokenizers
    that split on whitespace (the tiny processor's); a merging BPE tokenizer could shift the
    boundary by a token.

    Args:
        processor: a LLaVA-style processor (e.g. :func:`paperbricks.mir.tinyvlm.build_processor`).
        targets: ``N`` assistant replies (captions or answers), at least one.
        images: ``N`` PIL images, or None for text-only conversations.
        prompts: ``N`` user texts after the image (questions), or None.

    Returns:
        :class:`EncodedSet` with ``N`` rows (``pixel_values`` None when ``images`` is None).

    Examples:
        >>> from paperbricks.mir.tinyvlm import build_processor
        >>> enc = encode_conversations(build_processor(), ["red"], prompts=["what color ?"])
        >>> int((enc.labels != -100).sum())  # "red" and the EOS
        2
    """
    _check_processor(processor)
    n = len(targets)
    if n == 0:
        raise ValueError("targets: expected at least one example, got 0")
    for name, seq in (("images", images), ("prompts", prompts)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name}: expected {n} items (one per target), got {len(seq)}")
    if images is None and prompts is None:
        raise ValueError("images, prompts: expected at least one of them, got neither")
    tok = processor.tokenizer
    texts, n_target = [], []
    for i in range(n):
        content: list[dict[str, str]] = []
        if images is not None:
            content.append({"type": "image"})
        if prompts is not None:
            content.append({"type": "text", "text": prompts[i]})
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        tail = f" {targets[i]} {tok.eos_token}"
        texts.append(prompt + tail)
        n_target.append(len(tok(tail, add_special_tokens=False)["input_ids"]))
    if images is None:
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    else:
        enc = processor(images=list(images), text=texts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = mask.sum(dim=1)  # (N,)
    pos = torch.arange(ids.shape[1])  # (T,)
    start = (lengths - torch.tensor(n_target)).unsqueeze(1)  # (N, 1)
    is_target = (pos >= start) & (pos < lengths.unsqueeze(1))  # (N, T)
    labels = torch.where(is_target, ids, torch.full_like(ids, IGNORE_INDEX))
    pixels = None if images is None else enc["pixel_values"].float()
    return EncodedSet(ids, mask, labels, pixels)


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> EncodedSet:
    """Encode text-only sequences ``<bos> text <eos>`` with every real token labelled.

    Args:
        tokenizer: a HF tokenizer with bos/eos/pad tokens.
        texts: the texts (at least one).

    Returns:
        :class:`EncodedSet` without pixels.
    """
    if len(texts) == 0:
        raise ValueError("texts: expected at least one text, got 0")
    full = [f"{tokenizer.bos_token} {t} {tokenizer.eos_token}" for t in texts]
    enc = tokenizer(full, add_special_tokens=False, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE_INDEX))
    return EncodedSet(ids, mask, labels, None)


# --------------------------------------------------------------------------- the loop


def _language_model(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", model)
    lm = getattr(inner, "language_model", None)
    if lm is None:
        raise TypeError(
            f"model: expected a LLaVA-style model with .model.language_model, got {type(model).__name__}"
        )
    return lm


def _projector(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", model)
    proj = getattr(inner, "multi_modal_projector", None)
    if proj is None:
        raise TypeError(
            "model: expected a LLaVA-style model with .model.multi_modal_projector, got "
            f"{type(model).__name__}"
        )
    return proj


def _moca_modules(model: nn.Module) -> list[nn.Module]:
    from .moca import MoCa

    return [m for m in model.modules() if isinstance(m, MoCa)]


def _set_trainable(model: nn.Module, modules: Sequence[nn.Module]) -> None:
    model.requires_grad_(False)
    for m in modules:
        m.requires_grad_(True)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_steps(name: str, v: object, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v!r}")
    return v


def _train(
    model: nn.Module,
    groups: list[dict],
    data: EncodedSet,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: bool,
    desc: str,
) -> list[float]:
    """AdamW over ``groups`` for ``steps`` steps of ``batch_size`` rows drawn in epochs
    (a fresh permutation each pass), linear warm-up over the first 10% then cosine decay."""
    from tqdm.auto import tqdm

    if steps == 0 or not groups:
        return []
    device = _device_of(model)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98))
    base = [g["lr"] for g in opt.param_groups]
    warm = max(1, steps // 10)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)
    cursor, losses = 0, []
    model.train()
    try:
        for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            if cursor + batch_size > len(order):
                rest = order[cursor:]
                order = torch.cat([rest, torch.randperm(len(data), generator=gen)])
                cursor = 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            factor = (
                (step + 1) / warm
                if step < warm
                else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
            )
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * factor
            loss = model(**data.batch(idx, device)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.eval()
    return losses


# --------------------------------------------------------------------------- data of each stage


def encode_caption_pairs(processor: Any, pairs: Sequence[Any]) -> EncodedSet:
    """``user: <image>`` / ``assistant: caption`` for :class:`paperbricks.mir.data.CaptionPair`
    items (``.image``, ``.caption``)."""
    return encode_conversations(
        processor, [p.caption for p in pairs], images=[p.image for p in pairs]
    )


def encode_visual_questions(processor: Any, questions: Sequence[Any]) -> EncodedSet:
    """``user: <image> question`` / ``assistant: answer`` for
    :class:`paperbricks.mir.data.VisualQuestion` items, tagged with their ``kind``."""
    enc = encode_conversations(
        processor,
        [q.answer for q in questions],
        images=[q.image for q in questions],
        prompts=[q.question for q in questions],
    )
    enc.tags = [q.kind for q in questions]
    return enc


def _encoded(data: Any, encode: Any, processor: Any, name: str) -> EncodedSet:
    if isinstance(data, EncodedSet):
        return data
    if isinstance(data, str) or not isinstance(data, Sequence):
        raise TypeError(
            f"{name}: expected a sequence of examples or an EncodedSet, got {type(data).__name__}"
        )
    return encode(processor, data)


# --------------------------------------------------------------------------- stages


def warm_up_language_model_(
    model: nn.Module,
    processor: Any,
    texts: Sequence[str] = (),
    *,
    conversations: Sequence[tuple[str, str]] = (),
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Stage 1: train the language model (embeddings, decoder, LM head) on text only, in place.

    The vision tower and projector are frozen. Plain ``texts`` are ``<bos> text <eos>`` with
    every token labelled; ``conversations`` are one-turn chats (user, assistant) with the reply
    labelled (e.g. :func:`paperbricks.mir.data.text_conversations`: describe or answer about a
    scene given in words, so the model can later do the same from image tokens).

    Args:
        model: a LLaVA-style model (``model.model.language_model``, ``model.lm_head``).
        processor: its processor (tokenizer and chat template).
        texts: plain training texts (e.g. :func:`paperbricks.mir.data.stories`).
        conversations: ``(user, assistant)`` text pairs.
        steps: optimiser steps (>= 0). Default 200.
        batch_size: sequences per step. Default 32.
        lr: peak AdamW learning rate (warm-up then cosine). Default 3e-3.
        seed: seed of the batch order. Default 0.
        progress: show a tqdm bar. Default True.

    Returns:
        the training loss of every step.
    """
    _check_processor(processor)
    steps = _check_steps("steps", steps)
    batch_size = _check_steps("batch_size", batch_size, 1)
    parts = []
    if len(texts):
        parts.append(encode_texts(processor.tokenizer, texts))
    if len(conversations):
        users, replies = zip(*conversations, strict=True)
        parts.append(encode_conversations(processor, list(replies), prompts=list(users)))
    if not parts:
        raise ValueError("texts, conversations: expected at least one training text, got none")
    data = EncodedSet.concat(parts, processor.tokenizer.pad_token_id)
    lm = _language_model(model)
    head = model.get_output_embeddings()
    _set_trainable(model, [lm] + ([head] if head is not None else []))
    params = [p for p in model.parameters() if p.requires_grad]
    losses = _train(
        model,
        [{"params": params, "lr": float(lr), "weight_decay": 0.0}],
        data,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="LM warm-up",
    )
    model.requires_grad_(False)
    return losses


def pretrain_projector_(
    model: nn.Module,
    processor: Any,
    pairs: Sequence[Any] | EncodedSet,
    *,
    strategy: PretrainStrategy | None = None,
    batch_size: int = 32,
    epochs: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Stage 2: align the modalities by captioning, training the projector (+ strategy extras).

    Runs ``ceil(epochs · len(pairs) / batch_size)`` steps, so the number of pairs (the data
    scale) sets the budget, as in the paper's data-scale experiments. With ``strategy.moca``,
    MoCa is attached first (unless the model already has it) and trained with the projector.

    Args:
        model: a LLaVA-style model; modified in place.
        processor: its processor.
        pairs: :class:`paperbricks.mir.data.CaptionPair` items, or their
            :func:`encode_caption_pairs` encoding (to encode once and slice with ``take``); may
            be empty (no training; the projector stays at its initialisation).
        strategy: what to train; default ``PretrainStrategy()`` (projector only).
        batch_size: pairs per step. Default 32.
        epochs: passes over ``pairs`` (> 0). Default 1.0.
        seed: seed of the batch order (and of MoCa's initial draw when ``moca_std > 0``).
        progress: show a tqdm bar. Default True.

    Returns:
        the training loss of every step (empty when ``pairs`` is empty).

    Examples:
        >>> from paperbricks.mir.data import caption_pairs
        >>> from paperbricks.mir.tinyvlm import build_tiny_vlm
        >>> model, proc = build_tiny_vlm(seed=0)
        >>> losses = pretrain_projector_(model, proc, caption_pairs(8), batch_size=4, progress=False)
        >>> len(losses)
        2
    """
    from .moca import apply_moca_, moca_param_groups

    _check_processor(processor)
    strategy = PretrainStrategy() if strategy is None else strategy
    if not isinstance(strategy, PretrainStrategy):
        raise TypeError(f"strategy: expected a PretrainStrategy, got {type(strategy).__name__}")
    batch_size = _check_steps("batch_size", batch_size, 1)
    if not isinstance(epochs, int | float) or not epochs > 0:
        raise ValueError(f"epochs: expected a number > 0, got {epochs!r}")
    if strategy.moca and not _moca_modules(model):
        gen = torch.Generator(device=_device_of(model)).manual_seed(seed)
        apply_moca_(model, processor.image_token_id, std=strategy.moca_std, generator=gen)
    top = _top_layers(model, strategy.tune_top_layers)
    trainable = [_projector(model), *(_moca_modules(model) if strategy.moca else []), *top]
    if len(pairs) == 0:
        model.requires_grad_(False)
        return []
    data = _encoded(pairs, encode_caption_pairs, processor, "pairs")
    _set_trainable(model, trainable)
    top_ids = {id(p) for m in top for p in m.parameters()}
    groups = _split_group_lr(moca_param_groups(model, lr=strategy.lr), top_ids, strategy.lr / 10)
    losses = _train(
        model,
        groups,
        data,
        steps=math.ceil(epochs * len(data) / batch_size),
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc=f"pre-train {strategy.name} ({len(data)} pairs)",
    )
    model.requires_grad_(False)
    return losses


def _top_layers(model: nn.Module, k: int) -> list[nn.Module]:
    if k == 0:
        return []
    layers = list(getattr(_language_model(model), "layers", []))
    if k > len(layers):
        raise ValueError(
            f"strategy.tune_top_layers: the language model has {len(layers)} decoder layers, got {k}"
        )
    return layers[-k:]


def _split_group_lr(groups: list[dict], ids: set[int], lr: float) -> list[dict]:
    """Move the parameters whose id is in ``ids`` to their own group with learning rate ``lr``."""
    if not ids:
        return groups
    out = []
    for g in groups:
        keep = [p for p in g["params"] if id(p) not in ids]
        move = [p for p in g["params"] if id(p) in ids]
        if keep:
            out.append({**g, "params": keep})
        if move:
            out.append({**g, "params": move, "lr": lr})
    return out


def finetune_vqa_(
    model: nn.Module,
    processor: Any,
    questions: Sequence[Any] | EncodedSet,
    *,
    steps: int = 60,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Stage 3: supervised fine-tuning on visual questions (projector + LM + MoCa), in place.

    The vision tower stays frozen, as in LLaVA-1.5. MoCa parameters (if attached) are trained
    without weight decay (:func:`paperbricks.mir.moca.moca_param_groups`).

    Args:
        model: a LLaVA-style model.
        processor: its processor.
        questions: :class:`paperbricks.mir.data.VisualQuestion` items, or their
            :func:`encode_visual_questions` encoding (at least one).
        steps: optimiser steps (>= 0). Default 60.
        batch_size: examples per step. Default 32.
        lr: peak AdamW learning rate. Default 1e-3.
        seed: seed of the batch order. Default 0.
        progress: show a tqdm bar. Default True.

    Returns:
        the training loss of every step.
    """
    from .moca import moca_param_groups

    _check_processor(processor)
    steps = _check_steps("steps", steps)
    batch_size = _check_steps("batch_size", batch_size, 1)
    if len(questions) == 0:
        raise ValueError("questions: expected at least one example, got 0")
    data = _encoded(questions, encode_visual_questions, processor, "questions")
    head = model.get_output_embeddings()
    modules = [_projector(model), _language_model(model), *_moca_modules(model)]
    _set_trainable(model, modules + ([head] if head is not None else []))
    losses = _train(
        model,
        moca_param_groups(model, lr=lr),
        data,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="SFT",
    )
    model.requires_grad_(False)
    return losses


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def caption_loss(
    model: nn.Module, processor: Any, pairs: Sequence[Any] | EncodedSet, *, batch_size: int = 64
) -> float:
    """Mean next-token cross-entropy over the caption tokens of ``pairs`` (the pre-training loss).

    Args:
        model: a LLaVA-style model.
        processor: its processor.
        pairs: :class:`paperbricks.mir.data.CaptionPair` items or their encoding (at least one).
        batch_size: pairs per forward pass. Default 64.

    Returns:
        the token-averaged loss in nats (caption tokens and the closing EOS).
    """
    _check_processor(processor)
    if len(pairs) == 0:
        raise ValueError("pairs: expected at least one pair, got 0")
    data = _encoded(pairs, encode_caption_pairs, processor, "pairs")
    device = _device_of(model)
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(data), batch_size):
        b = data.batch(torch.arange(start, min(start + batch_size, len(data))), device)
        labels = b.pop("labels")
        logits = model(**b).logits.float()  # (B, T, V)
        target = labels[:, 1:]  # (B, T-1)
        nll = nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += float(nll)
        count += int((target != IGNORE_INDEX).sum())
    return total / count


@torch.no_grad()
def vqa_accuracy(
    model: nn.Module,
    processor: Any,
    questions: Sequence[Any] | EncodedSet,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy on visual questions: the argmax over the vocabulary at the first answer position.

    Args:
        model: a LLaVA-style model.
        processor: its processor.
        questions: :class:`paperbricks.mir.data.VisualQuestion` items or their encoding.
        batch_size: examples per forward pass. Default 64.

    Returns:
        ``{"accuracy": overall, "<kind>": accuracy per question kind, ...}`` (kinds only when
        the rows are tagged).
    """
    _check_processor(processor)
    if len(questions) == 0:
        raise ValueError("questions: expected at least one example, got 0")
    data = _encoded(questions, encode_visual_questions, processor, "questions")
    device = _device_of(model)
    correct = []
    model.eval()
    for start in range(0, len(data), batch_size):
        b = data.batch(torch.arange(start, min(start + batch_size, len(data))), device)
        labels = b.pop("labels")
        logits = model(**b).logits  # (B, T, V)
        first = (labels != IGNORE_INDEX).int().argmax(dim=1)  # (B,) first answer position
        rows = torch.arange(labels.shape[0], device=labels.device)
        pred = logits[rows, first - 1].argmax(dim=-1)  # (B,)
        correct.append((pred == labels[rows, first]).cpu())
    hits = torch.cat(correct).double()  # (N,)
    out = {"accuracy": float(hits.mean())}
    if data.tags is not None:
        for kind in sorted(set(data.tags)):
            sel = torch.tensor([k == kind for k in data.tags])
            out[kind] = float(hits[sel].mean())
    return out

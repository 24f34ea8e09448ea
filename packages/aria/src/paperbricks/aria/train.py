"""A small training loop for Aria models (fine-tune recipe of the official ``rhymes-ai/Aria``).

AdamW with optional linear warmup + cosine decay (the official ``recipes/config_full.yaml`` uses
lr 5e-6, weight decay 0.1, β2 0.95, warmup ratio 0.01, cosine), gradient accumulation and
gradient clipping. The router losses enter as the model's ``config.aux_loss_mode`` says:

- ``"autoscaler"`` (official): the model attaches ``aux_loss + z_loss`` to its hidden states
  through ``AuxLossAutoScaler``; this loop sets the auto-scaler's scale to ``1/grad_accum`` so the
  aux gradient is averaged over micro-batches exactly like the main loss (``loss/grad_accum``);
- ``"explicit"``: the returned loss already contains the aux terms and is divided by
  ``grad_accum`` like any loss;
- ``"none"``: no aux gradient.

Either way the accumulated gradient is ``mean_i ∇(LM_i + aux_i + z_i)`` (``"none"``: LM only) and
the log reports the LM loss, ``aux_loss`` and ``z_loss`` separately (the logged LM loss never
includes aux, as in the official trainer). What differs from the obvious baseline (HF ``Trainer``
on HF's Aria): the aux losses exist at all (HF computes none for Aria).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .losses import AuxLossAutoScaler, set_aux_loss_scale

__all__ = [
    "StepLog",
    "TrainConfig",
    "accumulate_gradients",
    "lr_multiplier",
    "make_optimizer",
    "train",
]

logger = logging.getLogger(__name__)

_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        steps: optimizer steps (default 100).
        lr: peak learning rate (default 1e-3; the official fine-tune uses 5e-6 at 25B scale).
        weight_decay: AdamW decoupled weight decay on matrices/embeddings only, not on norms,
            biases or other 1-D parameters (default 0.0; official 0.1).
        betas: AdamW betas (default (0.9, 0.95), the official β2).
        eps: AdamW epsilon (default 1e-8).
        grad_accum: micro-batches per optimizer step (default 1).
        schedule: ``"cosine"`` (after warmup, decay to ``min_lr_ratio·lr``) or ``"constant"``
            (default ``"cosine"``).
        warmup_ratio: fraction of ``steps`` with a linear warmup from 0 (default 0.0;
            official 0.01).
        min_lr_ratio: final learning rate as a fraction of ``lr`` for the cosine (default 0.0).
        max_grad_norm: clip the global gradient norm to this (None: no clipping; default 1.0).
        log_every: log (``logging.INFO``) every this many steps (default 10).
        progress: show a tqdm progress bar (default True).
    """

    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_accum: int = 1
    schedule: str = "cosine"
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "grad_accum", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a finite float > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two floats in [0, 1), got {self.betas!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule: expected one of {_SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: expected a float in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: expected a float in [0, 1], got {self.min_lr_ratio!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm: expected None or > 0, got {self.max_grad_norm!r}")


@dataclass
class StepLog:
    """One optimizer step: LM loss (mean over micro-batches, aux excluded), ``aux_loss`` and
    ``z_loss`` (means; NaN when the model reports none), learning rate and pre-clip grad norm."""

    step: int
    loss: float
    aux_loss: float
    z_loss: float
    lr: float
    grad_norm: float


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Learning-rate factor at optimizer step ``step`` (0-based).

    Warmup: ``(step + 1) / n_warm`` for ``step < n_warm = ceil(warmup_ratio · steps)``; then
    cosine ``m + (1 − m)·(1 + cos(π·p))/2`` with ``p = (step − n_warm)/(steps − n_warm)`` and
    ``m = min_lr_ratio``, or 1 for ``"constant"``.

    Examples:
        >>> cfg = TrainConfig(steps=10, warmup_ratio=0.2)
        >>> [round(lr_multiplier(s, cfg), 3) for s in (0, 1, 2, 6)]
        [0.5, 1.0, 1.0, 0.5]
    """
    n_warm = math.ceil(config.warmup_ratio * config.steps)
    if step < n_warm:
        return (step + 1) / n_warm
    if config.schedule == "constant":
        return 1.0
    p = (step - n_warm) / max(1, config.steps - n_warm)
    m = config.min_lr_ratio
    return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay only on parameters with >= 2 dims."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.lr, betas=config.betas, eps=config.eps
    )


def _aux_mode(model: nn.Module) -> str:
    cfg = model.config
    cfg = getattr(cfg, "text_config", cfg)
    return getattr(cfg, "aux_loss_mode", "none")


def _scalar(t: torch.Tensor | None) -> float:
    return float(t.detach()) if t is not None else float("nan")


def accumulate_gradients(
    model: nn.Module, micro_batches: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """Forward and backward every micro-batch, accumulating ``mean_i ∇ loss_i`` into ``.grad``.

    Each micro-batch is a mapping of keyword arguments for ``model(**batch)`` and must contain
    ``labels``. During the call the auto-scaler's scale is ``1/len(micro_batches)`` (restored
    afterwards), so aux gradients are averaged like the LM loss.

    Returns:
        ``{"loss": mean LM loss (aux excluded), "aux_loss": mean, "z_loss": mean}``.
    """
    if not isinstance(micro_batches, Sequence) or len(micro_batches) == 0:
        raise ValueError(
            f"micro_batches: expected a non-empty sequence of dicts, got {micro_batches!r:.80}"
        )
    n = len(micro_batches)
    mode = _aux_mode(model)
    old_scale = AuxLossAutoScaler.main_loss_backward_scale
    sums = {"loss": 0.0, "aux_loss": 0.0, "z_loss": 0.0}
    try:
        set_aux_loss_scale(1.0 / n)
        for i, batch in enumerate(micro_batches):
            if not isinstance(batch, Mapping) or "labels" not in batch:
                raise ValueError(
                    f"micro_batches[{i}]: expected a mapping with 'labels' (and input_ids or "
                    f"inputs_embeds), got {type(batch).__name__}"
                )
            out = model(**batch)
            if out.loss is None:
                raise ValueError(f"micro_batches[{i}]: the model returned no loss")
            (out.loss / n).backward()
            aux, z = _scalar(out.aux_loss), _scalar(out.z_loss)
            main = _scalar(out.loss)
            if mode == "explicit":
                main -= (0.0 if math.isnan(aux) else aux) + (0.0 if math.isnan(z) else z)
            sums["loss"] += main / n
            sums["aux_loss"] += aux / n
            sums["z_loss"] += z / n
    finally:
        set_aux_loss_scale(old_scale)
    return sums


def train(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    config: TrainConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    callback: Callable[[StepLog], None] | None = None,
) -> list[StepLog]:
    """Train ``model`` for ``config.steps`` optimizer steps and return one :class:`StepLog` each.

    Args:
        model: an Aria model (or any HF-style model whose forward takes ``labels`` and returns
            ``loss`` and, optionally, ``aux_loss``/``z_loss``); put in training mode here.
        batches: micro-batches (mappings of keyword arguments, with ``labels``); a ``Sequence``
            is cycled, any other iterable is consumed and training stops when it runs out
            (``grad_accum`` micro-batches per step).
        config: :class:`TrainConfig` (default ``TrainConfig()``).
        optimizer: default :func:`make_optimizer`; its learning rate is driven by the schedule.
        callback: called with each step's log.

    Returns:
        The per-step logs.

    Examples:
        >>> from paperbricks.aria.models.configuration_aria import AriaTextConfig
        >>> from paperbricks.aria.models.modeling_aria_text import AriaTextForCausalLM
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = AriaTextForCausalLM(AriaTextConfig(
        ...     vocab_size=32, hidden_size=16, intermediate_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, moe_num_experts=4, moe_topk=2))
        >>> ids = torch.randint(0, 32, (2, 8))
        >>> logs = train(model, [{"input_ids": ids, "labels": ids}],
        ...              TrainConfig(steps=3, lr=1e-2, progress=False))
        >>> len(logs), logs[-1].loss < logs[0].loss
        (3, True)
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected TrainConfig, got {type(config).__name__}")
    if optimizer is None:
        optimizer = make_optimizer(model, config)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    if isinstance(batches, Sequence) and len(batches) == 0:
        raise ValueError("batches: expected at least one micro-batch, got an empty sequence")
    stream = itertools.cycle(batches) if isinstance(batches, Sequence) else iter(batches)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    logs: list[StepLog] = []
    bar = tqdm(range(config.steps), disable=not config.progress, desc="train", leave=False)
    for step in bar:
        micro = list(itertools.islice(stream, config.grad_accum))
        if len(micro) < config.grad_accum:
            logger.info("batches ran out after %d steps", step)
            break
        mult = lr_multiplier(step, config)
        for g, lr0 in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr0 * mult
        optimizer.zero_grad(set_to_none=True)
        stats = accumulate_gradients(model, micro)
        grads = [p.grad for p in params if p.grad is not None]
        if config.max_grad_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        elif grads:
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        else:
            norm = 0.0
        optimizer.step()
        log = StepLog(
            step, stats["loss"], stats["aux_loss"], stats["z_loss"], base_lrs[0] * mult, norm
        )
        logs.append(log)
        bar.set_postfix(loss=f"{log.loss:.4f}", aux=f"{log.aux_loss:.2e}", z=f"{log.z_loss:.2e}")
        if step % config.log_every == 0 or step == config.steps - 1:
            logger.info(
                "step %d  loss %.4f  aux %.3e  z %.3e  lr %.3e  grad_norm %.3f",
                step,
                log.loss,
                log.aux_loss,
                log.z_loss,
                log.lr,
                log.grad_norm,
            )
        if callback is not None:
            callback(log)
    return logs

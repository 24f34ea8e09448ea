"""Block-wise fine-tuning of PrefixQuant's quantization parameters and weights (arXiv:2410.05265 §3, spec §2.6).

Per decoder block, in order: the target is the float block output for float inputs; the input is
the output of the already-quantized previous blocks (both go through the prefix KV cache, so prefix
positions never enter the loss). Trainable: every quantizer scale (and dynamic clip bound) at
``quant_lr`` and the linear weights/biases at ``weight_lr``; AdamW with weight decay 0 and a
cosine schedule down to lr/10. Loss ``mse`` or ``skip_mse`` (the 3 tokens of largest mean
``|target|`` per sequence are masked). After a block is trained its weights are replaced by their
fake-quantized values in place (``Q(Q(W)) = Q(W)``, so the weight quantizer stays valid) and the
next block's inputs are refreshed.

Differences from the official ``block_ap.py``: ``clip_grad`` is honoured (parsed but never applied
upstream); the block is trained in float32 (cast back afterwards) with bf16 autocast on CUDA only,
instead of fp16 AMP with a loss scaler; scales are kept >= 1e-8 after every step.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .calibrate import capture_block_inputs, quantizers_enabled, run_block
from .config import PrefixQuantConfig
from .modules import QuantLinear
from .quantizers import EPS, ActQuantizer, WeightQuantizer

__all__ = ["SKIP_TOKENS", "block_loss", "finetune_", "quantize_weights_inplace_"]

logger = logging.getLogger(__name__)

SKIP_TOKENS = 3  # skip_mse masks this many tokens per sequence


def block_loss(out: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """MSE between ``out`` and ``target`` ``(B, T, C)``; ``skip_mse`` drops the top-3 tokens by mean |target|.

    Examples:
        >>> t = torch.zeros(1, 4, 2); t[0, 0] = 100.0
        >>> float(block_loss(torch.zeros(1, 4, 2), t, "skip_mse"))
        0.0
    """
    err = (out.float() - target.float()).square().mean(dim=-1)  # (B, T)
    if kind == "mse":
        return err.mean()
    if kind != "skip_mse":
        raise ValueError(f"kind: expected 'mse' or 'skip_mse', got {kind!r}")
    k = min(SKIP_TOKENS, err.shape[1] - 1)
    keep = torch.ones_like(err, dtype=torch.bool)
    if k > 0:
        top = target.float().abs().mean(dim=-1).topk(k, dim=1).indices  # (B, k)
        keep.scatter_(1, top, False)
    return err[keep].mean()


@torch.no_grad()
def quantize_weights_inplace_(layer: nn.Module) -> int:
    """Replace every QuantLinear weight of ``layer`` by its fake-quantized value; returns the count."""
    n = 0
    for m in layer.modules():
        if (
            isinstance(m, QuantLinear)
            and m.weight_quantizer is not None
            and m.weight_quantizer.enabled
        ):
            m.weight.copy_(m.weight_quantizer(m.weight).to(m.weight.dtype))
            n += 1
    return n


def _trainable(layer: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    quant, weights = [], []
    for m in layer.modules():
        if isinstance(m, ActQuantizer) and m.enabled:
            quant.append(m.clip if m.mode == "dynamic" else m.scale)
        elif isinstance(m, WeightQuantizer) and m.enabled:
            quant.append(m.scale)
        if isinstance(m, QuantLinear):
            weights.append(m.weight)
            if m.bias is not None:
                weights.append(m.bias)
    return quant, weights


def _eval_mse(layer: nn.Module, q_in: list, kwargs: list, fp_out: list) -> float:
    with torch.no_grad(), quantizers_enabled(layer, True):
        tot = sum(
            float(block_loss(run_block(layer, h, kw), ref))
            for h, kw, ref in zip(q_in, kwargs, fp_out, strict=True)
        )
    return tot / len(fp_out)


def finetune_(
    model: nn.Module,
    train_ids: torch.Tensor,
    config: PrefixQuantConfig,
    *,
    prefix: Any = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Fine-tune every block of a calibrated PrefixQuant model, in place.

    Args:
        model: causal LM after ``insert_quantizers_`` and ``calibrate_`` (and usually ``mse_init_``).
        train_ids: ``(N, T)`` token windows (official: 512 × 1024).
        config: uses ``epochs``, ``quant_lr``, ``weight_lr``, ``loss``, ``clip_grad``,
            ``train_batch_size`` and ``seed`` (batch order).
        prefix: None, ``PrefixSpec`` or ``PrefixedCausalLM``.
        progress: tqdm bars (blocks and epochs).

    Returns:
        per block ``{"layer": i, "before": mse, "after": mse}``: the block-output MSE (against the
        float target, on the training inputs) before and after training.

    Examples:
        >>> # quantize_(model, PrefixQuantConfig.from_preset("W4A4KV4", epochs=20), ...) calls it
        >>> # finetune_(model, ids, config)  # doctest: +SKIP
    """
    from .sites import resolve_sites

    if not isinstance(config, PrefixQuantConfig):
        raise TypeError(f"config: expected a PrefixQuantConfig, got {type(config).__name__}")
    if config.epochs < 1:
        raise ValueError(f"config.epochs: fine-tuning needs epochs >= 1, got {config.epochs}")
    sites = resolve_sites(model)
    inputs = capture_block_inputs(
        model, sites.layers[0].layer, train_ids, prefix=prefix, batch_size=config.train_batch_size
    )
    fp_in, kwargs = inputs.hidden, inputs.kwargs
    q_in = [h.clone() for h in fp_in]
    nb = len(fp_in)
    gen = torch.Generator().manual_seed(config.seed)
    report: list[dict[str, float]] = []
    for ls in tqdm(sites.layers, desc="finetune blocks", disable=not progress):
        layer = ls.layer
        dtype = next(layer.parameters()).dtype
        device = next(layer.parameters()).device
        with torch.no_grad(), quantizers_enabled(layer, False):
            fp_out = [run_block(layer, h, kw) for h, kw in zip(fp_in, kwargs, strict=True)]
        layer.float()
        q_in32 = [h.float() for h in q_in]
        fp_out32 = [h.float() for h in fp_out]
        quant_p, weight_p = _trainable(layer)
        saved = [(p, p.requires_grad) for p in layer.parameters()]
        for p in layer.parameters():
            p.requires_grad_(False)
        for p in quant_p + weight_p:
            p.requires_grad_(True)
        groups = [{"params": quant_p, "lr": config.quant_lr}]
        if config.weight_lr > 0 and weight_p:
            groups.append({"params": weight_p, "lr": config.weight_lr})
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        steps = config.epochs * nb
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t, n=steps: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(t, n) / n))
        )
        before = _eval_mse(layer, q_in32, kwargs, fp_out32)
        all_p = [p for g in groups for p in g["params"]]
        with quantizers_enabled(layer, True):
            for _ in tqdm(
                range(config.epochs), desc=f"block {ls.index}", disable=not progress, leave=False
            ):
                for b in torch.randperm(nb, generator=gen).tolist():
                    with torch.autocast(
                        "cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"
                    ):
                        out = run_block(layer, q_in32[b], kwargs[b])
                    loss = block_loss(out, fp_out32[b], config.loss)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"finetune_: non-finite loss in block {ls.index}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.clip_grad is not None:
                        torch.nn.utils.clip_grad_norm_(all_p, config.clip_grad)
                    opt.step()
                    sched.step()
                    with torch.no_grad():
                        for p in quant_p:
                            p.clamp_(min=EPS)
        after = _eval_mse(layer, q_in32, kwargs, fp_out32)
        for p, flag in saved:
            p.requires_grad_(flag)
        quantize_weights_inplace_(layer)
        layer.to(dtype)
        with torch.no_grad(), quantizers_enabled(layer, True):
            q_out = [run_block(layer, h, kw) for h, kw in zip(q_in, kwargs, strict=True)]
        report.append({"layer": ls.index, "before": before, "after": after})
        logger.info("finetune layer %d: block mse %.3e -> %.3e", ls.index, before, after)
        fp_in, q_in = fp_out, q_out
    return report

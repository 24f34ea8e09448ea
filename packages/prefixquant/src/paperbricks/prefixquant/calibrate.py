"""Static calibration of PrefixQuant's activation/KV quantizers, prefix positions excluded (arXiv:2410.05265 §3).

The official code hooks the Linear / RMSNorm / QK-wrapper modules of the full-precision model and
keeps a 0.99/0.01 EMA of per-batch ``|x|`` maxima. Here every :class:`ActQuantizer` records its own
statistic while ``calibrating`` is set (``stat`` = ``ema_compat`` | ``max`` | ``percentile``) and the
forward passes run through the prefix KV cache (:class:`~paperbricks.prefixquant.prefix.PrefixedCausalLM`):
the prefix lives only in the cache, so the hidden states seen by the norm/linear quantizers contain
the real tokens only, and the attention function hands the K quantizer the non-prefix keys only.
Without a prefix every position counts.

Also here: the block-input capture used by MSE initialisation and block fine-tuning
(:func:`capture_block_inputs`, :func:`run_block`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .modules import QuantLinear
from .quantizers import ActQuantizer

__all__ = [
    "BlockInputs",
    "activation_quantizers",
    "calibrate_",
    "capture_block_inputs",
    "make_runner",
    "quantizers_enabled",
    "run_block",
    "set_calibrating",
    "weight_quantizers",
]

logger = logging.getLogger(__name__)


def activation_quantizers(module: nn.Module) -> Iterator[tuple[str, ActQuantizer]]:
    """Every :class:`ActQuantizer` (incl. K/V quantizers) under ``module``, with its name."""
    for name, m in module.named_modules():
        if isinstance(m, ActQuantizer):
            yield name, m


def weight_quantizers(module: nn.Module) -> Iterator[tuple[str, QuantLinear]]:
    """Every :class:`QuantLinear` with a weight quantizer under ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, QuantLinear) and m.weight_quantizer is not None:
            yield name, m


def set_calibrating(module: nn.Module, flag: bool) -> None:
    """Switch every activation quantizer under ``module`` to (or out of) statistics mode."""
    for _, q in activation_quantizers(module):
        q.calibrating = flag


@contextmanager
def quantizers_enabled(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily enable/disable every activation and weight quantizer under ``module``."""
    saved: list[tuple[Any, bool]] = []
    for _, q in activation_quantizers(module):
        saved.append((q, q.enabled))
        q.enabled = enabled
    for _, lin in weight_quantizers(module):
        wq = lin.weight_quantizer
        saved.append((wq, wq.enabled))
        wq.enabled = enabled
    try:
        yield
    finally:
        for q, flag in saved:
            q.enabled = flag


def make_runner(model: nn.Module, prefix: Any = None) -> Callable[[torch.Tensor], Any]:
    """A callable ``ids (B, T) -> model output`` that goes through the prefix cache when given.

    Args:
        model: the HF causal LM (or a ``PrefixedCausalLM`` already).
        prefix: None (plain model, every position counts), a ``PrefixedCausalLM`` wrapping
            ``model``, or a ``PrefixSpec`` (a ``PrefixedCausalLM`` is built from it).
    """
    if prefix is None and not hasattr(model, "prefix_cache"):
        return lambda ids: model(input_ids=ids, use_cache=False)
    from .prefix import PrefixedCausalLM, PrefixSpec  # imported only when a prefix is involved

    if isinstance(model, PrefixedCausalLM):
        runner: nn.Module = model
    elif isinstance(prefix, PrefixedCausalLM):
        runner = prefix
    elif isinstance(prefix, PrefixSpec):
        runner = PrefixedCausalLM(model, prefix)
    elif prefix is None:
        runner = model
    else:
        raise TypeError(
            f"prefix: expected None, a PrefixSpec or a PrefixedCausalLM, got {type(prefix).__name__}"
        )
    if runner is model:
        return lambda ids: model(input_ids=ids, use_cache=False)
    return lambda ids: runner(input_ids=ids)


def _batches(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [ids[i : i + batch_size] for i in range(0, ids.shape[0], batch_size)]


def _check_ids(ids: object) -> torch.Tensor:
    if (
        not isinstance(ids, torch.Tensor)
        or ids.dim() != 2
        or ids.dtype not in (torch.long, torch.int)
    ):
        raise ValueError(
            f"calibration_ids: expected an integer tensor (N, T), got "
            f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}"
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(
            f"calibration_ids: expected at least one non-empty window, got {tuple(ids.shape)}"
        )
    return ids.long()


@torch.no_grad()
def calibrate_(
    model: nn.Module,
    calibration_ids: torch.Tensor,
    *,
    prefix: Any = None,
    batch_size: int = 1,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Collect static statistics for every quantizer of ``model`` and set the initial scales.

    Runs the float model (quantizers in statistics mode: identity) over ``calibration_ids`` in
    batches, each batch folded into every quantizer's ``amax`` by its ``stat`` rule, then sets
    ``scale = 2·amax / (2^b − 1)``. Prefix positions never enter: the forward goes through the
    prefix KV cache when ``prefix`` is given.

    Args:
        model: a causal LM with quantizers inserted (``insert_quantizers_``).
        calibration_ids: ``(N, T)`` token ids (calibration windows, no prefix).
        prefix: None, a ``PrefixSpec`` or a ``PrefixedCausalLM`` (see :func:`make_runner`).
        batch_size: windows per forward (each batch is one statistics update).
        progress: tqdm bar.

    Returns:
        ``{quantizer name: scale}`` for the static quantizers.

    Examples:
        >>> # see quantize_ for the full pipeline; calibrate_ alone:
        >>> # calibrate_(model, ids, prefix=prefixed)  # doctest: +SKIP
    """
    ids = _check_ids(calibration_ids)
    qs = list(activation_quantizers(model))
    if not qs:
        raise ValueError("model: has no ActQuantizer to calibrate (run insert_quantizers_ first)")
    for _, q in qs:
        if q.mode == "static":
            q.amax.zero_()
            q.num_batches.zero_()
    runner = make_runner(model, prefix)
    device = next(model.parameters()).device
    set_calibrating(model, True)
    try:
        with quantizers_enabled(model, True):
            for _, lin in weight_quantizers(model):
                lin.weight_quantizer.enabled = False  # float weights during calibration
            for batch in tqdm(_batches(ids, batch_size), desc="calibrate", disable=not progress):
                runner(batch.to(device))
    finally:
        set_calibrating(model, False)
    scales = {}
    for name, q in qs:
        if q.mode == "static":
            if int(q.num_batches) == 0:
                raise RuntimeError(f"calibrate_: quantizer {name} saw no data during calibration")
            scales[name] = q.init_scale().clone()
    logger.info("calibrated %d static quantizers over %d windows", len(scales), ids.shape[0])
    return scales


# ----------------------------------------------------------------------------- block inputs


class _StopForward(Exception):
    pass


@dataclass
class BlockInputs:
    """The inputs of one decoder layer for a list of batches.

    Attributes:
        hidden: per batch, the hidden states ``(b, T, C)`` entering the layer.
        kwargs: per batch, the keyword arguments the decoder passed to the layer (attention mask,
            position ids/embeddings, and the prefix cache, which :func:`run_block` copies per call).
    """

    hidden: list[torch.Tensor] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    layer: nn.Module,
    calibration_ids: torch.Tensor,
    *,
    prefix: Any = None,
    batch_size: int = 1,
) -> BlockInputs:
    """Run the model up to ``layer`` (usually the first decoder layer) and record its inputs.

    The forward stops at ``layer``; nothing after it runs. The cache in the kwargs (the prefix
    KV cache, or None) is deep-copied so later calls start from the prefix only.
    """
    ids = _check_ids(calibration_ids)
    runner = make_runner(model, prefix)
    device = next(model.parameters()).device
    out = BlockInputs()

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        for key in ("cache", "past_key_values", "past_key_value"):
            if kw.get(key) is not None:
                kw[key] = copy.deepcopy(kw[key])
        out.hidden.append(hidden.detach())
        out.kwargs.append(kw)
        raise _StopForward

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in _batches(ids, batch_size):
            with suppress(_StopForward):
                runner(batch.to(device))
    finally:
        handle.remove()
    if len(out.hidden) != len(_batches(ids, batch_size)):
        raise RuntimeError("capture_block_inputs: the layer was not reached by every batch")
    return out


def run_block(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """Call one decoder layer on ``hidden`` with the captured ``kwargs`` (cache deep-copied)."""
    kw = dict(kwargs)
    for key in ("cache", "past_key_values", "past_key_value"):
        if kw.get(key) is not None:
            kw[key] = copy.deepcopy(kw[key])
    out = layer(hidden, **kw)
    return out[0] if isinstance(out, tuple) else out

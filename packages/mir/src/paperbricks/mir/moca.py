"""MoCa, modality calibration (arXiv 2410.07167, §5): a learnable affine map on vision tokens only.

Inside every decoder layer of the language model, after the MLP residual add,

    h ← (1 − m) ⊙ h + m ⊙ (γ ⊙ h + β),     m = 1 at vision (image-token) positions, else 0,

with per-channel ``γ ~ N(1, std)``, ``β ~ N(0, std)`` (``std = 0`` gives the identity at
initialisation, as the released ``pre_sft_moca.sh`` does; the official default is 0.02). It is
computed in float32 and cast back, and skipped when the sequence length is 1 (cached decoding,
where no image token is in the step).

What differs from the official code (a fork of transformers 4.37 with ``LlamaMoCa`` inside
``LlamaDecoderLayer``): no model fork. :func:`apply_moca_` attaches one :class:`MoCa` per
decoder layer as a submodule (so it is saved, moved and trained with the model) and applies it
through a forward hook on the layer's output; the vision mask comes from a forward pre-hook on
the model that reads ``input_ids == image_token_id``. The official code registers ``LlamaMoCa``
in ``ALL_LAYERNORM_LAYERS`` so the trainer excludes it from weight decay; here
:func:`moca_param_groups` builds the optimizer groups that way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["MoCa", "MocaHandle", "apply_moca_", "moca_param_groups", "remove_moca_"]

logger = logging.getLogger(__name__)

MOCA_ATTR = "moca"


class MoCa(nn.Module):
    """Per-channel scale and shift applied to vision positions only.

    Args:
        hidden_size: channel count ``D`` (positive int).
        std: initial spread; ``γ ~ N(1, std)``, ``β ~ N(0, std)``. Default 0.0 (identity).
        dtype: parameter dtype; default float32 (the map is computed in float32 regardless).
        device: parameter device; default CPU.
        generator: ``torch.Generator`` for the initial draw when ``std > 0`` (must live on
            ``device``); default a fresh generator seeded with 0, so initialisation never
            touches the global RNG.

    Shapes:
        ``forward(hidden_states (B, T, D), vision_mask (B, T) bool) -> (B, T, D)`` in the
        input's dtype.

    Examples:
        >>> import torch
        >>> moca = MoCa(4)
        >>> h = torch.randn(1, 3, 4)
        >>> bool(torch.equal(moca(h, torch.tensor([[True, False, True]])), h))
        True
    """

    def __init__(
        self,
        hidden_size: int,
        std: float = 0.0,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
            raise ValueError(f"hidden_size: expected a positive int, got {hidden_size!r}")
        if not isinstance(std, (int, float)) or isinstance(std, bool) or not std >= 0:
            raise ValueError(f"std: expected a non-negative number, got {std!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
        self.hidden_size = hidden_size
        self.std = float(std)
        self.gamma = nn.Parameter(torch.ones(hidden_size, dtype=dtype, device=device))
        self.beta = nn.Parameter(torch.zeros(hidden_size, dtype=dtype, device=device))
        if std > 0:
            if generator is None:
                generator = torch.Generator(device=self.gamma.device).manual_seed(0)
            with torch.no_grad():
                shape = (2, hidden_size)
                noise = torch.randn(shape, generator=generator, device=self.gamma.device)
                self.gamma.add_(std * noise[0].to(dtype))
                self.beta.add_(std * noise[1].to(dtype))

    def forward(self, hidden_states: torch.Tensor, vision_mask: torch.Tensor) -> torch.Tensor:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden_states: expected (B, T, {self.hidden_size}), got "
                f"{tuple(hidden_states.shape)}"
            )
        if hidden_states.shape[1] == 1:  # one decode step: no image token in it
            return hidden_states
        if vision_mask.dtype != torch.bool or tuple(vision_mask.shape) != tuple(
            hidden_states.shape[:2]
        ):
            raise ValueError(
                f"vision_mask: expected a bool tensor of shape {tuple(hidden_states.shape[:2])}, "
                f"got {vision_mask.dtype} {tuple(vision_mask.shape)}"
            )
        h = hidden_states.float()  # (B, T, D)
        calibrated = self.gamma.float() * h + self.beta.float()  # (B, T, D)
        out = torch.where(vision_mask.to(h.device).unsqueeze(-1), calibrated, h)
        return out.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, std={self.std}"


@dataclass
class MocaHandle:
    """What :func:`apply_moca_` attached: the MoCa modules (one per layer) and the hook handles.

    Each forward pass of the model takes its vision mask from ``input_ids == image_token_id``
    (a pre-hook on the model). For calls without ``input_ids`` (``inputs_embeds`` only), give the
    mask with :meth:`set_vision_mask`; it is used only by such calls, so a stale mask is never
    applied to a call that has ids. Without either, MoCa is skipped for that call.
    :meth:`remove` detaches hooks and modules.
    """

    modules: list[MoCa]
    layers: list[nn.Module]
    handles: list = field(default_factory=list)
    image_token_id: int | None = None
    #: user-given ``(B, T)`` mask for calls without ``input_ids``
    vision_mask: torch.Tensor | None = None
    #: the mask of the current call (from its ``input_ids``), else ``vision_mask``
    current_mask: torch.Tensor | None = None

    def set_vision_mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool):
            raise TypeError(f"mask: expected a (B, T) bool tensor or None, got {mask!r}")
        self.vision_mask = mask

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for layer in self.layers:
            if isinstance(getattr(layer, MOCA_ATTR, None), MoCa):
                delattr(layer, MOCA_ATTR)


def _layer_hook(handle: MocaHandle, moca: MoCa) -> Callable:
    def hook(module, args, output):
        hs = output[0] if isinstance(output, tuple) else output
        if not isinstance(hs, torch.Tensor) or hs.dim() != 3 or hs.shape[1] == 1:
            return None
        mask = handle.current_mask
        if mask is None:
            return None
        if tuple(mask.shape) != tuple(hs.shape[:2]):
            raise ValueError(
                f"MoCa: the vision mask has shape {tuple(mask.shape)} but the decoder layer "
                f"output is {tuple(hs.shape)}; set the mask with set_vision_mask() for this call"
            )
        new = moca(hs, mask)
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    return hook


def apply_moca_(
    model: nn.Module,
    image_token_id: int | None = None,
    std: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    layers: list[nn.Module] | None = None,
) -> MocaHandle:
    """Attach a trainable :class:`MoCa` after every decoder layer of ``model``'s language model.

    Args:
        model: a HF vision-language model (LLaVA family, Mistral3, Aria, ...) or any module whose
            decoder layers :func:`paperbricks.mir.accumulator.find_decoder_layers` finds.
        image_token_id: token id of the (expanded) image placeholder; default
            ``model.config.image_token_id`` (or ``image_token_index``).
        std: initial spread of ``γ``, ``β`` (0.0 = identity at initialisation, the released
            script; 0.02 = the official default).
        generator: RNG for the initial draw when ``std > 0``; default seeded with 0.
        layers: the decoder layers to use; default found automatically.

    Returns:
        a :class:`MocaHandle`; the modules are registered as ``layer.moca`` so they appear in
        ``model.parameters()`` with ``requires_grad=True``.

    Examples:
        >>> from paperbricks.core_kernels.testing import tiny_llama_config
        >>> from transformers import LlamaForCausalLM
        >>> lm = LlamaForCausalLM(tiny_llama_config())
        >>> handle = apply_moca_(lm, image_token_id=5)
        >>> len(handle.modules) == lm.config.num_hidden_layers
        True
    """
    from .accumulator import find_decoder_layers
    from .masks import resolve_image_token_id

    token = resolve_image_token_id(model, image_token_id)
    if layers is None:
        layers = find_decoder_layers(model)
    for i, layer in enumerate(layers):
        if isinstance(getattr(layer, MOCA_ATTR, None), MoCa):
            raise ValueError(f"model: decoder layer {i} already has a MoCa module")
    handle = MocaHandle(modules=[], layers=list(layers), image_token_id=token)
    for layer in layers:
        ref = next(layer.parameters(), None)
        device = ref.device if ref is not None else None
        hidden = _hidden_size(model, layer)
        moca = MoCa(hidden, std, device=device, generator=generator)
        layer.add_module(MOCA_ATTR, moca)
        handle.modules.append(moca)
        # prepend: run before any hook registered earlier (transformers' output_hidden_states
        # capture, a MIRAccumulator), so they see the layer output *with* MoCa, as in the
        # official code where MoCa sits inside the decoder layer.
        hook = _layer_hook(handle, moca)
        handle.handles.append(layer.register_forward_hook(hook, prepend=True))

    def pre_hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if (
            ids is None
            and args
            and isinstance(args[0], torch.Tensor)
            and not args[0].is_floating_point()
        ):
            ids = args[0]
        handle.current_mask = (ids == token) if ids is not None else handle.vision_mask
        return None

    handle.handles.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
    logger.info("attached MoCa (std=%s) to %d decoder layers", std, len(layers))
    return handle


def remove_moca_(handle: MocaHandle) -> None:
    """Detach what :func:`apply_moca_` attached (hooks and ``layer.moca`` modules)."""
    handle.remove()


def _hidden_size(model: nn.Module, layer: nn.Module) -> int:
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        size = getattr(cfg, "hidden_size", None)
        if isinstance(size, int):
            return size
    for mod in layer.modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() == 1:
            return int(w.shape[0])
    raise ValueError("model: could not determine the hidden size (no config.hidden_size)")


def moca_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    *,
    moca_lr: float | None = None,
) -> list[dict]:
    """Optimizer parameter groups with MoCa's ``γ``, ``β`` excluded from weight decay.

    Args:
        model: a model after :func:`apply_moca_`.
        lr: learning rate of every trainable parameter.
        weight_decay: decay of the non-MoCa trainable parameters; default 0.0.
        moca_lr: learning rate for MoCa parameters; default ``lr``.

    Returns:
        ``[{"params": others, "lr": lr, "weight_decay": weight_decay},
        {"params": moca, "lr": moca_lr, "weight_decay": 0.0}]`` (empty groups dropped), with
        only parameters that require grad.

    Examples:
        >>> import torch
        >>> groups = moca_param_groups(torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.1)
        >>> [len(g["params"]) for g in groups]
        [2]
    """
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected a non-negative number, got {weight_decay!r}")
    moca_ids = {id(p) for m in model.modules() if isinstance(m, MoCa) for p in m.parameters()}
    moca_params, others = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (moca_params if id(p) in moca_ids else others).append(p)
    groups = []
    if others:
        groups.append({"params": others, "lr": float(lr), "weight_decay": float(weight_decay)})
    if moca_params:
        groups.append(
            {
                "params": moca_params,
                "lr": float(lr if moca_lr is None else moca_lr),
                "weight_decay": 0.0,
            }
        )
    return groups

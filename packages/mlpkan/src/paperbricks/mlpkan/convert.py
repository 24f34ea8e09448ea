"""Load official MLP-KAN (``DLYuanGod/MLP-KAN``) vision checkpoints into our HF model.

The official ``VisionKAN`` is a timm ``VisionTransformer`` whose blocks are ``kanBlock``; its
state dict (inside ``{"model": ...}`` for DeiT's ``main.py`` checkpoints) holds::

    cls_token (1, 1, d)            pos_embed (1, P + 1, d)
    patch_embed.proj.{weight, bias}
    blocks.{i}.norm1.{weight, bias}                blocks.{i}.norm2.{weight, bias}
    blocks.{i}.attn.qkv.weight (3d, d)  [no bias: kanBlock drops qkv_bias]
    blocks.{i}.attn.proj.{weight, bias}
    blocks.{i}.mlp.fc1.* / blocks.{i}.mlp.fc2.*    [the unused dense MLP, spec §3: dropped]
    blocks.{i}.kan.gate.weight (E, d)              [router, no bias]
    blocks.{i}.kan.experts.{e}.fc1.{weight (h, d), bias}, .fc2.{weight (d, h), bias}   e < E/2
    blocks.{i}.kan.experts.{e}.layers.{l}.{layernorm.weight, layernorm.bias, rbf.grid,
        spline_linear.weight}                                                          e >= E/2
    norm.{weight, bias}            head.{weight, bias}

:func:`convert_official_state_dict` maps it to :class:`~paperbricks.mlpkan.models.
MLPKANForImageClassification`'s names: everything but the head under ``vit.``, ``kan`` →
``ffn``, the MLP experts stacked into ``mlp_w1 (E_mlp, d, h)`` / ``mlp_b1`` / ``mlp_w2 (E_mlp, h,
d)`` / ``mlp_b2`` (``nn.Linear`` weights transposed to the grouped-GEMM (in, out) order), the KAN
experts renumbered from 0 under ``kan_experts`` (their inner names are the official FasterKAN
ones), and ``blocks.*.mlp.*`` dropped. :func:`config_from_official_state_dict` infers the config
(``official_compat=True``); :func:`load_official_checkpoint` does both and loads strictly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .models import MLPKANConfig, MLPKANForImageClassification

__all__ = [
    "config_from_official_state_dict",
    "convert_official_state_dict",
    "load_official_checkpoint",
]

logger = logging.getLogger(__name__)

_EXPERT = re.compile(r"^blocks\.(\d+)\.kan\.experts\.(\d+)\.(.+)$")
_MLP_PARTS = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def _unwrap(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict: expected a mapping of names to tensors, got {type(state_dict)}"
        )
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]  # DeiT main.py checkpoint {"model", "optimizer", ...}
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state_dict[{k!r}]: expected a tensor, got {type(v).__name__}")
        out[k.removeprefix("module.")] = v  # DDP-wrapped checkpoints
    if "patch_embed.proj.weight" not in out:
        raise ValueError(
            "state_dict: not an official MLP-KAN/timm ViT state dict (no 'patch_embed.proj.weight'); "
            f"first keys: {sorted(out)[:5]}"
        )
    return out


def _expert_kinds(sd: dict[str, torch.Tensor], block: int) -> tuple[list[int], list[int]]:
    """Indices of the MLP experts and the KAN experts of one block, from their parameter names."""
    kinds: dict[int, str] = {}
    for k in sd:
        m = _EXPERT.match(k)
        if m and int(m.group(1)) == block:
            kinds.setdefault(int(m.group(2)), "kan" if m.group(3).startswith("layers.") else "mlp")
    mlp = sorted(e for e, t in kinds.items() if t == "mlp")
    kan = sorted(e for e, t in kinds.items() if t == "kan")
    if mlp and kan and max(mlp) > min(kan):
        raise ValueError(
            f"state_dict: block {block} has MLP experts {mlp} after KAN experts {kan}; the official "
            "layout (and ours) puts the MLP experts first"
        )
    return mlp, kan


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename an official MLP-KAN ViT state dict to :class:`MLPKANForImageClassification`'s.

    Args:
        state_dict: the official state dict (or a DeiT checkpoint dict holding it under
            ``"model"``; a ``module.`` prefix is removed).

    Returns:
        A new dict (tensors shared where not stacked or transposed). ``blocks.*.mlp.*`` (the
        unused dense MLP of ``kanBlock``) is dropped; an unrecognised key raises ``ValueError``.

    Examples:
        >>> import torch
        >>> sd = {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2), "head.bias": torch.zeros(2),
        ...       "blocks.0.mlp.fc1.weight": torch.zeros(16, 4)}
        >>> sorted(convert_official_state_dict(sd))
        ['head.bias', 'vit.patch_embed.proj.weight']
    """
    sd = _unwrap(state_dict)
    out: dict[str, torch.Tensor] = {}
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    experts: dict[int, tuple[list[int], list[int]]] = {b: _expert_kinds(sd, b) for b in blocks}
    dropped = 0
    for k, v in sd.items():
        if k.startswith("head."):
            out[k] = v
            continue
        if re.match(r"^blocks\.\d+\.mlp\.", k):
            dropped += 1
            continue
        m = _EXPERT.match(k)
        if m:
            b, e, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            mlp, kan = experts[b]
            if e in mlp:
                if rest not in _MLP_PARTS:
                    raise ValueError(f"state_dict: unexpected MLP-expert key {k!r}")
                continue  # stacked below
            out[f"vit.blocks.{b}.ffn.kan_experts.{kan.index(e)}.{rest}"] = v
            continue
        gate = re.match(r"^blocks\.(\d+)\.kan\.gate\.weight$", k)
        if gate:
            out[f"vit.blocks.{gate.group(1)}.ffn.gate.weight"] = v
            continue
        if re.match(
            r"^(cls_token|pos_embed|patch_embed\.proj\.|norm\.|blocks\.\d+\.(norm1|norm2|attn)\.)",
            k,
        ):
            out[f"vit.{k}"] = v
            continue
        raise ValueError(f"state_dict: unrecognised official key {k!r}")
    for b, (mlp, _) in experts.items():
        if not mlp:
            continue
        pre = f"blocks.{b}.kan.experts"

        def stack(part: str, transpose: bool, pre: str = pre, mlp: list[int] = mlp) -> torch.Tensor:
            ts = [sd[f"{pre}.{e}.{part}"] for e in mlp]
            return torch.stack([t.T if transpose else t for t in ts]).contiguous()

        new = f"vit.blocks.{b}.ffn"
        out[f"{new}.mlp_w1"] = stack("fc1.weight", True)  # (E_mlp, d, h)
        out[f"{new}.mlp_b1"] = stack("fc1.bias", False)  # (E_mlp, h)
        out[f"{new}.mlp_w2"] = stack("fc2.weight", True)  # (E_mlp, h, d)
        out[f"{new}.mlp_b2"] = stack("fc2.bias", False)  # (E_mlp, d)
    if dropped:
        logger.info(
            "dropped %d tensors of the unused per-block dense MLP (blocks.*.mlp.*)", dropped
        )
    return out


def config_from_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_attention_heads: int | None = None,
    **overrides: object,
) -> MLPKANConfig:
    """Infer the :class:`MLPKANConfig` of an official checkpoint from its tensor shapes.

    Width, depth, patch and image size, classes, expert counts and widths, grid size and range
    come from the shapes and the stored grid; the head count cannot be read from weights and
    defaults to ``d // 64`` (DeiT tiny/small/base: 3/6/12). ``official_compat=True`` (no qkv
    bias, block LayerNorm eps 1e-5, no drop-path), ``top_k=2``, RSWAF with h = 0.33.

    Args:
        state_dict: official state dict (or a checkpoint dict with ``"model"``).
        num_attention_heads: heads; default ``hidden_size // 64``.
        **overrides: any other :class:`MLPKANConfig` field (e.g. ``attn_impl``).
    """
    sd = _unwrap(state_dict)
    w = sd["patch_embed.proj.weight"]  # (d, C, p, p)
    d, chans, patch = w.shape[0], w.shape[1], w.shape[2]
    n_pos = sd["pos_embed"].shape[1] - 1
    side = round(n_pos**0.5)
    if side * side != n_pos:
        raise ValueError(f"state_dict: pos_embed has {n_pos} patch positions, not a square grid")
    depth = len({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    mlp, kan = _expert_kinds(sd, 0) if depth else ([], [])
    kw: dict[str, object] = {
        "image_size": side * patch,
        "patch_size": patch,
        "num_channels": chans,
        "hidden_size": d,
        "num_hidden_layers": depth,
        "num_attention_heads": num_attention_heads or max(1, d // 64),
        "official_compat": True,
        "num_labels": sd["head.weight"].shape[0] if "head.weight" in sd else 1000,
        "num_mlp_experts": len(mlp),
        "num_kan_experts": len(kan),
        "ffn": "mlp-kan",
    }
    if mlp:
        kw["mlp_expert_hidden"] = sd[f"blocks.0.kan.experts.{mlp[0]}.fc1.weight"].shape[0]
    if kan:
        pre = f"blocks.0.kan.experts.{kan[0]}.layers.0"
        grid = sd[f"{pre}.rbf.grid"]
        kw["kan_num_grids"] = grid.numel()
        kw["kan_grid_range"] = [float(grid[0]), float(grid[-1])]
        kw["kan_hidden"] = sd[f"{pre}.spline_linear.weight"].shape[0]
    kw.update(overrides)
    return MLPKANConfig(**kw)


def load_official_checkpoint(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    config: MLPKANConfig | None = None,
    **config_overrides: object,
) -> MLPKANForImageClassification:
    """Build an :class:`MLPKANForImageClassification` from an official checkpoint, strictly.

    Args:
        checkpoint: a state dict, or a path to a ``.pth``/``.pt`` file (read with
            ``torch.load(weights_only=True)``) or a ``.safetensors`` file.
        config: the model config; default :func:`config_from_official_state_dict`.
        **config_overrides: passed to :func:`config_from_official_state_dict`.

    Returns:
        The model in eval mode. Raises ``ValueError`` listing missing or unexpected keys.
    """
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    else:
        sd = checkpoint
    if config is None:
        config = config_from_official_state_dict(sd, **config_overrides)
    converted = convert_official_state_dict(sd)
    model = MLPKANForImageClassification(config)
    result = model.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint: does not match the config; missing keys {result.missing_keys[:8]}"
            f"{'...' if len(result.missing_keys) > 8 else ''}, unexpected keys "
            f"{result.unexpected_keys[:8]}{'...' if len(result.unexpected_keys) > 8 else ''}"
        )
    return model.eval()

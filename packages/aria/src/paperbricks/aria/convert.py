"""Checkpoint layouts of Aria (arXiv 2410.05993) and lossless conversion between them.

The same weights circulate under several names (spec §2, "Weight names and layouts"):

==============  =====================================================================================
layout          where the routed experts of layer N live (d hidden, I per-expert width, E experts)
==============  =====================================================================================
``official``    rhymes-ai/Aria code: ``language_model.model.layers.N.mlp.experts.fc1.weight`` (E, d, 2I)
                and ``fc2.weight`` (E, I, d); ViT under ``vision_tower.vision_model.`` with no
                post-layernorm; projector ``cross_attn.ln_kv`` / ``ln_ffn`` / ``ffn``.
``hf``          HF checkpoint files, as ``save_pretrained`` writes them in transformers 5.24 (verified
                on a tiny model: 5.x writes the legacy names back through its conversion mapping)
                and 4.4x-4.57: the official LM prefixes and expert names, ViT under ``vision_tower.``,
                projector ``cross_attn.layer_norm_kv`` / ``layer_norm`` / ``feed_forward``;
                ``config.json`` with ``rope_parameters``.
``hf4``         the same tensor names as ``hf``; ``config.json`` in the 4.x form (``rope_theta``).
``hf5``         transformers 5.x *module* names (its in-memory ``state_dict()``, also what our models
                use): ``model.language_model.``, ``model.vision_tower.``,
                ``model.multi_modal_projector.``, ``lm_head.weight``; experts
                ``mlp.experts.gate_up_proj`` (E, d, 2I) and ``mlp.experts.down_proj`` (E, I, d).
``per_expert``  ``hf5`` names, but each expert as ``nn.Linear`` weights (for PEFT / bitsandbytes, which
                cannot take 3-D parameters): ``mlp.experts.{e}.gate_proj.weight = fc1[e][:, :I]ᵀ``,
                ``up_proj.weight = fc1[e][:, I:]ᵀ``, ``down_proj.weight = fc2[e]ᵀ``.
==============  =====================================================================================

The gate/up column order ([:I] gate through SiLU, [I:] up, used as ``x @ W``) is the same in all
stacked layouts (official ``GroupedMLP``; HF 5.x ``AriaTextExperts`` with ``is_transposed=True``).

Text-only checkpoints (``AriaTextForCausalLM`` / the official ``AriaMoELMForCausalLM``) use
``model.`` + ``lm_head.weight`` in every layout; only the expert names differ.

Every conversion is a renaming plus exact slicing/transposition/stacking, so round trips are
bit-exact (checked with ``torch.equal``). The one asymmetry: the official ViT has no
post-layernorm (an identity op upstream) while HF keeps an unused ``post_layernorm`` in its state
dict; ``official -> hf`` inserts an identity LayerNorm (weight 1, bias 0), ``hf -> official`` drops
it (logging a warning if it is not the identity, since HF never applies it to Aria's features).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LAYOUTS",
    "convert_checkpoint",
    "convert_config",
    "convert_state_dict",
    "from_per_expert",
    "load_safetensors_dir",
    "to_per_expert",
]

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("official", "hf", "hf4", "hf5", "per_expert")

# Where each part of a multimodal checkpoint lives, per layout.
_LEGACY = {
    "lm": "language_model.model.",
    "head": "language_model.lm_head.",
    "vision": "vision_tower.",
    "proj": "multi_modal_projector.",
}
_MODULES = {
    "lm": "model.language_model.",
    "head": "lm_head.",
    "vision": "model.vision_tower.",
    "proj": "model.multi_modal_projector.",
}
_VLM_PREFIX: dict[str, dict[str, str]] = {
    "hf": _LEGACY,
    "hf4": _LEGACY,
    "official": {**_LEGACY, "vision": "vision_tower.vision_model."},
    "hf5": _MODULES,
    "per_expert": _MODULES,
}
_TEXT_PREFIX = {"lm": "model.", "head": "lm_head."}
# Layouts whose experts are named fc1.weight / fc2.weight (the others: gate_up_proj / down_proj).
_OLD_EXPERT_NAMES = ("official", "hf", "hf4")

# Canonical (hf) inner names; anything else is an unexpected key.
_LM_RE = re.compile(
    r"^(embed_tokens\.weight|norm\.weight|layers\.\d+\.("
    r"self_attn\.[qkvo]_proj\.(weight|bias)|input_layernorm\.weight|post_attention_layernorm\.weight"
    r"|mlp\.router\.weight|mlp\.experts\.(gate_up_proj|down_proj)"
    r"|mlp\.shared_experts\.(gate|up|down)_proj\.weight))$"
)
_HEAD_RE = re.compile(r"^weight$")
_VISION_RE = re.compile(
    r"^(embeddings\.(patch_embedding\.(weight|bias)|position_embedding\.weight)"
    r"|encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|layer_norm[12]|mlp\.fc[12])\.(weight|bias)"
    r"|post_layernorm\.(weight|bias))$"
)
_PROJ_RE = re.compile(
    r"^(query|cross_attn\.[qkv]_proj\.weight"
    r"|cross_attn\.multihead_attn\.(in_proj_weight|in_proj_bias|out_proj\.(weight|bias))"
    r"|cross_attn\.(linear|layer_norm|layer_norm_kv)\.(weight|bias)"
    r"|layer_norm\.(weight|bias)|feed_forward\.linear_(in|out)\.weight)$"
)
# official projector name -> hf name (prefix replacement on the inner key, first match wins)
_PROJ_OFFICIAL_TO_HF = (
    ("cross_attn.ln_kv.", "cross_attn.layer_norm_kv."),
    ("ln_ffn.", "layer_norm."),
    ("ffn.", "feed_forward."),
)
_EXPERT_OLD = {"gate_up_proj": "fc1.weight", "down_proj": "fc2.weight"}


def _layout(name: str, arg: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{arg}: expected a layout name (str), got {type(name).__name__}")
    if name not in LAYOUTS:
        raise ValueError(f"{arg}: expected one of {LAYOUTS}, got {name!r}")
    return name


def _is_multimodal(keys: list[str], layout: str) -> bool:
    pre = _VLM_PREFIX[layout]
    return any(k.startswith((pre["lm"], pre["vision"], pre["proj"])) for k in keys)


# --------------------------------------------------------------------------------------------
# per-expert <-> stacked experts (the only conversion that changes tensors)
# --------------------------------------------------------------------------------------------


def to_per_expert(
    state_dict: Mapping[str, torch.Tensor], config: Any = None
) -> dict[str, torch.Tensor]:
    """Split stacked HF-5 expert tensors into per-expert ``nn.Linear`` weights.

    ``...mlp.experts.gate_up_proj`` (E, d, 2I) becomes, for every expert e,
    ``...mlp.experts.{e}.gate_proj.weight`` = ``W[e][:, :I]ᵀ`` (I, d) and
    ``...mlp.experts.{e}.up_proj.weight`` = ``W[e][:, I:]ᵀ`` (I, d); ``...mlp.experts.down_proj``
    (E, I, d) becomes ``...mlp.experts.{e}.down_proj.weight`` = ``W2[e]ᵀ`` (d, I). Other keys pass
    through unchanged (same tensor objects). Outputs are contiguous copies, so they can be saved.

    Args:
        state_dict: an ``hf``-layout state dict (any prefix).
        config: optional ``AriaTextConfig`` / ``AriaConfig`` (ours or HF's) or dict; when given,
            ``moe_num_experts`` and ``intermediate_size`` are checked against the tensors.

    Returns:
        A new dict in the ``per_expert`` layout.

    Examples:
        >>> w = torch.randn(2, 4, 6); w2 = torch.randn(2, 3, 4)
        >>> sd = to_per_expert({"layers.0.mlp.experts.gate_up_proj": w,
        ...                     "layers.0.mlp.experts.down_proj": w2})
        >>> sd["layers.0.mlp.experts.1.up_proj.weight"].shape
        torch.Size([3, 4])
    """
    n_exp, inter = _expected_expert_dims(config)
    out: dict[str, torch.Tensor] = {}
    for key, t in state_dict.items():
        if key.endswith("mlp.experts.gate_up_proj"):
            base = key[: -len("gate_up_proj")]
            if t.dim() != 3 or t.shape[2] % 2:
                raise ValueError(
                    f"state_dict[{key!r}]: expected (E, d, 2I) with even last dim, "
                    f"got {tuple(t.shape)}"
                )
            _check_dims(key, t.shape[0], t.shape[2] // 2, n_exp, inter)
            i = t.shape[2] // 2
            for e in range(t.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = t[e, :, :i].t().contiguous()
                out[f"{base}{e}.up_proj.weight"] = t[e, :, i:].t().contiguous()
        elif key.endswith("mlp.experts.down_proj"):
            base = key[: -len("down_proj")]
            if t.dim() != 3:
                raise ValueError(f"state_dict[{key!r}]: expected (E, I, d), got {tuple(t.shape)}")
            _check_dims(key, t.shape[0], t.shape[1], n_exp, inter)
            for e in range(t.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = t[e].t().contiguous()
        else:
            out[key] = t
    return out


def from_per_expert(
    state_dict: Mapping[str, torch.Tensor], config: Any = None
) -> dict[str, torch.Tensor]:
    """Stack per-expert ``nn.Linear`` weights back into HF-5 ``gate_up_proj`` / ``down_proj``.

    The inverse of :func:`to_per_expert` (bit-exact). Experts of a layer must be numbered
    ``0 .. E-1`` with no gaps, each with all three of ``gate_proj``/``up_proj``/``down_proj``.

    Args:
        state_dict: a ``per_expert``-layout state dict (any prefix).
        config: optional config or dict, checked as in :func:`to_per_expert`.

    Returns:
        A new dict in the ``hf`` layout.

    Examples:
        >>> w = torch.randn(2, 4, 6); w2 = torch.randn(2, 3, 4)
        >>> sd = {"mlp.experts.gate_up_proj": w, "mlp.experts.down_proj": w2}
        >>> back = from_per_expert(to_per_expert(sd))
        >>> torch.equal(back["mlp.experts.gate_up_proj"], w)
        True
    """
    n_exp, inter = _expected_expert_dims(config)
    groups: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    pat = re.compile(r"^(.*mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
    for key, t in state_dict.items():
        m = pat.match(key)
        if m is None:
            out[key] = t
            continue
        if t.dim() != 2:
            raise ValueError(
                f"state_dict[{key!r}]: expected a 2-D Linear weight, got {tuple(t.shape)}"
            )
        groups.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = t
    for base, experts in groups.items():
        n = len(experts)
        if sorted(experts) != list(range(n)):
            raise ValueError(
                f"state_dict: experts under {base!r} must be numbered 0..{n - 1}, "
                f"got {sorted(experts)}"
            )
        for e, parts in experts.items():
            missing = {"gate_proj", "up_proj", "down_proj"} - set(parts)
            if missing:
                raise ValueError(f"state_dict: {base}.{e} lacks {sorted(missing)}")
        i, d = experts[0]["gate_proj"].shape
        _check_dims(base, n, i, n_exp, inter)
        for e, p in experts.items():
            for name, shape in (("gate_proj", (i, d)), ("up_proj", (i, d)), ("down_proj", (d, i))):
                if tuple(p[name].shape) != shape:
                    raise ValueError(
                        f"state_dict[{base}.{e}.{name}.weight]: expected {shape}, "
                        f"got {tuple(p[name].shape)}"
                    )
        out[f"{base}.gate_up_proj"] = torch.stack(
            [
                torch.cat([experts[e]["gate_proj"].t(), experts[e]["up_proj"].t()], dim=1)
                for e in range(n)
            ]
        )  # (E, d, 2I)
        out[f"{base}.down_proj"] = torch.stack([experts[e]["down_proj"].t() for e in range(n)])
    return out


def _expected_expert_dims(config: Any) -> tuple[int | None, int | None]:
    if config is None:
        return None, None
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    text = get("text_config", None)
    if text is not None:
        config = text
        get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    return get("moe_num_experts", None), get("intermediate_size", None)


def _check_dims(key: str, n: int, i: int, n_exp: int | None, inter: int | None) -> None:
    if n_exp is not None and n != n_exp:
        raise ValueError(
            f"state_dict[{key!r}]: config says moe_num_experts={n_exp}, tensor has {n}"
        )
    if inter is not None and i != inter:
        raise ValueError(
            f"state_dict[{key!r}]: config says intermediate_size={inter}, tensor has {i}"
        )


# --------------------------------------------------------------------------------------------
# state-dict level
# --------------------------------------------------------------------------------------------


def _to_canonical(sd: Mapping[str, torch.Tensor], layout: str) -> tuple[dict, bool]:
    """Parse a state dict of ``layout`` into {(part, hf inner name): tensor}; part in lm/head/vision/proj."""
    if layout == "per_expert":
        sd = from_per_expert(sd)
        layout = "hf5"
    keys = list(sd)
    vlm = _is_multimodal(keys, layout)
    pre = _VLM_PREFIX[layout] if vlm else _TEXT_PREFIX
    canon: dict[tuple[str, str], torch.Tensor] = {}
    unexpected = []
    for key, t in sd.items():
        part = next(
            (p for p in ("head", "vision", "proj", "lm") if p in pre and key.startswith(pre[p])),
            None,
        )
        if part is None:
            unexpected.append(key)
            continue
        inner = key[len(pre[part]) :]
        if part == "lm" and layout in _OLD_EXPERT_NAMES:
            for new, old in _EXPERT_OLD.items():
                if inner.endswith("mlp.experts." + old):
                    inner = inner[: -len(old)] + new
                    break
            else:
                if inner.endswith(("experts.gate_up_proj", "experts.down_proj")):
                    unexpected.append(key)
                    continue
        if part == "proj" and layout == "official":
            if inner.startswith(("cross_attn.layer_norm_kv.", "layer_norm.", "feed_forward.")):
                unexpected.append(key)  # hf names in an official checkpoint
                continue
            for old, new in _PROJ_OFFICIAL_TO_HF:
                if inner.startswith(old):
                    inner = new + inner[len(old) :]
                    break
        if part == "vision" and layout == "official" and inner.startswith("post_layernorm."):
            unexpected.append(key)
            continue
        regex = {"lm": _LM_RE, "head": _HEAD_RE, "vision": _VISION_RE, "proj": _PROJ_RE}[part]
        if not regex.match(inner):
            unexpected.append(key)
            continue
        canon[(part, inner)] = t
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:8])
        more = f" (+{len(unexpected) - 8} more)" if len(unexpected) > 8 else ""
        raise ValueError(
            f"state_dict: {len(unexpected)} key(s) do not belong to the {layout!r} layout: "
            f"{shown}{more}"
        )
    if vlm and layout == "official":
        _add_identity_post_layernorm(canon)
    return canon, vlm


def _add_identity_post_layernorm(canon: dict) -> None:
    bias = canon.get(("vision", "embeddings.patch_embedding.bias"))
    if bias is None or ("vision", "post_layernorm.weight") in canon:
        return
    canon[("vision", "post_layernorm.weight")] = torch.ones_like(bias)
    canon[("vision", "post_layernorm.bias")] = torch.zeros_like(bias)


def _from_canonical(canon: dict, vlm: bool, layout: str) -> dict[str, torch.Tensor]:
    target = "hf5" if layout == "per_expert" else layout
    pre = _VLM_PREFIX[target] if vlm else _TEXT_PREFIX
    out: dict[str, torch.Tensor] = {}
    for (part, inner), t in canon.items():
        if part not in pre:
            raise ValueError(f"state_dict: a text-only checkpoint cannot hold {part} weights")
        if part == "lm" and target in _OLD_EXPERT_NAMES:
            for new, old in _EXPERT_OLD.items():
                if inner.endswith("mlp.experts." + new):
                    inner = inner[: -len(new)] + old
                    break
        if part == "proj" and target == "official":
            for old, new in _PROJ_OFFICIAL_TO_HF:
                if inner.startswith(new):
                    inner = old + inner[len(new) :]
                    break
        if part == "vision" and target == "official" and inner.startswith("post_layernorm."):
            ident = torch.ones_like(t) if inner.endswith("weight") else torch.zeros_like(t)
            if not torch.equal(t, ident):
                logger.warning(
                    "dropping a non-identity vision post_layernorm.%s: the official layout has "
                    "none (Aria uses the pre-norm last hidden state, so outputs are unaffected)",
                    inner.rsplit(".", 1)[-1],
                )
            continue
        out[pre[part] + inner] = t
    if layout == "per_expert":
        out = to_per_expert(out)
    return out


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, src_layout: str, dst_layout: str
) -> dict[str, torch.Tensor]:
    """Rename/reshape a whole Aria state dict from one layout to another (lossless).

    Args:
        state_dict: tensors of a multimodal ``AriaForConditionalGeneration`` or a text-only causal
            LM, in ``src_layout``.
        src_layout, dst_layout: one of ``"official"``, ``"hf"``, ``"hf4"``, ``"hf5"``,
            ``"per_expert"`` (see the module docstring).

    Returns:
        A new dict; tensors are shared with the input except where experts are split/stacked.

    Raises:
        ValueError: unknown layout, or keys that do not belong to ``src_layout`` (all listed).

    Examples:
        >>> sd = {"model.layers.0.mlp.experts.fc1.weight": torch.zeros(2, 4, 6)}
        >>> list(convert_state_dict(sd, src_layout="official", dst_layout="hf5"))
        ['model.layers.0.mlp.experts.gate_up_proj']
    """
    src = _layout(src_layout, "src_layout")
    dst = _layout(dst_layout, "dst_layout")
    canon, vlm = _to_canonical(state_dict, src)
    return _from_canonical(canon, vlm, dst)


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------


def _text_to_hf(tc: dict) -> dict:
    tc = dict(tc)
    if tc.get("model_type") == "aria_moe_lm":
        tc["model_type"] = "aria_text"
    if "moe_intermediate_size" in tc:
        tc["intermediate_size"] = tc.pop("moe_intermediate_size")
    if "moe_aux_loss_coeff" in tc:
        tc["router_aux_loss_coef"] = tc.pop("moe_aux_loss_coeff")
    if "moe_z_loss_coeff" in tc:
        tc["router_z_loss_coef"] = tc.pop("moe_z_loss_coeff")
    if "rope_parameters" not in tc and "rope_theta" in tc:
        rope = dict(tc.pop("rope_scaling", None) or {"rope_type": "default"})
        rope["rope_theta"] = tc.pop("rope_theta")
        tc["rope_parameters"] = rope
    return tc


def _text_from_hf(tc: dict, layout: str) -> dict:
    tc = dict(tc)
    rope = tc.pop("rope_parameters", None)
    if rope is not None:
        rope = dict(rope)
        tc["rope_theta"] = rope.pop("rope_theta", 10000.0)
        if rope.get("rope_type", "default") != "default" or len(rope) > 1:
            tc["rope_scaling"] = rope
        else:
            tc["rope_scaling"] = None
    if layout == "official":
        if tc.get("model_type") == "aria_text":
            tc["model_type"] = "aria_moe_lm"
        if "intermediate_size" in tc:
            tc["moe_intermediate_size"] = tc.pop("intermediate_size")
        if "router_aux_loss_coef" in tc:
            tc["moe_aux_loss_coeff"] = tc.pop("router_aux_loss_coef")
        if "router_z_loss_coef" in tc:
            tc["moe_z_loss_coeff"] = tc.pop("router_z_loss_coef")
    return tc


def convert_config(config: Mapping[str, Any], *, src_layout: str, dst_layout: str) -> dict:
    """Convert a ``config.json`` dict between layouts (multimodal ``aria`` or text-only).

    hf/hf5/per_expert <-> hf4: ``rope_parameters`` (5.x) <-> ``rope_theta``/``rope_scaling``
    (4.x). official:
    text ``model_type`` ``aria_moe_lm`` and ``moe_intermediate_size`` (HF: ``aria_text`` and
    ``intermediate_size``, the per-expert width), ``moe_aux_loss_coeff``/``moe_z_loss_coeff``
    (ours: ``router_aux_loss_coef``/``router_z_loss_coef``), vision ``aria_vision_model``
    (HF: ``idefics3_vision``). ``per_expert`` is the ``hf`` config with
    ``"checkpoint_layout"`` set to ``"per_expert"`` / ``"hf5"`` (these are not files HF writes),
    so a loader can tell. Other fields are copied.
    """
    src = _layout(src_layout, "src_layout")
    dst = _layout(dst_layout, "dst_layout")
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    cfg = json.loads(json.dumps(dict(config)))  # deep copy, JSON types only
    cfg.pop("checkpoint_layout", None)
    multimodal = "text_config" in cfg
    if src in ("official", "hf4"):
        if multimodal:
            cfg["text_config"] = _text_to_hf(cfg["text_config"])
            vc = cfg.get("vision_config")
            if isinstance(vc, dict) and vc.get("model_type") == "aria_vision_model":
                vc["model_type"] = "idefics3_vision"
        else:
            cfg = _text_to_hf(cfg)
    if dst in ("hf4", "official"):
        if multimodal:
            cfg["text_config"] = _text_from_hf(cfg["text_config"], dst)
            vc = cfg.get("vision_config")
            if (
                dst == "official"
                and isinstance(vc, dict)
                and vc.get("model_type") == "idefics3_vision"
            ):
                vc["model_type"] = "aria_vision_model"
        else:
            cfg = _text_from_hf(cfg, dst)
    if dst in ("per_expert", "hf5"):
        cfg["checkpoint_layout"] = dst
    return cfg


# --------------------------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------------------------

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def load_safetensors_dir(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``save_pretrained``-style directory (single file or sharded with an index).

    Raises:
        FileNotFoundError: no ``model.safetensors`` and no ``model.safetensors.index.json``.
        ValueError: a tensor name appears in two shards.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if (path / _INDEX).is_file():
        index = json.loads((path / _INDEX).read_text())
        files = sorted(set(index["weight_map"].values()))
    elif (path / _SINGLE).is_file():
        files = [_SINGLE]
    else:
        raise FileNotFoundError(
            f"src_dir: expected {_SINGLE} or {_INDEX} in {str(path)!r}, found neither"
        )
    out: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(str(path / f))
        dup = set(part) & set(out)
        if dup:
            raise ValueError(f"src_dir: tensors {sorted(dup)[:4]} appear in more than one shard")
        out.update(part)
    return out


def _save_safetensors_dir(
    sd: dict[str, torch.Tensor], path: Path, max_shard_bytes: int
) -> list[Path]:
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(sd):
        t = sd[key].contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(path / _SINGLE), metadata=meta)
        return [path / _SINGLE]
    written, weight_map = [], {}
    total = sum(t.numel() * t.element_size() for t in sd.values())
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
        written.append(path / name)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / _INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return written


def convert_checkpoint(
    src_dir: str | Path,
    dst_dir: str | Path,
    *,
    src_layout: str,
    dst_layout: str,
    max_shard_size: int = 5 * 1024**3,
) -> Path:
    """Convert a checkpoint directory (safetensors + ``config.json``) between Aria layouts.

    Reads ``model.safetensors`` or a sharded ``model.safetensors.index.json`` set, converts the
    tensors with :func:`convert_state_dict` and ``config.json`` with :func:`convert_config`, writes
    safetensors (sharded with an index when larger than ``max_shard_size``) and copies every other
    file (tokenizer, processor and generation configs) unchanged. All tensors are held in memory.

    Args:
        src_dir: existing checkpoint directory.
        dst_dir: output directory; created if missing, must be empty if it exists.
        src_layout, dst_layout: ``"official"``, ``"hf"``, ``"hf4"``, ``"hf5"`` or ``"per_expert"``.
        max_shard_size: bytes per output shard. Default 5 GiB.

    Returns:
        ``dst_dir`` as a Path.

    Raises:
        FileExistsError: ``dst_dir`` exists and is not empty (never overwritten).
        FileNotFoundError: ``src_dir`` has no safetensors weights.
        ValueError: unknown layout or keys foreign to ``src_layout``.

    Examples:
        >>> convert_checkpoint("Aria-official", "Aria-hf", src_layout="official",
        ...                    dst_layout="hf")  # doctest: +SKIP
    """
    src_l = _layout(src_layout, "src_layout")
    dst_l = _layout(dst_layout, "dst_layout")
    if not isinstance(max_shard_size, int) or max_shard_size <= 0:
        raise ValueError(
            f"max_shard_size: expected a positive int of bytes, got {max_shard_size!r}"
        )
    src, dst = Path(src_dir), Path(dst_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"src_dir: {str(src)!r} is not a directory")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(
            f"dst_dir: {str(dst)!r} exists and is not empty; refusing to overwrite"
        )
    if dst.resolve() == src.resolve():
        raise ValueError("dst_dir: must differ from src_dir")
    sd = load_safetensors_dir(src)
    out = convert_state_dict(sd, src_layout=src_l, dst_layout=dst_l)
    dst.mkdir(parents=True, exist_ok=True)
    _save_safetensors_dir(out, dst, max_shard_size)
    skip = {_SINGLE, _INDEX, "config.json"}
    for f in src.iterdir():
        if f.name in skip or re.match(r"^model-\d+-of-\d+\.safetensors$", f.name):
            continue
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    cfg_path = src / "config.json"
    if cfg_path.is_file():
        cfg = convert_config(json.loads(cfg_path.read_text()), src_layout=src_l, dst_layout=dst_l)
        (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    else:
        logger.warning("no config.json in %s: converted the weights only", src)
    logger.info("converted %d tensors %s -> %s (%s -> %s)", len(out), src, dst, src_l, dst_l)
    return dst

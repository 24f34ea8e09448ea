"""Save and load PrefixQuant models: safetensors tensors, module structure, config, prefix KV cache.

The official code reloads from ``prefixequant_config.json`` plus a pickled
``prefixed_key_values.pth`` and regenerates its Hadamard matrices at load time; spec §3 warns that
a model quantized with online Hadamards must carry the *exact* matrices it used. A saved directory
here holds:

- ``config.json``: the base model's HF config (``save_pretrained``), so the HF model is rebuilt
  with ``AutoModelForCausalLM.from_config`` (never the hub);
- ``model.safetensors``: the whole ``state_dict`` (fake-quant float weights, or the real modules'
  int8 / packed-int4 codes and scales; every quantizer scale, clip and statistic; the online
  Hadamard ``had_k`` buffers), plus the model's non-persistent buffers under ``__nonpersistent__.``
  (e.g. RoPE ``inv_freq``) so the reloaded model is bit-identical even where those were cast;
- ``prefix_cache.safetensors``: the prefix KV cache (``layers.{i}.keys`` / ``.values``) when the
  model is a :class:`~.prefix.PrefixedCausalLM`;
- ``prefixquant_config.json``: format name and version, package version, the PrefixQuant config,
  the :class:`~.prefix.PrefixSpec`, the rotation state, the dtype, the attention implementation,
  a **structure manifest** (every module of this package by path, with its constructor arguments
  and flags, plus ``pq_*`` attributes and the v_proj hooks) and SHA-256 digests of both tensor files.

:func:`load_quantized` rebuilds the HF model from ``config.json``, replays the manifest (rotation
wrappers, quantizers, real integer modules, attention function, hooks), loads the tensors
strictly (missing or unexpected keys raise, naming them) and re-wraps the prefix cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMAT", "FORMAT_VERSION", "load_quantized", "save_quantized"]

logger = logging.getLogger(__name__)

FORMAT = "paperbricks-prefixquant"
FORMAT_VERSION = 1
MANIFEST = "prefixquant_config.json"
WEIGHTS = "model.safetensors"
CACHE = "prefix_cache.safetensors"
_NONPERSISTENT = "__nonpersistent__."
_PKG = "paperbricks.prefixquant"


# --------------------------------------------------------------------------- module descriptions


def _describe(m: nn.Module) -> dict[str, Any]:
    """Constructor arguments and flags of one of this package's modules."""
    from .modules import QuantLinear, QuantRMSNorm
    from .quantizers import ActQuantizer, WeightQuantizer
    from .real import RealQuantLinear, RealQuantRMSNorm
    from .rotation import HadamardInputLinear, OnlineHadamard

    name = type(m).__name__
    if isinstance(m, OnlineHadamard):
        return {"class": name, "n": m.n, "impl": m.impl}
    if isinstance(m, (HadamardInputLinear, QuantLinear)):
        return {
            "class": name,
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        }
    if isinstance(m, QuantRMSNorm):
        return {
            "class": name,
            "hidden_size": m.hidden_size,
            "eps": m.eps,
            "weight": m.weight is not None,
        }
    if isinstance(m, ActQuantizer):  # KVQuantizer too
        if m.calibrating:
            raise ValueError(f"{name}: is still calibrating; finish calibration before saving")
        return {
            "class": name,
            "bits": m.bits,
            "mode": m.mode,
            "granularity": m.granularity,
            "num_channels": m.num_channels,
            "group_size": m.group_size,
            "stat": m.stat,
            "percentile": m.percentile,
            "enabled": bool(m.enabled),
        }
    if isinstance(m, WeightQuantizer):
        return {
            "class": name,
            "bits": m.bits,
            "out_features": int(m.scale.shape[0]),
            "enabled": bool(m.enabled),
        }
    if isinstance(m, RealQuantLinear):
        return {
            "class": name,
            "in_features": m.in_features,
            "out_features": m.out_features,
            "a_bits": m.a_bits,
            "a_mode": m.a_mode,
            "bias": m.bias is not None,
            "impl": m.impl,
        }
    if isinstance(m, RealQuantRMSNorm):
        return {
            "class": name,
            "hidden_size": m.hidden_size,
            "eps": m.eps,
            "a_bits": m.a_bits,
            "a_mode": m.a_mode,
            "impl": m.impl,
        }
    raise ValueError(
        f"{type(m).__module__}.{name}: this module type cannot be serialised by save_quantized"
    )


def _build(desc: dict[str, Any], path: str, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Instantiate a module from its description (parameters are filled by the strict load)."""
    from . import real
    from .modules import QuantLinear, QuantRMSNorm
    from .quantizers import ActQuantizer, KVQuantizer, WeightQuantizer
    from .rotation import HadamardInputLinear, OnlineHadamard

    cls = desc["class"]
    if cls == "OnlineHadamard":
        key = f"{path}.had_k"
        if key not in tensors:
            raise ValueError(f"{WEIGHTS}: missing the Hadamard matrix {key!r}")
        return OnlineHadamard(int(desc["n"]), had_k=tensors[key], impl=desc["impl"])
    if cls == "HadamardInputLinear":
        lin = nn.Linear(desc["in_features"], desc["out_features"], bias=desc["bias"])
        return HadamardInputLinear.from_linear(lin, OnlineHadamard(desc["in_features"]))
    if cls == "QuantLinear":
        return QuantLinear(desc["in_features"], desc["out_features"], bias=desc["bias"])
    if cls == "QuantRMSNorm":
        return QuantRMSNorm(desc["hidden_size"], desc["eps"], weight=desc["weight"])
    if cls in ("ActQuantizer", "KVQuantizer"):
        q_cls = ActQuantizer if cls == "ActQuantizer" else KVQuantizer
        q = q_cls(
            desc["bits"],
            mode=desc["mode"],
            granularity=desc["granularity"],
            num_channels=desc["num_channels"],
            group_size=desc["group_size"],
            stat=desc["stat"],
            percentile=desc["percentile"],
        )
        q.enabled = desc["enabled"]
        return q
    if cls == "WeightQuantizer":
        wq = WeightQuantizer(torch.ones(desc["out_features"], 1), desc["bits"])
        wq.enabled = desc["enabled"]
        return wq
    if cls in ("W8A8Linear", "W4Linear", "W4A8Linear", "W4A4Linear"):
        return getattr(real, cls)(
            desc["in_features"],
            desc["out_features"],
            a_bits=desc["a_bits"],
            a_mode=desc["a_mode"],
            bias=desc["bias"],
            impl=desc["impl"],
        )
    if cls == "RealQuantRMSNorm":
        return real.RealQuantRMSNorm(
            desc["hidden_size"],
            desc["eps"],
            a_bits=desc["a_bits"],
            a_mode=desc.get("a_mode", "static"),
            impl=desc["impl"],
        )
    raise ValueError(f"{MANIFEST}: unknown module class {cls!r} at {path!r}")


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _json_scalar(v: object) -> bool:
    return isinstance(v, (bool, int, float, str)) or v is None


# --------------------------------------------------------------------------- helpers


def _unwrap(obj: nn.Module) -> tuple[nn.Module, Any, Any]:
    """(model, PrefixSpec or None, prefix cache or None) of a model or a PrefixedCausalLM."""
    from .prefix import PrefixedCausalLM

    if isinstance(obj, PrefixedCausalLM):
        return obj.model, obj.prefix, obj.prefix_cache
    if not isinstance(obj, nn.Module):
        raise TypeError(
            f"model: expected an HF causal LM or a PrefixedCausalLM, got {type(obj).__name__}"
        )
    return obj, getattr(obj, "prefixquant_prefix", None), None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dedup(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; aliased or view tensors are cloned (safetensors refuses sharing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in tensors.items():
        t = t.detach().to("cpu")
        storage = t.untyped_storage()
        if (
            storage.data_ptr() in seen
            or not t.is_contiguous()
            or storage.nbytes() != t.numel() * t.element_size()
        ):
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


# --------------------------------------------------------------------------- save


def save_quantized(
    model: nn.Module,
    directory: str | Path,
    *,
    config: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write a (fake-quant or real) PrefixQuant model to ``directory``.

    Args:
        model: an HF Llama-family causal LM after ``quantize_`` (optionally ``to_real_``), or the
            :class:`~.prefix.PrefixedCausalLM` wrapping it (its prefix and prefix cache are saved).
        directory: output directory; created if missing.
        config: the :class:`~.config.PrefixQuantConfig` to record; default
            ``model.prefixquant_config`` when ``quantize_`` attached one, else none.
        overwrite: allow writing into a non-empty directory (files of this format are replaced;
            nothing else is deleted). Default False: a non-empty directory raises.

    Returns:
        the directory.

    Raises:
        FileExistsError: ``directory`` is non-empty and ``overwrite`` is False.
        ValueError: the model holds a module of this package that cannot be described (named),
            or a quantizer still calibrating.

    Examples:
        >>> save_quantized(info.prefixed, "out/llama-w4a8kv4")  # doctest: +SKIP
        >>> m = load_quantized("out/llama-w4a8kv4")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    from . import __version__
    from .prefix import PrefixSpec

    base, prefix, cache = _unwrap(model)
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"directory: {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"directory: {str(out)!r} is not empty; pass overwrite=True to write into it"
        )
    hf_config = getattr(base, "config", None)
    if hf_config is None or not hasattr(hf_config, "save_pretrained"):
        raise TypeError(
            f"model: expected a transformers model with a config, got {type(base).__name__}"
        )
    cfg = config if config is not None else getattr(base, "prefixquant_config", None)

    modules: dict[str, dict[str, Any]] = {}
    attrs: dict[str, dict[str, Any]] = {}
    v_hooks: list[str] = []
    for path, m in base.named_modules():
        if type(m).__module__.startswith(_PKG):
            modules[path] = _describe(m)
        pq = {k: v for k, v in vars(m).items() if k.startswith("pq_") and _json_scalar(v)}
        if pq:
            attrs[path] = pq
        if isinstance(getattr(m, "v_quantizer", None), nn.Module) and hasattr(m, "v_proj"):
            v_hooks.append(f"{path}.v_proj" if path else "v_proj")

    state = dict(base.state_dict())
    persistent = set(state)
    for name, buf in base.named_buffers():
        if name not in persistent:
            state[_NONPERSISTENT + name] = buf
    tensors = _dedup(state)

    rotation = getattr(base, "pq_rotation_state", None)
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(out)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT})
    files = {WEIGHTS: _sha256(out / WEIGHTS)}
    prefix_dict = None
    if prefix is not None:
        prefix_dict = (
            prefix if isinstance(prefix, PrefixSpec) else PrefixSpec(list(prefix))
        ).to_dict()
    if cache is not None:
        kv = {}
        for i, layer in enumerate(cache.layers):
            kv[f"layers.{i}.keys"] = layer.keys
            kv[f"layers.{i}.values"] = layer.values
        save_file(_dedup(kv), str(out / CACHE), metadata={"format": FORMAT})
        files[CACHE] = _sha256(out / CACHE)
    elif (out / CACHE).exists():
        (out / CACHE).unlink()  # a stale cache of an earlier save must not be picked up
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "quant_config": None if cfg is None else cfg.to_dict(),
        "prefix": prefix_dict,
        "prefixed": cache is not None,
        "rotation": None if rotation is None else rotation.to_dict(),
        "dtype": str(_model_dtype(base)).removeprefix("torch."),
        "attn_implementation": getattr(hf_config, "_attn_implementation", None),
        "modules": modules,
        "attributes": attrs,
        "v_proj_hooks": v_hooks,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info(
        "save_quantized: wrote %d tensors and %d modules to %s", len(tensors), len(modules), out
    )
    return out


# --------------------------------------------------------------------------- load


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The validated ``prefixquant_config.json`` of a saved directory.

    Raises:
        FileNotFoundError: no such directory or no manifest (not a ``save_quantized`` output).
        ValueError: unreadable JSON, another format, or a format version this code cannot read.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"directory: no such directory {str(d)!r}")
    path = d / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"directory: {str(d)!r} has no {MANIFEST}; it is not a save_quantized output"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: expected format {FORMAT!r}, got {manifest.get('format')!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is not supported by this code "
            f"(reads version {FORMAT_VERSION}); re-save the model with a matching package version"
        )
    return manifest


def _load_tensors(d: Path, name: str, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = d / name
    if not path.is_file():
        raise FileNotFoundError(f"{name}: missing from {str(d)!r}")
    want = manifest.get("files", {}).get(name)
    if want is not None and _sha256(path) != want:
        raise ValueError(f"{path}: SHA-256 does not match the manifest; the file is corrupted")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: cannot read safetensors ({exc})") from exc


def load_quantized(directory: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (local files only).

    Args:
        directory: the saved directory.
        device: where to put the model (and prefix cache); default CPU.

    Returns:
        a :class:`~.prefix.PrefixedCausalLM` when a prefix cache was saved, else the HF model;
        ``model.prefixquant_config`` / ``model.prefixquant_prefix`` / ``model.pq_rotation_state``
        are restored when they were saved. The model is in eval mode.

    Raises:
        FileNotFoundError: directory, manifest or tensor files missing.
        ValueError: wrong format or version, corrupted files, missing or unexpected tensors
            (named), or an unknown module class in the manifest.

    Examples:
        >>> model = load_quantized("out/llama-w4a8kv4")  # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    d = Path(directory)
    manifest = read_manifest(d)
    tensors = _load_tensors(d, WEIGHTS, manifest)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"config.json: missing from {str(d)!r}")
    hf_config = AutoConfig.from_pretrained(str(d), local_files_only=True)
    dtype = getattr(torch, manifest.get("dtype", "float32"))
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)

    # module structure, parents before children
    for path in sorted(manifest["modules"], key=lambda p: p.count(".")):
        _set_module(model, path, _build(manifest["modules"][path], path, tensors))
    for path, pq in manifest.get("attributes", {}).items():
        m = model.get_submodule(path) if path else model
        for k, v in pq.items():
            setattr(m, k, v)
    from .attention import ATTN_IMPLEMENTATION, use_prefixquant_attention

    if manifest.get("attn_implementation") == ATTN_IMPLEMENTATION:
        use_prefixquant_attention(model)
    if manifest.get("v_proj_hooks"):
        from .quantize import attach_v_quantizer_hook

        for path in manifest["v_proj_hooks"]:
            attn_path = path.rpartition(".")[0]
            attn = model.get_submodule(attn_path) if attn_path else model
            if model.get_submodule(path) is not getattr(attn, "v_proj", None):
                raise ValueError(
                    f"prefixquant_config.json: v_proj_hooks entry {path!r} is not a v_proj"
                )
            attach_v_quantizer_hook(attn)

    nonpersistent = {
        k[len(_NONPERSISTENT) :]: v for k, v in tensors.items() if k.startswith(_NONPERSISTENT)
    }
    state = {k: v for k, v in tensors.items() if not k.startswith(_NONPERSISTENT)}
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{WEIGHTS}: tensors do not match the rebuilt model: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    buffers = dict(model.named_buffers())
    for name, t in nonpersistent.items():
        if name not in buffers:
            raise ValueError(f"{WEIGHTS}: unexpected non-persistent buffer {name!r}")
        _set_module_buffer(model, name, t)
    if getattr(hf_config, "tie_word_embeddings", False):
        model.tie_weights()

    from .prefix import PrefixSpec

    prefix = None if manifest.get("prefix") is None else PrefixSpec.from_dict(manifest["prefix"])
    if manifest.get("rotation") is not None:
        from .rotation import RotationState

        model.pq_rotation_state = RotationState.from_dict(manifest["rotation"])
    if manifest.get("quant_config") is not None:
        from .config import PrefixQuantConfig

        model.prefixquant_config = PrefixQuantConfig.from_dict(manifest["quant_config"])
    if prefix is not None:
        model.prefixquant_prefix = prefix
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model.to(dev).eval()
    if not manifest.get("prefixed"):
        return model
    kv = _load_tensors(d, CACHE, manifest)
    cache = _rebuild_cache(kv, dev)
    if prefix is None:
        raise ValueError(f"{MANIFEST}: a prefix cache was saved without its prefix")
    from .prefix import PrefixedCausalLM

    return PrefixedCausalLM(model, prefix, prefix_cache=cache)


def _set_module_buffer(model: nn.Module, name: str, t: torch.Tensor) -> None:
    owner_path, _, bname = name.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    owner._buffers[bname] = t


def _rebuild_cache(kv: dict[str, torch.Tensor], device: torch.device) -> Any:
    from transformers import DynamicCache

    n = len(kv) // 2
    want = {f"layers.{i}.{s}" for i in range(n) for s in ("keys", "values")}
    if set(kv) != want or 2 * n != len(kv):
        raise ValueError(
            f"{CACHE}: expected keys layers.{{i}}.keys/values for i < {n}, got {sorted(kv)[:6]}"
        )
    cache = DynamicCache()
    for i in range(n):
        cache.update(kv[f"layers.{i}.keys"].to(device), kv[f"layers.{i}.values"].to(device), i)
    return cache

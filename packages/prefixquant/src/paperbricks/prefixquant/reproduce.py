"""Reproductions for ``paperbricks reproduce`` (arXiv:2410.05265, abstract and §3–§5).

(a) :func:`synthetic_mse` — the mechanism in isolation (spec §6(a)). Activations
    ``X ∈ R^{T×C}`` (Gaussian, a few mildly larger channels) with a handful of planted outlier
    tokens 100–1000× larger on a few channels, one of them at position 0. 4-bit fake quantization
    (symmetric, ``s = 2·max/(2^b − 1)``, codes ``[−2^{b−1}, 2^{b−1} − 1]``, the official init) by
    (i) per-tensor **static** scales calibrated on a separate calibration draw, (ii) per-token
    **dynamic** scales, (iii) per-tensor static scales calibrated and applied with the outlier
    tokens moved into the (full-precision) prefix. Metric: MSE over the ordinary tokens, which
    all three methods quantize. Expected: (iii) ≲ (ii) ≪ (i).
(b) :func:`planted_llama` — the pipeline end to end on the planted-outlier tiny Llama
    (:mod:`.planted`): detection, prefixing, rotation, static W8A8KV8 / W4A4KV4, metric
    KL(fp ‖ quantized) of the next-token distributions on held-out text. Expected: prefix + static
    ≈ or < dynamic per-token without prefix < static without prefix, and rotation lowers the error.
    Seed-noisy at this scale; see the module docstring of :mod:`.planted` for what the planted model
    does and does not show.

Both take ``(*, seed, out_dir, quick)`` and return a :class:`~paperbricks.core_kernels.repro.ReproResult`.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from paperbricks.core_kernels.hadamard import had_transform
from paperbricks.core_kernels.quant import QuantSpec, fake_quant, mse_clip_search
from paperbricks.core_kernels.repro import ReproResult, new_figure

__all__ = ["planted_llama", "synthetic_activations", "synthetic_mse", "synthetic_mse_once"]

logger = logging.getLogger(__name__)

_METHODS = ("static", "dynamic", "static+prefix")


# ----------------------------------------------------------------------------- (a) synthetic


def synthetic_activations(
    seed: int, tokens: int = 512, channels: int = 256, num_outliers: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X (T, C) float32, outlier_mask (T,) bool)`` with planted outlier tokens.

    Ordinary tokens: N(0, 1) with 4 channels scaled by 4 (mild channel outliers). Outlier tokens:
    position 0 plus ``num_outliers − 1`` random positions; on 2 channels each, magnitudes drawn
    log-uniformly in [100, 1000].
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, channels, generator=g)  # (T, C)
    x[:, torch.randperm(channels, generator=g)[:4]] *= 4.0
    pos = torch.cat(
        [
            torch.zeros(1, dtype=torch.long),
            1 + torch.randperm(tokens - 1, generator=g)[: num_outliers - 1],
        ]
    )
    mask = torch.zeros(tokens, dtype=torch.bool)
    mask[pos] = True
    for t in pos.tolist():
        ch = torch.randperm(channels, generator=g)[:2]
        mag = torch.exp(torch.empty(2).uniform_(math.log(100.0), math.log(1000.0), generator=g))
        x[t, ch] = mag * torch.sign(torch.randn(2, generator=g))
    return x, mask


def _fq(x: torch.Tensor, scale: torch.Tensor, granularity: str, bits: int) -> torch.Tensor:
    spec = QuantSpec(bits=bits, granularity=granularity, symmetric=True)
    return fake_quant(x, spec, scale=scale)


def _scale(x: torch.Tensor, granularity: str, bits: int, ratio: float) -> torch.Tensor:
    """``s = ratio · 2·max|x| / (2^b − 1)`` per tensor () or per token (T, 1)."""
    m = x.abs().max() if granularity == "tensor" else x.abs().amax(dim=-1, keepdim=True)
    return ratio * 2 * m / (2**bits - 1)


def _search(x_cal: torch.Tensor, granularity: str, bits: int) -> float:
    """The clip ratio minimising the calibration MSE (official grids, spec §2.5–2.6)."""

    def objective(r: float) -> float:
        s = _scale(x_cal, granularity, bits, r)
        return float((_fq(x_cal, s, granularity, bits) - x_cal).pow(2).mean())

    if granularity == "token":  # dynamic: one clip bound, grid linspace(0.6, 1, 9)
        return mse_clip_search(objective, torch.linspace(0.6, 1.0, 9).tolist()).ratio
    coarse = mse_clip_search(objective, [1.0, *torch.linspace(0.25, 0.95, 8).tolist()]).ratio
    lo, hi = max(coarse - 0.05, 0.01), min(coarse + 0.05, 1.0)
    return mse_clip_search(objective, [coarse, *torch.linspace(lo, hi, 10).tolist()]).ratio


def synthetic_mse_once(
    seed: int, bits: int = 4, *, rotate: bool = True, clip_search: bool = True, **kw: Any
) -> dict[str, float]:
    """MSE over ordinary tokens of the three 4-bit schemes for one seed (see module docstring).

    Args:
        seed: data seed (calibration and test draws are independent).
        bits: quantization bits (default 4).
        rotate: apply a normalised Hadamard over channels first (R1-like; the paper always rotates).
        clip_search: pick each scheme's clip ratio on the calibration draw (official grids:
            static coarse linspace(0.25, 0.95, 8) + fine ±0.05; dynamic linspace(0.6, 1, 9)).
        **kw: forwarded to :func:`synthetic_activations`.

    Returns:
        ``{"static": ..., "dynamic": ..., "static+prefix": ...}``.
    """
    x_cal, m_cal = synthetic_activations(seed, **kw)
    x, m = synthetic_activations(seed + 1_000_003, **kw)
    if rotate:
        x_cal, x = had_transform(x_cal, normalize=True), had_transform(x, normalize=True)
    keep = ~m
    r_static = _search(x_cal, "tensor", bits) if clip_search else 1.0
    r_prefix = _search(x_cal[~m_cal], "tensor", bits) if clip_search else 1.0
    r_token = _search(x_cal, "token", bits) if clip_search else 1.0
    out = {
        # calibrated with the outlier tokens present
        "static": _fq(x, _scale(x_cal, "tensor", bits, r_static), "tensor", bits),
        # computed on the fly per token
        "dynamic": _fq(x, _scale(x, "token", bits, r_token), "token", bits),
        # calibrated without the outlier tokens (they live in the prefix)
        "static+prefix": _fq(x, _scale(x_cal[~m_cal], "tensor", bits, r_prefix), "tensor", bits),
    }
    return {k: float((v - x)[keep].pow(2).mean()) for k, v in out.items()}


def synthetic_mse(*, seed: int = 0, out_dir: Path, quick: bool = True) -> ReproResult:
    """Reproduction (a): 4-bit MSE of static / dynamic / static-with-prefix on synthetic tensors."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [seed + i for i in range(5 if quick else 20)]
    rows = [synthetic_mse_once(s) for s in seeds]
    plain = [synthetic_mse_once(s, rotate=False, clip_search=False) for s in seeds]
    mean = {k: statistics.fmean(r[k] for r in rows) for k in _METHODS}
    std = {k: statistics.pstdev(r[k] for r in rows) for k in _METHODS}
    gap = min(r["static"] / r["static+prefix"] for r in rows)  # the "≪"
    rel = [r["static+prefix"] / r["dynamic"] for r in rows]  # the "≲"
    much_less = gap >= 10.0
    roughly_le = max(rel) <= 1.5
    fig = new_figure()
    ax = fig.add_subplot(111)
    ax.bar(
        list(_METHODS),
        [mean[k] for k in _METHODS],
        yerr=[std[k] for k in _METHODS],
        color=["C3", "C0", "C2"],
    )
    ax.set_yscale("log")
    ax.set_ylabel("4-bit MSE on ordinary tokens")
    ax.set_title(f"synthetic activations, {len(seeds)} seeds")
    path = out_dir / "synthetic_mse.png"
    fig.savefig(path, dpi=120)
    metrics: dict[str, Any] = {f"mse_{k}": mean[k] for k in _METHODS}
    metrics |= {f"mse_{k}_std": std[k] for k in _METHODS}
    metrics |= {
        "min_ratio_static_over_prefix": gap,
        "max_ratio_prefix_over_dynamic": max(rel),
        "mean_ratio_prefix_over_dynamic": statistics.fmean(rel),
        "seeds": seeds,
    }
    metrics |= {f"plain_mse_{k}": statistics.fmean(r[k] for r in plain) for k in _METHODS}
    verdict = (
        "reproduced"
        if much_less and roughly_le
        else ("inconclusive" if much_less else "not reproduced")
    )
    summary = (
        f"4-bit MSE (mean over {len(seeds)} seeds): static {mean['static']:.3g}, dynamic per-token "
        f"{mean['dynamic']:.3g}, static+prefix {mean['static+prefix']:.3g}; static/static+prefix >= "
        f"{gap:.0f}x in every seed ('<<' needs >= 10x), static+prefix/dynamic = {statistics.fmean(rel):.2f} "
        f"(max {max(rel):.2f}; '≲' read as <= 1.5x). All after a channel Hadamard and a per-scheme clip "
        f"search on the calibration draw; without rotation and clipping: static "
        f"{metrics['plain_mse_static']:.3g}, dynamic {metrics['plain_mse_dynamic']:.3g}, "
        f"static+prefix {metrics['plain_mse_static+prefix']:.3g}."
    )
    return ReproResult(
        claim=(
            "Outlier tokens force per-tensor static scales up; moving them to the prefix makes static "
            "per-tensor quantization about as accurate as per-token dynamic (abstract, §3)."
        ),
        verdict=verdict,
        metrics=metrics,
        summary=summary,
        figures=[path],
        seed_noisy=False,
    )


# ----------------------------------------------------------------------------- (b) planted llama


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over real positions of KL(softmax p ‖ softmax q)."""
    lp = F.log_softmax(p_logits.float(), dim=-1)
    lq = F.log_softmax(q_logits.float(), dim=-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)  # (B, T)
    return float(kl[mask].mean())


def _stream(tok: Any, texts: list[str]) -> list[int]:
    ids: list[int] = []
    for t in texts:
        ids.extend(tok(t, add_special_tokens=False)["input_ids"])
    return ids


@torch.no_grad()
def _planted_arm(
    base: torch.nn.Module,
    tok: Any,
    spec: Any,
    preset: str,
    method: str,
    rotate: bool,
    calib: torch.Tensor,
    evalw: torch.Tensor,
    reference: dict[str, torch.Tensor],
    seed: int,
    quick: bool,
) -> float:
    """KL(fp ‖ quantized) of one arm; ``base`` is the fp model, already rotated when ``rotate``."""
    from .config import PrefixQuantConfig
    from .quantize import quantize_

    cfg = PrefixQuantConfig.from_preset(
        preset,
        rotate=rotate,
        a_mode="dynamic" if method == "dynamic" else "static",
        mse_init=not quick,
        seed=seed,
    )
    model = copy.deepcopy(base)
    n = calib.shape[0]
    if method == "static+prefix":
        info = quantize_(
            model, cfg, calibration_ids=calib, prefix=spec, batch_size=n, progress=False
        )
        out = info.prefixed(evalw).logits
        return _kl(reference["prefix"], out, torch.ones_like(evalw, dtype=torch.bool))
    bos = torch.full((n, 1), tok.bos_token_id)
    calib_bos = torch.cat([bos, calib[:, :-1]], 1)  # without a prefix, inputs start with BOS
    quantize_(model, cfg, calibration_ids=calib_bos, prefix="none", batch_size=n, progress=False)
    x = reference["bos_input"]
    return _kl(reference["plain"], model(x).logits, torch.ones_like(x, dtype=torch.bool))


def planted_llama(*, seed: int = 0, out_dir: Path, quick: bool = True) -> ReproResult:
    """Reproduction (b): detection + static vs dynamic vs prefix+static on the planted tiny Llama."""
    from .planted import planted_llama as build
    from .prefix import PrefixedCausalLM, calibration_windows, select_prefix
    from .rotation import rotate_model_

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tok, info = build(seed=seed)
    n_cal, n_eval, seqlen = (4, 2, 32) if quick else (64, 32, 128)
    calib = calibration_windows(_stream(tok, info["calibration_texts"]), n_cal, seqlen, seed=seed)
    evalw = calibration_windows(_stream(tok, info["eval_texts"]), n_eval, seqlen, seed=seed + 1)
    rotated = copy.deepcopy(model)
    rotate_model_(rotated, seed=seed)
    # pipeline order: the prefix is selected on the rotated fp model
    spec = select_prefix(rotated, tok, calibration_ids=calib, batch_size=n_cal, progress=False)
    found = sorted(spec.ids) == sorted(info["planted_ids"])
    with torch.no_grad():
        bos_input = torch.cat([torch.full((n_eval, 1), tok.bos_token_id), evalw[:, :-1]], 1)
        reference = {
            "bos_input": bos_input,
            "plain": model(bos_input).logits,
            "prefix": PrefixedCausalLM(copy.deepcopy(model), spec)(evalw).logits,
        }
    presets = ("W8A8KV8", "W4A4KV4")
    kl: dict[str, float] = {}
    for preset in presets:
        for rotate in (False, True):
            for method in _METHODS:
                key = f"{preset}/{'rot' if rotate else 'norot'}/{method}"
                base = rotated if rotate else model
                kl[key] = _planted_arm(
                    base, tok, spec, preset, method, rotate, calib, evalw, reference, seed, quick
                )
                logger.info("planted llama %s: KL %.4g", key, kl[key])
    fig = new_figure(figsize=(7.0, 3.5))
    for i, preset in enumerate(presets):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, rotate in enumerate((False, True)):
            r = "rot" if rotate else "norot"
            vals = [kl[f"{preset}/{r}/{m}"] for m in _METHODS]
            ax.bar([k + 0.4 * j for k in range(3)], vals, width=0.4, label=r)
        ax.set_xticks([k + 0.2 for k in range(3)], list(_METHODS), fontsize=7)
        ax.set_yscale("log")
        ax.set_title(preset)
        ax.set_ylabel("KL(fp ‖ quant)")
        ax.legend(fontsize=7)
    path = out_dir / "planted_llama_kl.png"
    fig.savefig(path, dpi=120)

    def ranks(preset: str, r: str) -> bool:
        s, d, p = (kl[f"{preset}/{r}/{m}"] for m in _METHODS)
        return p <= 1.25 * d and d < s

    ranking = {f"{p}/{r}": ranks(p, r) for p in presets for r in ("norot", "rot")}
    rot_helps = {p: kl[f"{p}/rot/static+prefix"] < kl[f"{p}/norot/static+prefix"] for p in presets}
    ok = found and all(ranking.values()) and all(rot_helps.values())
    if ok:
        verdict = "reproduced"
    elif found and any(ranking.values()):
        verdict = "inconclusive"
    else:
        verdict = "not reproduced"
    metrics: dict[str, Any] = {
        "prefix_ids": spec.ids,
        "planted_ids": info["planted_ids"],
        "detection_exact": found,
    }
    metrics |= {f"kl[{k}]": v for k, v in kl.items()}
    metrics |= {f"ranking_ok[{k}]": v for k, v in ranking.items()}
    metrics |= {f"rotation_helps[{k}]": v for k, v in rot_helps.items()}
    summary = (
        f"detection {'found exactly' if found else 'did NOT find'} the planted ids {info['planted_ids']} "
        f"(prefix {spec.ids!r} = {spec.text!r}); KL(fp||quant) static / dynamic / static+prefix: "
        + "; ".join(
            f"{p} {r}: " + " / ".join(f"{kl[f'{p}/{r}/{m}']:.3g}" for m in _METHODS)
            for p in presets
            for r in ("norot", "rot")
        )
        + ". Caveat: the planted outliers are tied to token identity (every '.' stays massive inside the "
        "text), not to position as in real LLMs, so the prefix removes only the BOS outlier from the input."
    )
    return ReproResult(
        claim=(
            "On a model with token-wise massive activations, prefixing the outlier tokens lets static "
            "per-tensor quantization match or beat dynamic per-token quantization, and rotation helps "
            "(abstract; §5 tables W4A4KV4 / W8A8KV8)."
        ),
        verdict=verdict,
        metrics=metrics,
        summary=summary,
        figures=[path],
        seed_noisy=True,
    )

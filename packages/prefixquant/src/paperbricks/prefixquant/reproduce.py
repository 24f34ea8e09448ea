"""Reproductions for ``paperbricks reproduce`` (arXiv:2410.05265, abstract and §3–§5).

(a) :func:`synthetic_mse` — the mechanism in isolation (spec §6(a)). Activations
    ``X ∈ R^{T×C}`` (Gaussian, a few mildly larger channels) with a handful of planted outlier
    tokens 100–1000× larger on a few channels, one of them at position 0. 4-bit fake quantization
    (symmetric, ``s = 2·max/(2^b − 1)``, codes ``[−2^{b−1}, 2^{b−1} − 1]``, the official init) by
    (i) per-tensor **static** scales calibrated on a separate calibration draw, (ii) per-token
    **dynamic** scales, (iii) per-tensor static scales calibrated and applied with the outlier
    tokens moved into the (full-precision) prefix. Metric: MSE over the ordinary tokens, which
    all three methods quantize. Expected: (iii) ≲ (ii) ≪ (i).
(b) :func:`planted_llama` — the pipeline end to end on planted-outlier tiny Llamas
    (:mod:`.planted`), two variants: ``bos`` (massive activations at BOS only; every sequence
    starts with BOS, so the outlier sits at the first-position sink as in real LLMs, and the prefix
    cache removes it) and ``delimiter`` (also at every ``"."``, which occurs inside the text, so the
    prefix cannot remove those). Detection, prefixing, rotation, W8A8KV8 / W4A4KV4 × {static
    without prefix, dynamic per-token, static with prefix}; metric KL(fp ‖ quantized) over the same
    predicted text positions in every arm. Expected: prefix + static ≲ dynamic < static without
    prefix, rotation helping. The verdict uses the ``bos`` variant; the ``delimiter`` row shows
    what identity-tied outliers inside the text do. Seed-noisy.

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

__all__ = [
    "PLANTED_VARIANTS",
    "planted_llama",
    "planted_llama_once",
    "planted_setup",
    "synthetic_activations",
    "synthetic_mse",
    "synthetic_mse_once",
]

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

#: the two planted constructions: extra planted ids besides BOS
PLANTED_VARIANTS: dict[str, tuple[str, ...]] = {"bos": (), "delimiter": (".",)}
_PRESETS = ("W8A8KV8", "W4A4KV4")
_ROTS = ("norot", "rot")
#: "≤ dynamic·(1 + tol)" tolerance of the verdict, fixed before running
RANK_TOL = 0.25


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """Mean over all positions of KL(softmax p ‖ softmax q); both (B, T, V)."""
    lp = F.log_softmax(p_logits.float(), dim=-1)
    lq = F.log_softmax(q_logits.float(), dim=-1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def _stream(tok: Any, texts: list[str]) -> list[int]:
    ids: list[int] = []
    for t in texts:
        ids.extend(tok(t, add_special_tokens=False)["input_ids"])
    return ids


def _with_bos(bos: int, windows: torch.Tensor) -> torch.Tensor:
    """``[BOS, w_0, …, w_{T−1}]`` for every window: (N, T) -> (N, T + 1)."""
    return torch.cat([torch.full((windows.shape[0], 1), bos, dtype=windows.dtype), windows], 1)


@torch.no_grad()
def planted_setup(seed: int, variant: str = "bos", *, quick: bool = True) -> dict[str, Any]:
    """Model, windows and selected prefix of one seed of reproduction (b) (no quantization).

    Args:
        seed: seeds the planted model, the text windows and the rotation.
        variant: ``"bos"`` (massive activations at BOS only) or ``"delimiter"`` (BOS and every
            ``"."``; identity-tied outliers inside the text).
        quick: 8 calibration / 4 evaluation windows of 32 text tokens; otherwise 32 / 16 of 64.

    Returns:
        dict with ``model`` (fp32), ``rotated`` (rotated fp copy), ``tokenizer``, ``info`` (from
        :func:`.planted.planted_llama`), ``calib``/``evalw`` (N, T) text windows drawn at random
        offsets inside the token streams, ``calib_bos``/``eval_bos`` (N, T + 1) the same windows
        after a leading BOS, and ``spec``: the :class:`~.prefix.PrefixSpec` selected on the rotated
        fp model from ``calib_bos`` (count_mode "official").
    """
    from .planted import planted_llama as build
    from .prefix import calibration_windows, select_prefix
    from .rotation import rotate_model_

    if variant not in PLANTED_VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(PLANTED_VARIANTS)}, got {variant!r}")
    model, tok, info = build(seed=seed, delimiter_ids=PLANTED_VARIANTS[variant])
    bos = int(tok.bos_token_id)
    n_cal, n_eval, seqlen = (8, 4, 32) if quick else (32, 16, 64)
    # text windows at random offsets inside the streams (spec §2); every sequence then starts
    # with BOS, as evaluation with a BOS token does: BOS is the planted first-position sink.
    calib = calibration_windows(_stream(tok, info["calibration_texts"]), n_cal, seqlen, seed=seed)
    evalw = calibration_windows(_stream(tok, info["eval_texts"]), n_eval, seqlen, seed=seed + 1)
    rotated = copy.deepcopy(model)
    rotate_model_(rotated, seed=seed)
    calib_bos = _with_bos(bos, calib)  # (N, T + 1)
    # pipeline order: the prefix is selected on the rotated fp model
    spec = select_prefix(
        rotated,
        tok,
        calibration_ids=calib_bos,
        batch_size=n_cal,
        count_mode="official",
        progress=False,
    )
    return {
        "model": model,
        "rotated": rotated,
        "tokenizer": tok,
        "info": info,
        "calib": calib,
        "evalw": evalw,
        "calib_bos": calib_bos,
        "eval_bos": _with_bos(bos, evalw),
        "spec": spec,
    }


@torch.no_grad()
def planted_llama_once(
    seed: int,
    variant: str = "bos",
    *,
    quick: bool = True,
    presets: tuple[str, ...] = _PRESETS,
) -> dict[str, Any]:
    """One seed of reproduction (b) on one planted variant (see :func:`planted_setup`).

    Args:
        seed: seeds the planted model, the text windows and the rotation.
        variant: ``"bos"`` or ``"delimiter"``.
        quick: small windows; otherwise more/longer windows. Both run the MSE clip initialisation
            (the presets' default; quick mode skipped it before the pipeline got ~3x faster).
        presets: presets to run (default W8A8KV8 and W4A4KV4).

    Returns:
        ``{"prefix_ids", "planted_ids", "detection_exact", "prefix_o",
        "prefix_mean_count_per_layer", "kl": {"<preset>/<rot>/<method>": float},
        "kl_prefix_cache_fp"}``. ``kl_prefix_cache_fp`` is KL(fp on BOS + text ‖ fp with the fp16
        prefix cache) — the error of the cache alone (NaN unless the prefix is [BOS]).
    """
    from .config import PrefixQuantConfig
    from .prefix import PrefixedCausalLM
    from .quantize import quantize_

    st = planted_setup(seed, variant, quick=quick)
    model, rotated, tok, info, spec = (
        st[k] for k in ("model", "rotated", "tokenizer", "info", "spec")
    )
    calib, evalw, calib_bos, eval_bos = (st[k] for k in ("calib", "evalw", "calib_bos", "eval_bos"))
    n_cal = calib.shape[0]
    bos = int(tok.bos_token_id)
    found = sorted(set(spec.ids)) == sorted(set(info["planted_ids"]))
    # fp references over the SAME predicted positions: the logits after each text token
    ref_plain = model(eval_bos).logits[:, 1:]  # (B, T, V): fp model on BOS + text
    fp_prefixed = PrefixedCausalLM(copy.deepcopy(model), spec)(evalw).logits  # (B, T, V)
    # with prefix == [BOS] the context is identical, so the fp reference is the same for all arms;
    # otherwise (e.g. [".", BOS]) the prefix changes the context and its arm is compared with the
    # fp model under the same prefix
    prefix_is_bos = spec.ids == [bos]
    ref_prefix = ref_plain if prefix_is_bos else fp_prefixed
    kl: dict[str, float] = {}
    for preset in presets:
        for rot in _ROTS:
            base = rotated if rot == "rot" else model
            for method in _METHODS:
                cfg = PrefixQuantConfig.from_preset(
                    preset,
                    rotate=rot == "rot",
                    a_mode="dynamic" if method == "dynamic" else "static",
                    mse_init=True,
                    seed=seed,
                )
                qm = copy.deepcopy(base)
                if method == "static+prefix":
                    # real tokens = the text after BOS; BOS (and any other prefix id) is in the
                    # fp16 prefix cache, excluded from calibration
                    q_info = quantize_(
                        qm,
                        cfg,
                        calibration_ids=calib,
                        prefix=spec,
                        batch_size=n_cal,
                        progress=False,
                    )
                    out = q_info.prefixed(evalw).logits
                    kl[f"{preset}/{rot}/{method}"] = _kl(ref_prefix, out)
                else:
                    # no prefix: BOS + text, every real token (BOS included) quantized, static
                    # scales calibrated over all positions
                    quantize_(
                        qm,
                        cfg,
                        calibration_ids=calib_bos,
                        prefix="none",
                        batch_size=n_cal,
                        progress=False,
                    )
                    kl[f"{preset}/{rot}/{method}"] = _kl(ref_plain, qm(eval_bos).logits[:, 1:])
                logger.info(
                    "planted %s seed %d %s/%s/%s: KL %.4g",
                    variant,
                    seed,
                    preset,
                    rot,
                    method,
                    kl[f"{preset}/{rot}/{method}"],
                )
    return {
        "prefix_ids": list(spec.ids),
        "planted_ids": list(info["planted_ids"]),
        "detection_exact": found,
        "prefix_o": spec.stats["o"],
        "prefix_mean_count_per_layer": spec.stats["mean_count_per_layer"],
        "kl": kl,
        "kl_prefix_cache_fp": _kl(ref_plain, fp_prefixed) if prefix_is_bos else float("nan"),
    }


def _ranking_ok(kl: dict[str, float], preset: str, rot: str) -> bool:
    s, d, p = (kl[f"{preset}/{rot}/{m}"] for m in _METHODS)
    return p <= (1 + RANK_TOL) * d and d < s


def planted_llama(*, seed: int = 0, out_dir: Path, quick: bool = True) -> ReproResult:
    """Reproduction (b): detection + static vs dynamic vs prefix+static on planted tiny Llamas.

    Two planted variants (see :mod:`.planted`): ``bos`` — massive activations at BOS only, the
    token every sequence starts with (the first-position attention sink of real LLMs), and
    ``delimiter`` — also at every ``"."``, inside the text too (identity-tied outliers the prefix
    cannot remove). Each: W8A8KV8 and W4A4KV4 × {no rotation, rotation} × {static without
    prefix, dynamic per-token, static with prefix}; metric KL(fp ‖ quant) over the predicted
    text positions (the text after BOS), identical in every arm.

    Verdict, from the ``bos`` variant only, with rotation (PrefixQuant always rotates):
    "reproduced" iff static+prefix ≤ dynamic·(1 + 0.25) and dynamic < static-without-prefix for
    both presets on every seed and detection is exact; "inconclusive" if that holds for some
    (preset, seed) pairs only; "not reproduced" otherwise. Quick mode: 2 seeds, small windows
    (≈ 50 s on a quiet 2-core CPU); full mode: 5 seeds, more and longer windows; both with the
    MSE clip initialisation.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [seed + i for i in range(2 if quick else 5)]
    runs = {v: [planted_llama_once(s, v, quick=quick) for s in seeds] for v in PLANTED_VARIANTS}
    keys = [f"{p}/{r}/{m}" for p in _PRESETS for r in _ROTS for m in _METHODS]
    mean = {
        v: {k: statistics.fmean(r["kl"][k] for r in rs) for k in keys} for v, rs in runs.items()
    }
    lo = {v: {k: min(r["kl"][k] for r in rs) for k in keys} for v, rs in runs.items()}
    hi = {v: {k: max(r["kl"][k] for r in rs) for k in keys} for v, rs in runs.items()}
    found = {v: all(r["detection_exact"] for r in rs) for v, rs in runs.items()}
    rank = {
        v: {f"{p}/{r}": [_ranking_ok(x["kl"], p, r) for x in rs] for p in _PRESETS for r in _ROTS}
        for v, rs in runs.items()
    }
    rot_helps = {
        v: {
            p: [x["kl"][f"{p}/rot/static+prefix"] < x["kl"][f"{p}/norot/static+prefix"] for x in rs]
            for p in _PRESETS
        }
        for v, rs in runs.items()
    }
    verdict_cells = [ok for p in _PRESETS for ok in rank["bos"][f"{p}/rot"]]
    if found["bos"] and all(verdict_cells):
        verdict = "reproduced"
    elif found["bos"] and any(verdict_cells):
        verdict = "inconclusive"
    else:
        verdict = "not reproduced"

    fig = new_figure(figsize=(9.0, 6.0))
    for i, v in enumerate(PLANTED_VARIANTS):
        for j, preset in enumerate(_PRESETS):
            ax = fig.add_subplot(2, 2, 2 * i + j + 1)
            for k, r in enumerate(_ROTS):
                ks = [f"{preset}/{r}/{m}" for m in _METHODS]
                m_ = [mean[v][x] for x in ks]
                err = [
                    [m_[n] - lo[v][x] for n, x in enumerate(ks)],
                    [hi[v][x] - m_[n] for n, x in enumerate(ks)],
                ]
                ax.bar([n + 0.4 * k for n in range(3)], m_, width=0.4, yerr=err, label=r)
            ax.set_xticks([n + 0.2 for n in range(3)], list(_METHODS), fontsize=7)
            ax.set_yscale("log")
            ax.set_title(f"{v} variant, {preset}", fontsize=9)
            ax.set_ylabel("KL(fp ‖ quant)", fontsize=8)
            ax.legend(fontsize=7)
    path = out_dir / "planted_llama_kl.png"
    fig.savefig(path, dpi=120)

    metrics: dict[str, Any] = {"seeds": seeds, "rank_tol": RANK_TOL}
    for v, rs in runs.items():
        metrics[f"{v}/prefix_ids"] = [r["prefix_ids"] for r in rs]
        metrics[f"{v}/planted_ids"] = [r["planted_ids"] for r in rs]
        metrics[f"{v}/prefix_o"] = [r["prefix_o"] for r in rs]
        metrics[f"{v}/detection_exact"] = found[v]
        metrics |= {f"{v}/kl[{k}]": mean[v][k] for k in keys}
        metrics |= {f"{v}/kl_min[{k}]": lo[v][k] for k in keys}
        metrics |= {f"{v}/kl_max[{k}]": hi[v][k] for k in keys}
        metrics |= {f"{v}/ranking_ok[{k}]": ok for k, ok in rank[v].items()}
        metrics |= {f"{v}/rotation_helps[{p}]": ok for p, ok in rot_helps[v].items()}
    metrics["bos/kl_prefix_cache_fp"] = [r["kl_prefix_cache_fp"] for r in runs["bos"]]

    def table(v: str) -> str:
        return "; ".join(
            f"{p} {r}: " + " / ".join(f"{mean[v][f'{p}/{r}/{m}']:.3g}" for m in _METHODS)
            for p in _PRESETS
            for r in _ROTS
        )

    summary = (
        "Construction: a random 4-layer Llama (hidden 128) whose planted ids have a one-hot "
        "embedding on a reserved channel aligned with large gate/up rows, giving ~10^3x down_proj "
        "inputs wherever those ids occur, plus x20 RMSNorm gamma channels. Variant 'bos': only BOS "
        "is planted and every sequence starts with BOS, so the outlier sits only at the "
        "first-position sink, as in real LLMs; prefix = the selected ids (BOS replaced by the fp16 "
        "prefix cache). Variant 'delimiter': BOS and every '.' are planted; '.' also occurs inside "
        f"the text, so the prefix cannot remove those outliers. Seeds {seeds}. Detection exact: "
        f"bos {found['bos']} (prefix {runs['bos'][0]['prefix_ids']}), delimiter "
        f"{found['delimiter']} (prefix {runs['delimiter'][0]['prefix_ids']}). Mean KL(fp||quant) "
        f"static / dynamic / static+prefix -- bos: {table('bos')}. delimiter: "
        f"{table('delimiter')}. Verdict from the bos variant with rotation, both presets, every "
        f"seed: static+prefix <= {1 + RANK_TOL:g} x dynamic and dynamic < static: "
        f"{verdict_cells}."
    )
    return ReproResult(
        claim=(
            "On a model whose massive activations sit at the first-token sink, prefixing the outlier "
            "tokens lets static per-tensor quantization match or beat dynamic per-token quantization, "
            "and rotation helps (abstract; §5 tables W4A4KV4 / W8A8KV8)."
        ),
        verdict=verdict,
        metrics=metrics,
        summary=summary,
        figures=[path],
        seed_noisy=True,
    )

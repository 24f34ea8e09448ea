"""Tiny-scale reproductions of Aria's design claims (arXiv 2410.05993; spec §6).

Registered for ``paperbricks reproduce`` as ``aria.fine-grained-moe`` and
``aria.modality-specialisation``. Both are seed-noisy design claims: they are reported with their
seeds and spread, never asserted in tests.

- :func:`fine_grained_moe`: fine-grained routed experts plus a shared expert against coarse
  experts at equal activated FFN width and equal steps, on the synthetic multi-task token language
  of :mod:`.synthetic`, over several seeds. Fine: 16 experts x 32 hidden, top-4, + 1 shared expert
  of width 32 (activated width 4·32 + 32 = 160). Coarse: 4 experts x 160 hidden, top-1 (activated
  width 160). The spec's "4 x 128 top-1" would give the coarse model 20 % fewer activated
  parameters than the fine one, so the coarse width is 160 to make the activated counts equal
  (the coarse model then has *more* total parameters: 640 vs 544 hidden units per layer).
- :func:`modality_specialisation`: a tiny ``AriaForConditionalGeneration`` trained briefly on
  synthetic image+caption pairs; per decoder layer, the Jensen–Shannon divergence (base 2, in
  [0, 1]) between the expert-usage histograms (top-k selections) of visual and text tokens,
  against a baseline that shuffles the modality labels over the same tokens, and against the
  untrained model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from paperbricks.core_kernels.repro import ReproResult, new_figure

__all__ = ["expert_usage", "fine_grained_moe", "js_divergence", "modality_specialisation"]

logger = logging.getLogger(__name__)


# ---- helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_cpu(seed: int) -> Iterator[None]:
    """One intra-op thread and a forked, seeded global RNG for the duration.

    The models here are tiny (d = 64): intra-op threads only add synchronisation, and on a shared
    2-core machine they made one training step ~60x slower (10 s instead of 0.15 s, measured).
    HF-style weight init draws from the global RNG, so it is forked (restored on exit).
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen–Shannon divergence in bits between two histograms (normalised here), in [0, 1].

    Examples:
        >>> js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        1.0
    """
    if p.shape != q.shape or p.dim() != 1:
        raise ValueError(
            f"p, q: expected two 1-D histograms of one shape, got {tuple(p.shape)}, {tuple(q.shape)}"
        )
    p = p.double() / p.double().sum()
    q = q.double() / q.double().sum()
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        nz = a > 0
        return (a[nz] * torch.log2(a[nz] / b[nz])).sum()

    return float(0.5 * kl(p, m) + 0.5 * kl(q, m))


def expert_usage(router_logits: torch.Tensor, top_k: int, mask: torch.Tensor) -> torch.Tensor:
    """Histogram (E,) of top-k expert selections over the tokens where ``mask`` is True.

    Args:
        router_logits: (N, E) router logits of one layer.
        top_k: experts chosen per token.
        mask: (N,) bool.
    """
    if router_logits.dim() != 2 or mask.shape != router_logits.shape[:1]:
        raise ValueError(
            f"router_logits, mask: expected (N, E) and (N,), got {tuple(router_logits.shape)}, "
            f"{tuple(mask.shape)}"
        )
    idx = router_logits[mask].topk(top_k, dim=-1).indices.reshape(-1)
    return torch.bincount(idx, minlength=router_logits.shape[1]).double()


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, s


# ---- (a) fine-grained + shared vs coarse experts --------------------------------------------

# (seeds, steps) of the quick and full runs
_FINE_GRAINED_RUNS = {True: (2, 150), False: (3, 400)}
_FINE = dict(moe_num_experts=16, intermediate_size=32, moe_topk=4, moe_num_shared_experts=1)
_COARSE = dict(moe_num_experts=4, intermediate_size=160, moe_topk=1, moe_num_shared_experts=0)


def _text_model(vocab: int, seq_len: int, arch: dict[str, int], seed: int):
    from .models.configuration_aria import AriaTextConfig
    from .models.modeling_aria_text import AriaTextForCausalLM

    cfg = AriaTextConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=seq_len,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        **arch,
    )
    torch.manual_seed(seed)  # HF-style init uses the global RNG (forked by _quiet_cpu)
    return AriaTextForCausalLM(cfg), cfg


@torch.no_grad()
def _val_loss(model, data: torch.Tensor, batch: int) -> float:
    model.eval()
    losses = [float(model(input_ids=x, labels=x).loss) for x in data.split(batch)]
    return sum(losses) / len(losses)


def fine_grained_moe(*, seed: int = 0, out_dir: Path, quick: bool = True) -> ReproResult:
    """Fine-grained + shared experts vs coarse experts at equal activated parameters (spec §6).

    Args:
        seed: first seed; seeds ``seed, seed+1, ...`` are used (quick: 2, else 3).
        out_dir: where ``fine_grained_moe.png`` is written.
        quick: 2 seeds x 150 steps (about a minute on 2 CPU cores) instead of 3 x 400.

    Returns:
        :class:`ReproResult` with validation losses per seed, means, paired gap and its spread.
        Verdict: "reproduced" if the paired mean gap (coarse − fine) exceeds twice its standard
        error over seeds, "not reproduced" if it is below minus twice, else "inconclusive".
    """
    from .params import count_parameters
    from .synthetic import MultiTaskLanguage, multitask_entropy_rate, multitask_sequences
    from .train import TrainConfig, train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_seeds, steps = _FINE_GRAINED_RUNS[bool(quick)]
    batch, seq_len = 16, 32
    lang = MultiTaskLanguage.make(content_vocab=48, n_tasks=4, branching=3, seed=1234)
    rate = multitask_entropy_rate(lang)
    # the loss averages seq_len - 1 predictions: the first content token (uniform given the
    # task, ln V_c) and seq_len - 2 Markov steps (about the entropy rate each)
    floor = (math.log(lang.content_vocab) + (seq_len - 2) * rate) / (seq_len - 1)
    seeds = [seed + i for i in range(n_seeds)]
    curves: dict[str, list[list[float]]] = {"fine": [], "coarse": []}
    val: dict[str, list[float]] = {"fine": [], "coarse": []}
    counts: dict[str, Any] = {}
    t0 = time.perf_counter()
    with _quiet_cpu(seed):
        for s in seeds:
            g = torch.Generator().manual_seed(10_000 + s)
            train_data = multitask_sequences(lang, steps * batch, seq_len, generator=g)
            val_data = multitask_sequences(lang, 256, seq_len, generator=g)
            batches = [{"input_ids": x, "labels": x} for x in train_data.split(batch)]
            for name, arch in (("fine", _FINE), ("coarse", _COARSE)):
                model, cfg = _text_model(lang.vocab_size, seq_len, arch, seed=s)
                counts[name] = (
                    count_parameters(cfg, activated=True).decoder,
                    count_parameters(cfg).decoder,
                )
                logs = train(
                    model,
                    batches,
                    TrainConfig(steps=steps, lr=3e-3, warmup_ratio=0.05, progress=False),
                )
                curves[name].append([lg.loss for lg in logs])
                val[name].append(_val_loss(model, val_data, 64))
                logger.info("seed %d %s: val loss %.4f", s, name, val[name][-1])
    fine_m, fine_s = _mean_std(val["fine"])
    coarse_m, coarse_s = _mean_std(val["coarse"])
    diffs = [c - f for c, f in zip(val["coarse"], val["fine"], strict=True)]
    gap, gap_s = _mean_std(diffs)
    se = gap_s / math.sqrt(len(diffs))
    if gap > 2 * se:
        verdict = "reproduced"
    elif gap < -2 * se:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"

    fig = new_figure(figsize=(9.0, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    for name, colour in (("fine", "tab:blue"), ("coarse", "tab:orange")):
        for i, c in enumerate(curves[name]):
            k = 10
            smooth = [
                sum(c[max(0, j - k + 1) : j + 1]) / len(c[max(0, j - k + 1) : j + 1])
                for j in range(len(c))
            ]
            ax1.plot(smooth, color=colour, alpha=0.8, label=name if i == 0 else None)
    ax1.axhline(floor, color="grey", ls=":", label="loss floor (approx.)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("train LM loss (10-step mean)")
    ax1.legend()
    ax2.bar(
        [0, 1],
        [fine_m, coarse_m],
        yerr=[fine_s, coarse_s],
        color=["tab:blue", "tab:orange"],
        capsize=4,
    )
    for i, name in enumerate(("fine", "coarse")):
        ax2.scatter([i] * len(val[name]), val[name], color="k", s=10, zorder=3)
    ax2.set_xticks([0, 1], ["16x32 top-4 +1 shared", "4x160 top-1"])
    ax2.set_ylabel("validation loss")
    lo = min(val["fine"] + val["coarse"])
    hi = max(val["fine"] + val["coarse"])
    ax2.set_ylim(lo - 0.1 * (hi - lo + 1e-3) - 0.02, hi + 0.1 * (hi - lo + 1e-3) + 0.02)
    fig_path = out_dir / "fine_grained_moe.png"
    fig.savefig(fig_path, dpi=120)

    metrics = {
        "seeds": seeds,
        "steps": steps,
        "tokens_per_step": batch * seq_len,
        "val_loss_fine": val["fine"],
        "val_loss_coarse": val["coarse"],
        "val_loss_fine_mean": fine_m,
        "val_loss_fine_std": fine_s,
        "val_loss_coarse_mean": coarse_m,
        "val_loss_coarse_std": coarse_s,
        "gap_coarse_minus_fine": gap,
        "gap_std_over_seeds": gap_s,
        "gap_stderr": se,
        "content_entropy_rate": rate,
        "val_loss_floor_approx": floor,
        "activated_decoder_params_fine": counts["fine"][0],
        "activated_decoder_params_coarse": counts["coarse"][0],
        "total_decoder_params_fine": counts["fine"][1],
        "total_decoder_params_coarse": counts["coarse"][1],
        "wall_s": time.perf_counter() - t0,
    }
    summary = (
        f"val loss fine {fine_m:.4f} ± {fine_s:.4f} vs coarse {coarse_m:.4f} ± {coarse_s:.4f} "
        f"over {n_seeds} seeds x {steps} steps; paired gap {gap:+.4f} (std err {se:.4f}): "
        f"{verdict} (gap must exceed 2 std err)"
    )
    return ReproResult(
        claim=(
            "Fine-grained routed experts with shared experts model a mixture of tasks better than "
            "coarse experts at equal activated parameters and equal training steps "
            "(Aria §2, fine-grained MoE decoder; the paper gives it as a design choice)."
        ),
        verdict=verdict,
        metrics=metrics,
        summary=summary,
        figures=[fig_path],
        seed_noisy=True,
    )


# ---- (b) modality specialisation ------------------------------------------------------------


_MODALITY_STEPS = {True: 80, False: 300}


def _vlm(seed: int):
    from .models.configuration_aria import AriaConfig
    from .models.modeling_aria import AriaForConditionalGeneration

    cfg = AriaConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14,
        ),
        text_config=dict(
            vocab_size=64, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, moe_num_experts=8, moe_topk=2, moe_num_shared_experts=1,
            max_position_embeddings=64, pad_token_id=None, bos_token_id=None, eos_token_id=None,
        ),
        projector_patch_to_query_dict={4: 4},
        image_token_index=9,
    )  # fmt: skip
    torch.manual_seed(seed)  # HF-style init uses the global RNG (forked by _quiet_cpu)
    return AriaForConditionalGeneration(cfg), cfg


@torch.no_grad()
def _layer_jsd(model, batch, top_k: int, n_shuffles: int, g: torch.Generator):
    model.eval()
    out = model(**{k: v for k, v in batch.model_inputs().items() if k != "labels"})
    visual = batch.modality.reshape(-1)  # (N,)
    jsd, shuffled = [], []
    for logits in out.router_logits:  # (N, E) per layer
        jsd.append(
            js_divergence(expert_usage(logits, top_k, visual), expert_usage(logits, top_k, ~visual))
        )
        base = []
        for _ in range(n_shuffles):
            perm = visual[torch.randperm(visual.numel(), generator=g)]
            base.append(
                js_divergence(expert_usage(logits, top_k, perm), expert_usage(logits, top_k, ~perm))
            )
        shuffled.append(base)
    return jsd, shuffled


def modality_specialisation(*, seed: int = 0, out_dir: Path, quick: bool = True) -> ReproResult:
    """Per-layer JSD between visual- and text-token expert usage of a briefly trained tiny Aria.

    Args:
        seed: model init and data seed.
        out_dir: where ``modality_specialisation.png`` is written.
        quick: 80 training steps (well under a minute on 2 CPU cores) instead of 300.

    Returns:
        :class:`ReproResult`; verdict "reproduced" if every layer's JSD exceeds the largest of
        50 label-shuffled JSDs, "not reproduced" if no layer does, else "inconclusive".
    """
    from .synthetic import image_caption_batch
    from .train import TrainConfig, train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = _MODALITY_STEPS[bool(quick)]
    n_shuffles = 50
    t0 = time.perf_counter()
    with _quiet_cpu(seed):
        model, cfg = _vlm(seed)
        tc = cfg.text_config
        kw = dict(image_size=28, num_queries=4, caption_len=12, vocab_size=tc.vocab_size,
                  image_token_index=cfg.image_token_index, seed=seed)  # fmt: skip
        g = torch.Generator().manual_seed(seed + 7)
        train_batches = [
            image_caption_batch(16, generator=g, **kw).model_inputs() for _ in range(steps)
        ]
        val_batch = image_caption_batch(
            64, generator=torch.Generator().manual_seed(seed + 99), **kw
        )
        g_shuffle = torch.Generator().manual_seed(seed + 5)
        jsd0, _ = _layer_jsd(model, val_batch, tc.moe_topk, 1, g_shuffle)
        logs = train(
            model,
            train_batches,
            TrainConfig(steps=steps, lr=3e-3, warmup_ratio=0.05, progress=False),
        )
        jsd, shuffled = _layer_jsd(model, val_batch, tc.moe_topk, n_shuffles, g_shuffle)
        with torch.no_grad():
            val_loss = float(model(**val_batch.model_inputs()).loss)
    shuf_max = [max(b) for b in shuffled]
    shuf_mean = [sum(b) / len(b) for b in shuffled]
    above = [j > m for j, m in zip(jsd, shuf_max, strict=True)]
    verdict = (
        "reproduced" if all(above) else ("not reproduced" if not any(above) else "inconclusive")
    )

    fig = new_figure()
    ax = fig.subplots()
    layers = list(range(len(jsd)))
    w = 0.25
    ax.bar([i - w for i in layers], jsd0, width=w, label="untrained", color="tab:grey")
    ax.bar(layers, jsd, width=w, label="trained", color="tab:blue")
    ax.bar(
        [i + w for i in layers],
        shuf_mean,
        width=w,
        label="trained, labels shuffled (mean)",
        color="tab:orange",
    )
    ax.scatter(
        [i + w for i in layers], shuf_max, marker="_", s=200, color="k", label="shuffled max"
    )
    ax.set_xticks(layers, [f"layer {i}" for i in layers])
    ax.set_ylabel("JSD(visual usage, text usage) [bits]")
    ax.legend(fontsize=7)
    fig_path = out_dir / "modality_specialisation.png"
    fig.savefig(fig_path, dpi=120)
    metrics = {
        "seed": seed,
        "steps": steps,
        "jsd_trained": jsd,
        "jsd_untrained": jsd0,
        "jsd_shuffled_mean": shuf_mean,
        "jsd_shuffled_max": shuf_max,
        "n_shuffles": n_shuffles,
        "train_loss_first": logs[0].loss,
        "train_loss_last": logs[-1].loss,
        "val_loss": val_loss,
        "experts": tc.moe_num_experts,
        "top_k": tc.moe_topk,
        "wall_s": time.perf_counter() - t0,
    }
    summary = (
        "per-layer JSD visual vs text expert usage "
        + ", ".join(
            f"L{i}: {j:.3f} (shuffled max {m:.3f}, untrained {u:.3f})"
            for i, (j, m, u) in enumerate(zip(jsd, shuf_max, jsd0, strict=True))
        )
        + f"; {verdict}"
    )
    return ReproResult(
        claim=(
            "Aria's MoE experts specialise by modality without modality-specific routing: visual "
            "and text tokens use different experts (Aria §2 / expert-activation analysis; the "
            "paper's layer-wise numbers are not checked here)."
        ),
        verdict=verdict,
        metrics=metrics,
        summary=summary,
        figures=[fig_path],
        seed_noisy=True,
    )

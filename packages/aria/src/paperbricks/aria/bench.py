"""Benchmark ``aria.moe``: one Aria MoE layer, grouped GEMM vs the per-expert loop vs dense.

Aria's decoder FFN is 64 fine-grained SwiGLU experts (width 1664) with top-6 routing (paper §2;
spec §7). The layer is our :class:`~paperbricks.aria.models.modeling_aria_text.AriaMoELayer`
(router → core-kernels permute → grouped GEMM with fused SwiGLU → weighted combine), timed with
:func:`~paperbricks.core_kernels.testing.bench` against two baselines in the same run:

- **loop**: the same layer with ``experts_backend="loop"`` (one small GEMM pair per expert, as
  HF 4.57 and the official code with ``USE_GROUPED_GEMM=0``);
- **dense**: one dense SwiGLU MLP of width ``k·I`` over the same tokens, i.e. the same matmul FLOPs
  (6·T·k·d·I forward) in two large GEMMs: the throughput ceiling a MoE layer aims for.

Both forward and forward+backward (parameter and input gradients) are timed. FLOPs counted:
forward 6·T·k·d·I (experts) + 2·T·d·E (router); forward+backward three times that. Shared
experts are left out (``moe_num_shared_experts=0``): they are a dense MLP and would dilute the
comparison.

Sizes:

- **CUDA** (``device="cuda"``): d 2560, I 1664, E 64, top-6 (Aria's shapes), T 4096 tokens
  (``quick``) or 16384, bf16; grouped backends ``"auto"`` (torch grouped_mm on SM80+) and
  ``"triton"`` (core-kernels' kernel).
- **CPU**: d 128, I 64, E 16, top-4, T 256 (``quick``; 1024 otherwise), float32, grouped backend
  ``"auto"`` (torch's CPU grouped GEMM when its stride rules allow, else the reference loop). The
  Triton kernels would only run in the interpreter, whose timings mean nothing, so they are not
  timed on the CPU. The CPU run uses one intra-op thread (restored afterwards): on the shared
  2-core machine, torch's default two threads made these small GEMMs 10-1000x slower and the
  timings swing by orders of magnitude with the load (measured: a 0.7 ms forward took 265-925 ms).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from paperbricks.core_kernels.devices import resolve_device
from paperbricks.core_kernels.testing import BenchResult, bench

__all__ = ["moe_shapes", "run"]

logger = logging.getLogger(__name__)


def moe_shapes(quick: bool, cuda: bool) -> dict[str, Any]:
    """The benchmarked shapes: d, I, E, k, T and dtype."""
    if cuda:
        return dict(
            d=2560, inter=1664, experts=64, k=6, tokens=4096 if quick else 16384,
            dtype=torch.bfloat16,
        )  # fmt: skip
    return dict(
        d=128, inter=64, experts=16, k=4, tokens=256 if quick else 1024, dtype=torch.float32
    )


def _layer(shape: dict[str, Any], device: torch.device, seed: int):
    from .models.configuration_aria import AriaTextConfig
    from .models.modeling_aria_text import AriaMoELayer

    cfg = AriaTextConfig(
        vocab_size=128,
        hidden_size=shape["d"],
        intermediate_size=shape["inter"],
        num_hidden_layers=1,
        num_attention_heads=max(1, shape["d"] // 128),
        moe_num_experts=shape["experts"],
        moe_topk=shape["k"],
        moe_num_shared_experts=0,
    )
    layer = AriaMoELayer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():  # router (E, d): fan-in d; experts (E, in, out): fan-in `in`
            fan_in = p.shape[-1] if p.dim() == 2 else p.shape[-2]
            p.copy_(torch.randn(p.shape, generator=g) * fan_in**-0.5)
    return layer.to(device=device, dtype=shape["dtype"])


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time one Aria MoE layer: grouped GEMM against the per-expert loop and a dense MLP.

    Args:
        quick: smaller token count and fewer repetitions (CPU: a few seconds). Default True.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.

    Returns:
        :class:`BenchResult` rows: for forward and forward+backward, ``grouped[<impl>]`` vs
        ``loop`` and vs ``dense``; ``meta`` holds the shapes, dtype, FLOPs and the largest
        absolute difference between the grouped and loop outputs (a sanity check, not a test).

    Examples:
        >>> for r in run(quick=True, device="cpu"):  # doctest: +SKIP
        ...     print(r.row())
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return _run(quick, dev)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick, dev)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool, dev: torch.device) -> list[BenchResult]:
    cuda = dev.type == "cuda"
    shape = moe_shapes(quick, cuda)
    d, inter, e, k, t, dtype = (
        shape["d"], shape["inter"], shape["experts"], shape["k"], shape["tokens"], shape["dtype"],
    )  # fmt: skip
    layer = _layer(shape, dev, seed=0)
    g = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(t, d, device=dev, dtype=dtype, generator=g)
    x_req = x.clone().requires_grad_(True)
    gen_w = torch.Generator(device=dev).manual_seed(2)
    w_in = torch.randn(d, 2 * k * inter, device=dev, dtype=dtype, generator=gen_w) * d**-0.5
    w_out = (
        torch.randn(k * inter, d, device=dev, dtype=dtype, generator=gen_w) * (k * inter) ** -0.5
    )
    w_in.requires_grad_(True)
    w_out.requires_grad_(True)
    flops_fwd = 6.0 * t * k * d * inter + 2.0 * t * d * e
    flops_bwd = 3.0 * flops_fwd
    impls = ["auto", "triton"] if cuda else ["auto"]

    def moe(backend: str, impl: str, backward: bool):
        def fn():
            layer.experts_backend = backend
            layer.impl = impl
            if not backward:
                with torch.no_grad():
                    return layer(x)[0]
            layer.zero_grad(set_to_none=True)
            x_req.grad = None
            y = layer(x_req)[0]
            y.backward(torch.ones_like(y))
            return x_req.grad

        return fn

    def dense(backward: bool):
        def fn():
            if not backward:
                with torch.no_grad():
                    h = x @ w_in
                    return (torch.nn.functional.silu(h[:, : k * inter]) * h[:, k * inter :]) @ w_out
            w_in.grad = w_out.grad = x_req.grad = None
            h = x_req @ w_in
            y = (torch.nn.functional.silu(h[:, : k * inter]) * h[:, k * inter :]) @ w_out
            y.backward(torch.ones_like(y))
            return x_req.grad

        return fn

    with torch.no_grad():
        y_loop = moe("loop", "auto", False)()
        y_grp = moe("grouped", "auto", False)()
        max_diff = (y_loop.float() - y_grp.float()).abs().max().item()
    meta_base = dict(
        d=d, intermediate=inter, experts=e, top_k=k, tokens=t, dtype=str(dtype),
        max_abs_diff_grouped_vs_loop=max_diff,
    )  # fmt: skip
    warmup, rep = (2, 5) if quick else (5, 20)
    results: list[BenchResult] = []
    for backward, flops, tag in ((False, flops_fwd, "fwd"), (True, flops_bwd, "fwd+bwd")):
        for impl in impls:
            cand = moe("grouped", impl, backward)
            for base_fn, base_name in (
                (moe("loop", "auto", backward), "loop"),
                (dense(backward), "dense"),
            ):
                res = bench(
                    cand,
                    base_fn,
                    name=f"moe grouped[{impl}] {tag} T={t}",
                    baseline_name=f"{base_name} {tag}",
                    flops=flops,
                    warmup=warmup,
                    rep=rep,
                    device=dev.type,
                    meta={**meta_base, "pass": tag, "impl": impl, "flops": flops},
                )
                logger.info("%s", res.row())
                results.append(res)
    return results

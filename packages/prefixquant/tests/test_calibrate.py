"""Calibration statistics (oracle 8: prefix positions never included) and clip searches (oracle 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paperbricks.core_kernels.testing import assert_close
from paperbricks.prefixquant.calibrate import activation_quantizers, calibrate_, quantizers_enabled
from paperbricks.prefixquant.config import PrefixQuantConfig
from paperbricks.prefixquant.modules import QuantLinear, QuantRMSNorm
from paperbricks.prefixquant.mse_init import init_weight_clip_, mse_init_, search_slices
from paperbricks.prefixquant.quantize import insert_quantizers_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted():
    """A tiny Llama whose BOS token alone carries massive activations (P1's planted construction)."""
    from paperbricks.prefixquant.planted import planted_llama

    model, tok, info = planted_llama(
        seed=0, delimiter_ids=(), num_layers=2, hidden_size=64, intermediate_size=128, num_texts=40
    )
    return model, tok, info


def _windows(tok, texts, n: int, t: int) -> torch.Tensor:
    stream = []
    for s in texts:
        stream += tok(s, add_special_tokens=False)["input_ids"]
    ids = torch.tensor(stream[: n * t]).reshape(n, t)
    return ids


def _site_inputs(model: nn.Module) -> tuple[dict, list]:
    """Hooks recording, per static quantizer, the tensor it would see (full precision)."""
    rec: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, QuantRMSNorm) and mod.output_quantizer is not None:
            key = f"{name}.output_quantizer"
            handles.append(
                mod.register_forward_hook(lambda m, a, o, k=key: rec.setdefault(k, []).append(o))
            )
        if isinstance(mod, QuantLinear) and mod.input_quantizer is not None:
            key = f"{name}.input_quantizer"
            handles.append(
                mod.register_forward_pre_hook(
                    lambda m, a, k=key: rec.setdefault(k, []).append(a[0])
                )
            )
        if name.endswith("v_proj"):
            key = name.replace("v_proj", "v_quantizer")
            handles.append(
                mod.register_forward_hook(lambda m, a, o, k=key: rec.setdefault(k, []).append(o))
            )
    return rec, handles


def test_statistics_exclude_prefix_positions(planted) -> None:
    from paperbricks.prefixquant.prefix import PrefixedCausalLM, PrefixSpec

    src, tok, info = planted
    model = type(src)(src.config).eval()
    model.load_state_dict(src.state_dict())
    ids = _windows(tok, info["calibration_texts"], 3, 12)
    bos = info["bos_id"]
    assert bos not in ids  # windows are taken inside the text, no BOS
    prefixed = PrefixedCausalLM(model, PrefixSpec(ids=[bos]), cache_dtype=torch.float32)
    insert_quantizers_(model, PrefixQuantConfig.from_preset("W8A8KV8", rotate=False, stat="max"))
    calibrate_(model, ids, prefix=prefixed, progress=False)

    # Oracle: the full model on [BOS] + window, quantizers off, statistics of positions >= 1.
    rec, handles = _site_inputs(model)
    with torch.no_grad(), quantizers_enabled(model, False):
        full = torch.cat([torch.full((ids.shape[0], 1), bos), ids], dim=1)
        model(input_ids=full, use_cache=False)
    for h in handles:
        h.remove()
    gaps = []
    qs = dict(activation_quantizers(model))
    for name, xs in rec.items():
        x = torch.cat(xs)  # (N, 1 + T, C)
        real = x[:, 1:].abs().amax()
        with_prefix = x.abs().amax()
        if name.endswith("v_quantizer"):
            real = (
                x[:, 1:]
                .abs()
                .reshape(-1, qs[name].num_channels, qs[name].group_size)
                .amax(dim=(0, 2))
            )
            with_prefix = (
                x.abs().reshape(-1, qs[name].num_channels, qs[name].group_size).amax(dim=(0, 2))
            )
        assert_close(f"{name} amax", real, qs[name].amax, ratio=1e-4)
        gaps.append(float((with_prefix / real).max()))
    assert max(gaps) > 10.0  # the planted prefix would dominate if it were counted
    # K: the quantizer saw the non-prefix keys only (P keys are excluded by the attention function)
    for name, q in qs.items():
        if name.endswith("k_quantizer"):
            assert int(q.num_batches) == ids.shape[0] and bool((q.amax > 0).all())


def test_calibration_without_prefix_counts_every_position(planted) -> None:
    src, tok, info = planted
    model = type(src)(src.config).eval()
    model.load_state_dict(src.state_dict())
    ids = _windows(tok, info["calibration_texts"], 2, 10)
    insert_quantizers_(model, PrefixQuantConfig.from_preset("W8A8KV8", rotate=False, stat="max"))
    scales = calibrate_(model, ids, batch_size=2, progress=False)
    rec, handles = _site_inputs(model)
    with torch.no_grad(), quantizers_enabled(model, False):
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    qs = dict(activation_quantizers(model))
    name = "model.layers.1.mlp.down_proj.input_quantizer"
    amax = torch.cat(rec[name]).abs().amax()
    assert_close("down_proj amax", amax, qs[name].amax, ratio=1e-6)
    assert_close("down_proj scale", 2 * amax / 255, scales[name], ratio=1e-6)


def test_search_slices_never_worse_and_finds_optimum() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(16, generator=g) * 0.7 + 0.3  # per-slice optimum ratio
    base = torch.ones(16)

    def loss(s: torch.Tensor) -> torch.Tensor:
        return (s - target).square()

    current = torch.full((16,), 0.01)  # a bad start
    best, best_l, start = search_slices(
        loss, base, current, (0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
    )
    assert bool((best_l <= start).all())
    assert float((best - target).abs().max()) < 0.06  # coarse 0.1 grid + fine 0.011 steps
    # a perfect start is kept
    best2, l2, s2 = search_slices(loss, base, target.clone(), (0.25, 0.5, 1.0))
    assert torch.equal(best2, target) and torch.equal(l2, s2)


def test_weight_clip_never_worse() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        lin.weight[:, 0] *= 20  # an outlier column makes clipping pay off
    q = QuantLinear.from_linear(lin, w_bits=4)
    x = torch.randn(64, 32)
    start, best = init_weight_clip_(q, x)
    assert best <= start
    with torch.no_grad():
        err = (x @ (q.quantized_weight() - lin.weight).t()).square().mean()
    assert float(err) == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize("a_mode", ["static", "dynamic"])
def test_mse_init_searches_never_return_a_worse_loss(a_mode: str) -> None:
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing import tiny_llama_config

    torch.manual_seed(2)
    model = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=1)).eval()
    ids = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(2))
    cfg = PrefixQuantConfig.from_preset("W4A4KV4", rotate=False, a_mode=a_mode)
    insert_quantizers_(model, cfg)
    calibrate_(model, ids, progress=False)
    report = mse_init_(model, ids, cfg, progress=False)
    pairs = {k: v for k, v in report[0].items() if isinstance(v, tuple)}
    assert {
        "input_layernorm",
        "o_proj",
        "post_attention_layernorm",
        "down_proj",
        "k_cache",
        "v_cache",
    } <= set(pairs)
    for site, (start, best) in pairs.items():
        assert best <= start, site

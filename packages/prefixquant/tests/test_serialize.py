"""save_quantized / load_quantized: bit-identical round trips and clear errors on damaged directories."""

from __future__ import annotations

import json

import pytest
import torch

from paperbricks.core_kernels.testing import assert_close
from paperbricks.prefixquant.serialize import MANIFEST, WEIGHTS, load_quantized, save_quantized


def _quantized_prefixed(preset: str = "W4A8KV4", real: bool = False, **overrides):
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing.factories import tiny_llama_config
    from paperbricks.prefixquant.config import PrefixQuantConfig
    from paperbricks.prefixquant.prefix import PrefixSpec
    from paperbricks.prefixquant.quantize import quantize_

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config()).eval()
    ids = torch.randint(3, 60, (4, 16), generator=torch.Generator().manual_seed(0))
    cfg = PrefixQuantConfig.from_preset(preset, mse_init=False, **overrides)
    info = quantize_(model, cfg, calibration_ids=ids, prefix=PrefixSpec([5, 1]), progress=False)
    pm = info.prefixed
    if real:
        from paperbricks.prefixquant.real import to_real_

        with torch.no_grad():
            fake = pm(ids[:2, :10]).logits
        to_real_(pm)
        with torch.no_grad():
            assert_close(
                "real vs fake-quant logits (KV quant kept)",
                fake,
                pm(ids[:2, :10]).logits,
                ratio=1e-5,
            )
    return pm, ids[:2, :10]


@pytest.fixture(scope="module")
def w4a8():
    """One fake-quant W4A8KV4 tiny Llama with a prefix, shared read-only by the tests below."""
    return _quantized_prefixed()


@pytest.mark.parametrize(
    ("preset", "real", "mode"),
    [("W4A8KV4", False, "static"), ("W4A4KV4", True, "static"), ("W8A8KV8", True, "dynamic")],
)
def test_round_trip_bit_identical(tmp_path, w4a8, preset, real, mode):
    from paperbricks.prefixquant.prefix import PrefixedCausalLM
    from paperbricks.prefixquant.rotation import OnlineHadamard

    if preset == "W4A8KV4":
        pm, x = w4a8
    else:
        pm, x = _quantized_prefixed(preset, real, a_mode=mode)
    with torch.no_grad():
        ref = pm(x).logits
    save_quantized(pm, tmp_path / "q")
    loaded = load_quantized(tmp_path / "q")
    assert isinstance(loaded, PrefixedCausalLM)
    with torch.no_grad():
        out = loaded(x).logits
    assert torch.equal(ref, out)
    # the prefix, its fp16 cache and the exact Hadamard matrices came back
    assert loaded.prefix.ids == pm.prefix.ids
    for a, b in zip(pm.prefix_cache.layers, loaded.prefix_cache.layers, strict=True):
        assert a.keys.dtype == b.keys.dtype == torch.float16
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    src = dict(pm.model.named_modules())
    hads = [(n, m) for n, m in loaded.model.named_modules() if isinstance(m, OnlineHadamard)]
    assert len(hads) == 2 * len(loaded.model.model.layers)  # R3 per attention + R4 per down_proj
    for name, m in hads:
        assert torch.equal(m.had_k, src[name].had_k)
    assert loaded.model.prefixquant_config == pm.model.prefixquant_config
    assert torch.equal(loaded.model.pq_rotation_state.r1_signs, pm.model.pq_rotation_state.r1_signs)
    # greedy generation agrees too
    g1 = pm.generate(x[:1], max_new_tokens=4, do_sample=False)
    g2 = loaded.generate(x[:1], max_new_tokens=4, do_sample=False)
    assert torch.equal(g1, g2)


def test_plain_model_round_trip_and_overwrite(tmp_path, w4a8):
    pm, x = w4a8
    base = pm.model
    with torch.no_grad():
        ref = pm(x).logits
    save_quantized(pm, tmp_path / "q")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_quantized(pm, tmp_path / "q")
    # the bare model (no prefix cache) saves into the same dir with overwrite, loads as a model
    save_quantized(base, tmp_path / "q", overwrite=True)
    assert not (tmp_path / "q" / "prefix_cache.safetensors").exists()
    m = load_quantized(tmp_path / "q")
    assert type(m).__name__ == "LlamaForCausalLM"
    from paperbricks.prefixquant.prefix import PrefixedCausalLM

    with torch.no_grad():
        out = PrefixedCausalLM(m, m.prefixquant_prefix, prefix_cache=pm.prefix_cache)(x).logits
    assert torch.equal(ref, out)


def test_damaged_directories_give_clear_errors(tmp_path, w4a8):
    pm, _ = w4a8
    d = tmp_path / "q"
    save_quantized(pm, d)
    manifest = json.loads((d / MANIFEST).read_text())

    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_quantized(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a save_quantized output"):
        load_quantized(tmp_path)

    bad = dict(manifest, format_version=99)
    (d / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        load_quantized(d)
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_quantized(d)
    (d / MANIFEST).write_text(json.dumps(manifest))

    raw = bytearray((d / WEIGHTS).read_bytes())
    raw[-5] ^= 0xFF
    (d / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        load_quantized(d)
    (d / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors: missing"):
        load_quantized(d)


def test_missing_and_unexpected_tensors_are_named(tmp_path, w4a8):
    from safetensors.torch import load_file, save_file

    pm, _ = w4a8
    d = tmp_path / "q"
    save_quantized(pm, d)
    manifest = json.loads((d / MANIFEST).read_text())
    tensors = load_file(str(d / WEIGHTS))
    key = "model.layers.0.mlp.down_proj.input_quantizer.scale"
    assert key in tensors
    tensors["extra.tensor"] = tensors.pop(key)
    save_file(tensors, str(d / WEIGHTS))
    manifest["files"].pop(WEIGHTS)  # no digest: the structural check must catch it
    (d / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError,
        match=r"missing \['model\.layers\.0\.mlp\.down_proj\.input_quantizer\.scale'\].*unexpected \['extra\.tensor'\]",
    ):
        load_quantized(d)


def test_save_rejects_calibrating_quantizer_and_non_models(tmp_path, w4a8):
    pm, _ = w4a8
    q = pm.model.model.layers[0].mlp.down_proj.input_quantizer
    q.calibrating = True
    try:
        with pytest.raises(ValueError, match="still calibrating"):
            save_quantized(pm, tmp_path / "a")
    finally:
        q.calibrating = False
    with pytest.raises(TypeError, match="model"):
        save_quantized("not a model", tmp_path / "b")

"""PrefixQuantConfig: presets, overrides, validation, dict round trip."""

from __future__ import annotations

import json

import pytest

from paperbricks.prefixquant.config import PRESETS, PrefixQuantConfig


@pytest.mark.parametrize(
    ("name", "bits"), [("W4A4KV4", (4, 4, 4)), ("W4A8KV4", (4, 8, 4)), ("W8A8KV8", (8, 8, 8))]
)
def test_presets_bits_and_paper_defaults(name: str, bits: tuple[int, int, int]) -> None:
    cfg = PrefixQuantConfig.from_preset(name)
    assert (cfg.w_bits, cfg.a_bits, cfg.kv_bits) == bits
    assert cfg.a_mode == "static" and cfg.w_granularity == "per_channel" and cfg.kv_group == "head"
    assert (cfg.eta, cfg.quant_lr, cfg.weight_lr, cfg.v_group) == (64.0, 5e-5, 5e-6, 128)
    assert cfg.stat == "ema_compat" and cfg.clip_grad is None and cfg.count_mode == "official"


def test_from_preset_overrides_and_leaves_preset_untouched() -> None:
    cfg = PrefixQuantConfig.from_preset("W4A4KV4", epochs=20, a_mode="dynamic")
    assert cfg.epochs == 20 and cfg.a_mode == "dynamic"
    assert PRESETS["W4A4KV4"].epochs == 0 and PRESETS["W4A4KV4"].a_mode == "static"


def test_bad_preset_lists_presets() -> None:
    with pytest.raises(ValueError, match="W4A4KV4") as err:
        PrefixQuantConfig.from_preset("W3A3")
    assert "W3A3" in str(err.value) and "W8A8KV8" in str(err.value)


def test_dict_round_trip_through_json() -> None:
    cfg = PrefixQuantConfig.from_preset("W4A8KV4", clip_grad=0.3, stat="percentile")
    back = PrefixQuantConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("w_bits", 1),
        ("a_bits", 9),
        ("a_mode", "per_token"),
        ("stat", "mean"),
        ("loss", "l1"),
        ("epochs", -1),
        ("quant_lr", -1.0),
        ("clip_grad", 0.0),
        ("count_mode", "o-1"),
        ("v_group", 0),
        ("percentile", 101.0),
        ("version", 2),
    ],
)
def test_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PrefixQuantConfig(**{field: value})


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PrefixQuantConfig.from_dict({"w_bits": 4, "bogus": 1})


def test_sixteen_bits_means_not_quantized() -> None:
    cfg = PrefixQuantConfig(w_bits=16, a_bits=8, kv_bits=16)
    assert not cfg.quantize_weights and cfg.quantize_activations and not cfg.quantize_kv

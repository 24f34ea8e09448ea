"""`paperbricks aria ...` through the umbrella CLI: params, convert, bench-moe."""

from __future__ import annotations

import json

import torch

from paperbricks.aria import bench
from paperbricks.core_kernels.cli import main


def _hf_config_json(tmp_path):
    from transformers import AriaConfig

    cfg = AriaConfig(
        vision_config=dict(
            model_type="idefics3_vision", hidden_size=32, intermediate_size=40,
            num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14,
        ),
        text_config=dict(
            model_type="aria_text", vocab_size=64, hidden_size=32, intermediate_size=16,
            num_hidden_layers=2, num_attention_heads=2, moe_num_experts=4, moe_topk=2,
            moe_num_shared_experts=1,
        ),
        projector_patch_to_query_dict={4: 2, 16: 4},
    )  # fmt: skip
    path = tmp_path / "config.json"
    cfg.to_json_file(path)
    return cfg, path


def test_params_on_hf_config_json(tmp_path, capsys):
    from transformers import AriaForConditionalGeneration

    cfg, path = _hf_config_json(tmp_path)
    assert main(["aria", "params", str(path), "--activated", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        n = sum(p.numel() for p in AriaForConditionalGeneration(cfg).parameters())
    assert out["total"]["total"] == n
    assert out["activated"]["decoder"] < out["total"]["decoder"]
    assert main(["aria", "params", str(path)]) == 0
    assert f"{n:,d}" in capsys.readouterr().out


def test_params_official_config(tmp_path, capsys):
    """An official config (text model_type aria_moe_lm, moe_intermediate_size) is understood."""
    _, path = _hf_config_json(tmp_path)
    assert main(["aria", "params", str(path), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)["total"]["total"]
    data = json.loads(path.read_text())
    tc = data["text_config"]
    tc["model_type"] = "aria_moe_lm"
    tc["moe_intermediate_size"] = tc.pop("intermediate_size")
    data["vision_config"]["model_type"] = "aria_vision_model"
    (tmp_path / "official.json").write_text(json.dumps(data))
    assert main(["aria", "params", str(tmp_path / "official.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["total"] == ref


def test_params_errors(tmp_path, capsys):
    assert main(["aria", "params", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "aria_text", "moe_topk": 99, "moe_num_experts": 4}))
    assert main(["aria", "params", str(bad)]) == 2
    assert "moe_topk" in capsys.readouterr().err


def test_convert_round_trip(tmp_path, capsys):
    from transformers import AriaForConditionalGeneration

    from paperbricks.aria.convert import load_safetensors_dir

    cfg, _ = _hf_config_json(tmp_path)
    torch.manual_seed(0)
    AriaForConditionalGeneration(cfg).save_pretrained(tmp_path / "hf")
    src, off, back = tmp_path / "hf", tmp_path / "off", tmp_path / "back"
    assert main(["aria", "convert", "--from", "hf", "--to", "official", str(src), str(off)]) == 0
    assert "official" in capsys.readouterr().out
    assert main(["aria", "convert", "--from", "official", "--to", "hf", str(off), str(back)]) == 0
    a, b = load_safetensors_dir(src), load_safetensors_dir(back)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # refuses to overwrite
    assert main(["aria", "convert", "--from", "hf", "--to", "hf5", str(src), str(off)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_bench_moe_cpu(monkeypatch, capsys):
    tiny = dict(d=32, inter=16, experts=4, k=2, tokens=24, dtype=torch.float32)
    monkeypatch.setattr(bench, "moe_shapes", lambda quick, cuda: tiny)
    assert main(["aria", "bench-moe", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("moe grouped[auto]") == 4 and "loop fwd+bwd" in out and "dense fwd" in out

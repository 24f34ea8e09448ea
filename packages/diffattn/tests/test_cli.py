"""`paperbricks diffattn ...`: info, params, needle-bench, bench and convert; the package surface."""

import importlib.metadata as md
import json

import pytest
import torch

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing import BenchResult, assert_lean_import

TINY_CFG = dict(
    vocab_size=40,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_version_matches_metadata():
    import paperbricks.diffattn as pkg

    assert pkg.__version__ == md.version("paperbricks-diffattn")


def test_import_is_lean():
    assert_lean_import("paperbricks.diffattn")


def test_public_surface_resolves():
    import paperbricks.diffattn as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    assert pkg.lambda_init(0) == pytest.approx(0.2)
    assert "DiffTransformerForCausalLM" in dir(pkg)
    with pytest.raises(AttributeError):
        _ = pkg.not_a_name


def test_cli_info(capsys):
    assert main(["diffattn", "info"]) == 0
    assert "arXiv:2410.05258" in capsys.readouterr().out


@pytest.mark.parametrize(("affine", "per_layer"), [(True, 6), (False, 4)])
def test_params(tmp_path, capsys, affine, per_layer):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**TINY_CFG, "norm_affine": affine}))
    assert main(["diffattn", "params", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    d = 32 // (2 * 2)
    assert f"difference {2 * per_layer * d:,}" in out
    assert "4 heads of d=8" in out


def test_params_counts_match_real_models(tmp_path, capsys):
    from paperbricks.diffattn.models import (
        BaselineTransformerConfig,
        BaselineTransformerForCausalLM,
        DiffTransformerConfig,
        DiffTransformerForCausalLM,
    )

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY_CFG))
    main(["diffattn", "params", "--config", str(cfg)])
    out = capsys.readouterr().out
    dc = DiffTransformerConfig(**TINY_CFG)
    n_diff = sum(p.numel() for p in DiffTransformerForCausalLM(dc).parameters())
    n_base = sum(
        p.numel()
        for p in BaselineTransformerForCausalLM(
            BaselineTransformerConfig.from_diff_config(dc)
        ).parameters()
    )
    assert f"{n_diff:,} parameters" in out and f"{n_base:,} parameters" in out


def test_params_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY_CFG, "hidden_size": 30}))
    assert main(["diffattn", "params", "--config", str(bad)]) == 2
    assert "hidden_size" in capsys.readouterr().err
    assert main(["diffattn", "params", "--config", str(tmp_path / "missing.json")]) == 2


NEEDLE_ARGS = [
    "--seeds", "2", "--steps", "2", "--needles", "1,2", "--length", "16", "--hidden-size", "16",
    "--heads", "2", "--num-layers", "1", "--batch-size", "4", "--samples", "2", "--no-progress",
]  # fmt: skip


def test_needle_bench(tmp_path, capsys):
    out = tmp_path / "res.json"
    args = ["diffattn", "needle-bench", "--arch", "baseline", *NEEDLE_ARGS, "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "baseline:" in text and "answer" in text
    lines = [ln for ln in text.splitlines() if ln.startswith(("1 ", "2 "))]
    assert len(lines) == 2  # one row per N
    payload = json.loads(out.read_text())
    assert payload["arch"] == "baseline" and len(payload["runs"]) == 2
    assert [r["seed"] for r in payload["runs"]] == [0, 1]
    assert payload["budget"]["eval_needles"] == [1, 2]
    # Never overwrite without --force.
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force", "--arch", "diff"]) == 0
    assert json.loads(out.read_text())["arch"] == "diff"


def test_needle_bench_rejects_bad_sizes(capsys):
    args = ["diffattn", "needle-bench", "--arch", "diff", *NEEDLE_ARGS]
    args[args.index("--length") + 1] = "9"  # too short for N=2
    assert main(args) == 2
    assert "length" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["diffattn", "needle-bench", "--arch", "diff", "--needles", "0,x"])


def test_bench_prints_rows(monkeypatch, tmp_path, capsys):
    import paperbricks.diffattn.bench as bench_mod

    calls = {}

    def fake_run(*, quick=True, device="auto"):
        calls.update(quick=quick, device=device)
        return [BenchResult("fused fwd", "flashdiff_1", 1.0, 2.0, 2.0, "cpu (2 cores)")]

    monkeypatch.setattr(bench_mod, "run", fake_run)
    out = tmp_path / "rows.json"
    assert main(["diffattn", "bench", "--device", "cpu", "--json", str(out)]) == 0
    assert calls == {"quick": True, "device": "cpu"}
    assert "fused fwd" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["speedup"] == 2.0


def _tiny_model(layout="unilm"):
    from paperbricks.diffattn.models import DiffTransformerConfig, DiffTransformerForCausalLM

    torch.manual_seed(0)
    model = DiffTransformerForCausalLM(DiffTransformerConfig(**TINY_CFG, layout=layout)).eval()
    with torch.no_grad():  # a non-trivial γ, so that keeping it matters
        for name, p in model.named_parameters():
            if name.endswith("subln.weight"):
                p.uniform_(0.5, 1.5)
    return model


def test_convert_round_trip_preserves_logits(tmp_path, capsys):
    from paperbricks.diffattn.models import DiffTransformerForCausalLM

    src, hf, back = tmp_path / "src", tmp_path / "hf", tmp_path / "back"
    model = _tiny_model()
    model.save_pretrained(src)
    assert main(["diffattn", "convert", "--from", "unilm", "--to", "hf", str(src), str(hf)]) == 0
    assert "layout 'hf'" in capsys.readouterr().out
    converted = DiffTransformerForCausalLM.from_pretrained(str(hf)).eval()
    assert converted.config.layout == "hf" and converted.config.rope_layout == "half"
    ids = torch.randint(0, 40, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = model(ids).logits, converted(ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert main(["diffattn", "convert", "--from", "hf", "--to", "unilm", str(hf), str(back)]) == 0
    restored = DiffTransformerForCausalLM.from_pretrained(str(back))
    for k, v in model.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k


def test_convert_refuses_to_overwrite_and_wrong_layout(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tiny_model().save_pretrained(src)
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    args = ["diffattn", "convert", "--from", "unilm", "--to", "hf", str(src), str(dst)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (dst / "keep.txt").read_text() == "x"
    assert main([*args, "--force"]) == 0
    # SRC is unilm, not hf.
    assert (
        main(
            ["diffattn", "convert", "--from", "hf", "--to", "unilm", str(src), str(tmp_path / "o")]
        )
        == 2
    )
    assert "layout" in capsys.readouterr().err
    assert main(["diffattn", "convert", "--from", "hf", "--to", "hf", str(src), str(dst)]) == 2

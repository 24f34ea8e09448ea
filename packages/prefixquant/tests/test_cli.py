"""`paperbricks prefixquant` subcommands end to end on a tiny local model, and the data helpers."""

from __future__ import annotations

import json

import pytest
import torch

from paperbricks.core_kernels.cli import main
from paperbricks.core_kernels.testing.factories import tiny_tokenizer
from paperbricks.prefixquant.data import (
    calibration_windows,
    eval_windows,
    read_texts,
    synthetic_texts,
    token_stream,
)


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    """The planted-outlier tiny Llama (BOS and "." carry massive activations) saved locally."""
    from paperbricks.prefixquant.planted import planted_llama

    model, tok, info = planted_llama(seed=0, num_layers=2, hidden_size=64, intermediate_size=128)
    d = tmp_path_factory.mktemp("planted")
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    texts = d / "texts.txt"
    texts.write_text("\n\n".join(info["calibration_texts"]) + "\n")
    return d, info


def _run(capsys, *argv):
    rc = main(["prefixquant", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_find_prefix_recovers_planted_tokens(planted_dir, capsys, tmp_path):
    d, info = planted_dir
    out = tmp_path / "prefix.json"
    rc, stdout, err = _run(
        capsys, "find-prefix", "--model", str(d / "model"), "--texts", str(d / "texts.txt"),
        "--nsamples", "8", "--seqlen", "32", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert rc == 0, err
    spec = json.loads(out.read_text())
    assert spec["ids"][-1] == info["bos_id"]  # BOS appended last
    assert set(info["delimiter_ids"]) <= set(spec["ids"])  # the planted "." found
    assert str(out) in stdout


def test_quantize_then_eval_ppl_both_directories(planted_dir, capsys, tmp_path):
    d, _ = planted_dir
    q = tmp_path / "q"
    rc, stdout, err = _run(
        capsys, "quantize", "--model", str(d / "model"), "--preset", "W8A8KV8", "--out", str(q),
        "--texts", str(d / "texts.txt"), "--nsamples", "4", "--seqlen", "32", "--real",
        "--no-mse-init", "--no-progress",
    )  # fmt: skip
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["real"] is True and summary["prefix"]
    assert (q / "prefixquant_config.json").is_file() and (q / "prefix_cache.safetensors").is_file()
    manifest = json.loads((q / "prefixquant_config.json").read_text())
    assert any(m["class"] == "W8A8Linear" for m in manifest["modules"].values())

    ppl = {}
    for name, path in (("fp", d / "model"), ("q", q)):
        rc, stdout, err = _run(
            capsys, "eval-ppl", "--model", str(path), "--texts", str(d / "texts.txt"),
            "--seqlen", "32", "--max-windows", "4", "--no-progress",
        )  # fmt: skip
        assert rc == 0, err
        res = json.loads(stdout)
        assert res["windows"] == 4 and res["tokens"] > 0
        ppl[name] = res["ppl"]
    assert all(torch.isfinite(torch.tensor(v)) and v > 1 for v in ppl.values())

    # --out is not silently overwritten
    rc, _, err = _run(
        capsys, "quantize", "--model", str(d / "model"), "--preset", "W8A8KV8", "--out", str(q),
        "--synthetic", "--no-progress",
    )  # fmt: skip
    assert rc == 2 and "--overwrite" in err


def test_cli_errors_are_clear(planted_dir, capsys, tmp_path):
    d, _ = planted_dir
    model = str(d / "model")
    texts = str(d / "texts.txt")
    cases = [
        (("find-prefix", "--model", str(tmp_path / "missing"), "--texts", texts), "no such directory"),
        (("find-prefix", "--model", model, "--texts", str(tmp_path / "none.txt")), "no such file"),
        (("quantize", "--model", model, "--preset", "W3A3", "--out", str(tmp_path / "o"), "--texts", texts), "W4A4KV4"),
        (("quantize", "--model", model, "--preset", "W8A8KV8", "--out", str(tmp_path / "o")), "--synthetic"),
        (("eval-ppl", "--model", str(tmp_path), "--texts", texts), "config.json"),
    ]  # fmt: skip
    for argv, needle in cases:
        rc, _, err = _run(capsys, *argv, "--no-progress")
        assert rc == 2, argv
        assert needle in err, (argv, err)


def test_non_llama_model_is_refused(capsys, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=66)).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    texts = tmp_path / "t.txt"
    texts.write_text("\n\n".join(synthetic_texts(8)))
    rc, _, err = _run(
        capsys, "quantize", "--model", str(d), "--preset", "W8A8KV8", "--out", str(tmp_path / "o"),
        "--texts", str(texts), "--nsamples", "2", "--seqlen", "16", "--no-progress",
    )  # fmt: skip
    assert rc == 2 and "quantize" in err


def test_bench_subcommand(capsys, monkeypatch):
    from paperbricks.prefixquant import bench

    monkeypatch.setattr(bench, "bench_shapes", lambda quick, cuda: [(16, 32, 24)])
    rc, stdout, err = _run(capsys, "bench", "--device", "cpu")
    assert rc == 0, err
    assert stdout.count("W8A8 static 16x32->24") == 2 and "W8A8 dynamic per-token" in stdout


# ----------------------------------------------------------------------------- data.py


def test_read_texts_splits_and_errors(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first doc\nline two\n\n\nsecond doc\n")
    assert read_texts(f) == ["first doc\nline two", "second doc"]
    assert read_texts(f, split="line") == ["first doc", "line two", "second doc"]
    assert read_texts(f, split="file") == ["first doc\nline two\n\n\nsecond doc"]
    (tmp_path / "b.txt").write_text("third\n")
    assert read_texts(tmp_path) == ["first doc\nline two", "second doc", "third"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_texts(tmp_path / "x.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="contains no text"):
        read_texts(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="split"):
        read_texts(f, split="words")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_texts(tmp_path / "bin.txt")


def test_windows_are_slices_of_the_stream():
    tok = tiny_tokenizer()
    texts = synthetic_texts(6, seed=3)
    stream = token_stream(texts, tok)
    assert stream.dtype == torch.long and tok.bos_token_id not in stream.tolist()
    ev = eval_windows(texts, tok, 16)
    assert ev.shape == (stream.numel() // 16, 16)
    assert torch.equal(ev.flatten(), stream[: ev.numel()])
    assert eval_windows(texts, tok, 16, max_windows=2).shape == (2, 16)
    cal = calibration_windows(texts, tok, 5, 16, seed=1)
    assert cal.shape == (5, 16)
    assert torch.equal(cal, calibration_windows(texts, tok, 5, 16, seed=1))  # seeded
    s = stream.tolist()
    for row in cal.tolist():  # every window is a contiguous slice of the stream
        assert any(s[i : i + 16] == row for i in range(len(s) - 15))
    with pytest.raises(ValueError, match="fewer than one window"):
        eval_windows(texts, tok, 10_000)
    with pytest.raises(ValueError, match="nsamples"):
        calibration_windows(texts, tok, 0, 16)
    with pytest.raises(ValueError, match="texts"):
        token_stream("just a string", tok)


def test_synthetic_texts_are_seeded_and_in_vocabulary():
    a, b = synthetic_texts(4, seed=2), synthetic_texts(4, seed=2)
    assert a == b and len(a) == 4 and a != synthetic_texts(4, seed=3)
    tok = tiny_tokenizer()
    ids = token_stream(a, tok).tolist()
    assert tok.unk_token_id not in ids


def test_public_surface_resolves_lazily():
    import paperbricks.prefixquant as pkg

    assert len(pkg.__all__) == len(set(pkg.__all__))
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    assert pkg.to_real_.__module__ == "paperbricks.prefixquant.real"
    assert pkg.calibration_windows is calibration_windows  # data.py's text-level helper
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = pkg.no_such_name

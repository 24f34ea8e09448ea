"""`paperbricks pixtral ...` commands: tokens, eval (scripted backends), bench."""

import json

from PIL import Image

from paperbricks.core_kernels.cli import main


def test_tokens_1024_square(capsys):
    assert main(["pixtral", "tokens", "--width", "1024", "--height", "1024"]) == 0
    out = capsys.readouterr().out
    assert "4160 tokens" in out and "4096 [IMG]" in out and "63 [IMG_BREAK]" in out


def test_tokens_rounding_divergence(capsys):
    assert main(["pixtral", "tokens", "--width", "3072", "--height", "2306"]) == 0
    assert "3185 tokens" in capsys.readouterr().out
    assert (
        main(["pixtral", "tokens", "--width", "3072", "--height", "2306", "--rounding", "hf"]) == 0
    )
    assert "3120 tokens" in capsys.readouterr().out


def test_tokens_bad_size_is_a_clear_error(capsys):
    assert main(["pixtral", "tokens", "--width", "0", "--height", "5"]) == 2
    assert "width" in capsys.readouterr().err


def test_eval_relaxed_with_scripted_backend(tmp_path, capsys):
    rows = [{"question": "Peak value?", "answer": "0.45"}, {"question": "Max?", "answer": "12"}]
    (tmp_path / "questions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps(["Thinking.\nFinal Answer: 45%", "It is 12 I guess"]))
    argv = ["pixtral", "eval", "--task", "relaxed", "--data", str(tmp_path)]
    assert main([*argv, "--endpoint", f"scripted:{replies}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["explicit"] == 0.5 and out["anywhere"] == 1.0 and out["n"] == 2


def test_eval_mm_mt_bench_with_scripted_model_and_judge(tmp_path, capsys):
    Image.new("RGB", (20, 10)).save(tmp_path / "x.png")
    conv = {
        "id": "1",
        "category": "c",
        "images": ["x.png"],
        "turns": [{"user": "Hi?", "reference": "Hello"}],
    }
    (tmp_path / "conversations.json").write_text(json.dumps([conv]))
    (tmp_path / "m.json").write_text(json.dumps(["Hello"]))
    (tmp_path / "j.json").write_text(json.dumps(["Fine. [[8]]"]))
    argv = ["pixtral", "eval", "--task", "mm-mt-bench", "--data", str(tmp_path)]
    argv += ["--endpoint", f"scripted:{tmp_path / 'm.json'}"]
    assert main([*argv, "--judge-endpoint", f"scripted:{tmp_path / 'j.json'}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["micro"] == 8.0 and out["per_turn"] == {"1": 8.0}
    assert main(argv) == 2  # no judge
    assert "--judge-endpoint" in capsys.readouterr().err


def test_eval_http_endpoint_needs_model(tmp_path, capsys):
    (tmp_path / "questions.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}))
    argv = ["pixtral", "eval", "--task", "vqa", "--data", str(tmp_path)]
    assert main([*argv, "--endpoint", "http://127.0.0.1:9/v1"]) == 2
    assert "--model" in capsys.readouterr().err


def test_bench_quick(capsys):
    assert main(["pixtral", "bench", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "sdpa dense block mask" in out and "peak memory (analytic)" in out

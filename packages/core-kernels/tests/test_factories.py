"""Tests of the tiny offline factories (tiny_llama_config, tiny_tokenizer, synthetic_text)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from paperbricks.core_kernels.testing.factories import (
    TINY_CHAT_TEMPLATE,
    TINY_SPECIAL_TOKENS,
    TINY_VOCAB_SIZE,
    TINY_WORDS,
    synthetic_text,
    tiny_llama_config,
    tiny_tokenizer,
)


def test_tiny_llama_config_defaults_and_overrides():
    from transformers import LlamaConfig

    cfg = tiny_llama_config()
    assert isinstance(cfg, LlamaConfig)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (32, 2, TINY_VOCAB_SIZE)
    assert cfg.vocab_size < 100
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    assert not cfg.tie_word_embeddings
    assert tiny_llama_config(num_hidden_layers=1, hidden_size=64).num_hidden_layers == 1
    assert tiny_llama_config(attn_implementation="eager")._attn_implementation == "eager"
    with pytest.raises(TypeError, match="hiden_size"):
        tiny_llama_config(hiden_size=64)


def test_tiny_llama_builds_runs_and_round_trips(tmp_path, seeded):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config()).eval()
    assert sum(p.numel() for p in model.parameters()) < 100_000
    ids = torch.randint(0, TINY_VOCAB_SIZE, (2, 7))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 7, TINY_VOCAB_SIZE)
    assert torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    again = LlamaForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, logits)


def test_tiny_tokenizer_ids_specials_and_round_trip():
    tok = tiny_tokenizer()
    assert len(tok) == TINY_VOCAB_SIZE
    assert [tok.convert_ids_to_tokens(i) for i in range(len(TINY_SPECIAL_TOKENS))] == list(
        TINY_SPECIAL_TOKENS
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_tokens_to_ids(TINY_WORDS[0]) == len(TINY_SPECIAL_TOKENS)
    ids = tok.encode("the red cat moves up .", add_special_tokens=False)
    assert ids == [
        len(TINY_SPECIAL_TOKENS) + TINY_WORDS.index(w)
        for w in ["the", "red", "cat", "moves", "up", "."]
    ]
    assert tok.decode(ids) == "the red cat moves up ."
    # punctuation is isolated, unknown words become <unk>, special tokens are never split
    assert tok.convert_ids_to_tokens(tok.encode('{"move":up}', add_special_tokens=False)) == [
        "{",
        '"',
        "move",
        '"',
        ":",
        "up",
        "}",
    ]
    assert tok.encode("zebra cat", add_special_tokens=False) == [
        3,
        tok.convert_tokens_to_ids("cat"),
    ]
    assert tok.encode("<|user|>cat", add_special_tokens=False) == [
        5,
        tok.convert_tokens_to_ids("cat"),
    ]


def test_tiny_tokenizer_chat_template_and_save_load(tmp_path):
    from transformers import AutoTokenizer

    tok = tiny_tokenizer()
    msgs = [{"role": "system", "content": "answer yes"}, {"role": "user", "content": "move ?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<s><|system|> answer yes </s> <|user|> move ? </s> <|assistant|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert tok.unk_token_id not in ids
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.chat_template == TINY_CHAT_TEMPLATE
    assert loaded.encode(text, add_special_tokens=False) == ids
    assert loaded.eos_token_id == 2
    assert tiny_tokenizer(chat_template=None).chat_template is None


def test_tiny_tokenizer_custom_vocab_and_errors():
    tok = tiny_tokenizer(["alpha", "beta"], ["<pad>", "<s>", "</s>", "<unk>"])
    assert len(tok) == 6
    assert tok.encode("beta alpha gamma", add_special_tokens=False) == [5, 4, 3]
    with pytest.raises(ValueError, match="missing"):
        tiny_tokenizer(["a"], ["<pad>", "<s>", "</s>"])
    with pytest.raises(ValueError, match="duplicate"):
        tiny_tokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match=r"vocab\[1\]"):
        tiny_tokenizer(["a", "b c"])


def test_synthetic_text_is_seeded_and_in_vocabulary():
    a = synthetic_text(50, seed=3)
    assert len(a) == 50
    assert a == synthetic_text(50, seed=3)
    assert a != synthetic_text(50, seed=4)
    assert synthetic_text(0) == []
    tok = tiny_tokenizer()
    for sentence in a:
        words = sentence.split(" ")
        assert 4 <= len(words) <= 12
        assert set(words) <= set(TINY_WORDS)
        assert words[-1] in {".", "!", "?"}
        ids = tok.encode(sentence, add_special_tokens=False)
        assert tok.unk_token_id not in ids and len(ids) == len(words)
    short = synthetic_text(20, seed=0, min_words=2, max_words=3)
    assert all(2 <= len(s.split()) <= 3 for s in short)


def test_synthetic_text_does_not_touch_global_rng():
    import random

    state = random.getstate()
    synthetic_text(5, seed=1)
    assert random.getstate() == state


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"n": -1}, ValueError),
        ({"n": 2, "seed": "x"}, TypeError),
        ({"n": 2, "min_words": 5, "max_words": 4}, ValueError),
    ],
)
def test_synthetic_text_validation(kwargs, exc):
    with pytest.raises(exc):
        synthetic_text(**kwargs)


def test_import_factories_does_not_load_transformers():
    code = (
        "import sys, json; import paperbricks.core_kernels.testing.factories; "
        "print(json.dumps({k: k in sys.modules for k in ('transformers', 'tokenizers', 'triton')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "transformers": False,
        "tokenizers": False,
        "triton": False,
    }

"""Tests of the chat backends (llm): a real local HTTP server, a tiny random Llama, scripts."""

from __future__ import annotations

import email.utils
import json
import math
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from paperbricks.core_kernels.llm import (
    ChatBackend,
    ChatBackendError,
    ChatResult,
    FormatRetriesExhausted,
    OpenAICompatBackend,
    ScoringBackend,
    ScriptedBackend,
    ScriptExhaustedError,
    TransformersBackend,
    backend_from_spec,
    extract_json,
    score_choices,
    with_format_retries,
)
from paperbricks.core_kernels.llm.openai_compat import _parse_retry_after
from paperbricks.core_kernels.testing import assert_close, assert_lean_import, requires_cuda
from paperbricks.core_kernels.testing.factories import tiny_llama_config, tiny_tokenizer

MSGS = [
    {"role": "system", "content": "You are a grid agent."},
    {"role": "user", "content": "move ?"},
]

# ---------------------------------------------------------------------------------------------
# A real HTTP server on 127.0.0.1:0 that replays scripted responses and records requests.
# ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def ok_body(text: str = "go up", finish: str = "stop") -> dict:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }


class StubServer:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with stub.lock:
                    stub.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers.items()),
                            "body": json.loads(raw),
                        }
                    )
                    reply = (
                        stub.replies.pop(0)
                        if stub.replies
                        else Reply(500, "no scripted reply left")
                    )
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                body = reply.body
                if isinstance(body, dict):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = StubServer()
    yield s
    s.close()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_backend(server: StubServer, **kw) -> tuple[OpenAICompatBackend, Sleeps]:
    sleeps = Sleeps()
    kw.setdefault("backoff_s", 0.25)
    return OpenAICompatBackend(server.url, "tiny-model", sleep=sleeps, **kw), sleeps


def test_openai_success_sends_expected_body_and_headers(server, monkeypatch):
    monkeypatch.setenv("PB_TEST_API_KEY", "sk-test-123")
    server.replies = [Reply(200, ok_body("go up"))]
    backend, sleeps = make_backend(server, api_key_env="PB_TEST_API_KEY")
    result = backend.chat(MSGS, max_tokens=7, temperature=0.5)
    assert result == ChatResult(
        "go up",
        "stop",
        {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        raw=ok_body("go up"),
    )
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test-123"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["body"] == {
        "model": "tiny-model",
        "messages": MSGS,
        "max_tokens": 7,
        "temperature": 0.5,
    }
    assert sleeps == []
    assert "sk-test" not in repr(backend)
    assert isinstance(backend, ChatBackend)


def test_openai_no_key_env_sends_no_authorization(server):
    server.replies = [Reply(200, ok_body())]
    backend, _ = make_backend(server)
    backend.chat(MSGS, max_tokens=3)
    assert "Authorization" not in server.requests[0]["headers"]


def test_openai_forwards_stop_seed_and_json_mode(server):
    server.replies = [Reply(200, ok_body('{"a": 1}')), Reply(200, ok_body())]
    backend, _ = make_backend(server)
    backend.chat(MSGS, max_tokens=5, stop=["\n", "END"], seed=7, json_mode=True)
    backend.chat(MSGS, max_tokens=5, stop="END")
    first, second = (r["body"] for r in server.requests)
    assert first["stop"] == ["\n", "END"]
    assert first["seed"] == 7
    assert first["response_format"] == {"type": "json_object"}
    assert second["stop"] == ["END"]
    assert "seed" not in second and "response_format" not in second


IMAGE_MSGS = [
    {"role": "system", "content": "Answer briefly."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What colour is the square?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    },
]


def test_openai_forwards_image_parts_unchanged(server):
    """Vision-language models behind an OpenAI-compatible server get OpenAI-style parts."""
    server.replies = [Reply(200, ok_body("red"))]
    backend, _ = make_backend(server)
    assert backend.chat(IMAGE_MSGS, max_tokens=3).text == "red"
    assert server.requests[0]["body"]["messages"] == IMAGE_MSGS


def test_text_only_helpers_and_scripted_backend_with_images():
    from paperbricks.core_kernels.llm import content_text, text_only

    assert content_text(IMAGE_MSGS[1]["content"]) == "What colour is the square?\n<image>"
    with pytest.raises(ValueError, match="text-only"):
        text_only(IMAGE_MSGS, "SomeBackend")
    joined = text_only(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        "B",
    )
    assert joined == [{"role": "user", "content": "a\nb"}]
    scripted = ScriptedBackend(["red"])
    assert scripted.chat(IMAGE_MSGS, max_tokens=3).text == "red"
    assert scripted.requests[0].messages == IMAGE_MSGS


def test_openai_retries_after_500_then_succeeds(server):
    server.replies = [Reply(500, "upstream exploded"), Reply(200, ok_body("fine"))]
    backend, sleeps = make_backend(server, max_retries=3)
    assert backend.chat(MSGS, max_tokens=3).text == "fine"
    assert len(server.requests) == 2
    assert sleeps == [0.25]
    assert server.requests[0]["body"] == server.requests[1]["body"]


def test_openai_backoff_is_exponential_and_capped(server):
    server.replies = [Reply(503), Reply(502), Reply(500), Reply(200, ok_body("ok"))]
    backend, sleeps = make_backend(server, max_retries=3, backoff_s=0.5, max_backoff_s=1.5)
    assert backend.chat(MSGS, max_tokens=3).text == "ok"
    assert sleeps == [0.5, 1.0, 1.5]


def test_openai_429_honours_retry_after(server):
    server.replies = [Reply(429, "slow down", {"Retry-After": "2"}), Reply(200, ok_body("ok"))]
    backend, sleeps = make_backend(server)
    assert backend.chat(MSGS, max_tokens=3).text == "ok"
    assert sleeps == [2.0]


def test_parse_retry_after_forms():
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("-4") == 0.0
    assert _parse_retry_after("soon") is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert _parse_retry_after(when) == pytest.approx(30, abs=2)


def test_openai_400_is_not_retried(server):
    server.replies = [Reply(400, '{"error": "max_tokens too large"}'), Reply(200, ok_body())]
    backend, sleeps = make_backend(server)
    with pytest.raises(ChatBackendError, match=r"chat/completions.*HTTP 400.*max_tokens too large"):
        backend.chat(MSGS, max_tokens=3)
    assert len(server.requests) == 1
    assert sleeps == []


def test_openai_gives_up_after_max_retries(server):
    server.replies = [Reply(500, "boom")] * 3
    backend, sleeps = make_backend(server, max_retries=2)
    with pytest.raises(ChatBackendError, match=r"after 3 attempt\(s\).*HTTP 500.*boom"):
        backend.chat(MSGS, max_tokens=3)
    assert len(server.requests) == 3
    assert sleeps == [0.25, 0.5]


def test_openai_timeout_is_retried_a_bounded_number_of_times(server):
    server.replies = [Reply(200, ok_body(), delay_s=1.0), Reply(200, ok_body(), delay_s=1.0)]
    backend, sleeps = make_backend(server, timeout_s=0.2, max_retries=1)
    start = time.perf_counter()
    with pytest.raises(ChatBackendError, match=r"after 2 attempt\(s\).*(?i:timed out|timeout)"):
        backend.chat(MSGS, max_tokens=3)
    assert time.perf_counter() - start < 5.0  # two 0.2 s timeouts, not two 1 s replies
    assert len(server.requests) == 2
    assert sleeps == [0.25]


def test_openai_connection_refused_is_retried(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    backend = OpenAICompatBackend(
        f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_s=0.1, sleep=sleeps
    )
    with pytest.raises(ChatBackendError, match=r"after 3 attempt\(s\).*URLError"):
        backend.chat(MSGS, max_tokens=3)
    assert sleeps == [0.1, 0.2]


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("this is <html> not json", r"not valid JSON.*this is <html> not json"),
        ({"object": "error", "detail": "oops"}, r"no 'choices' list.*oops"),
        ({"choices": []}, r"no 'choices' list"),
        ({"choices": [{"text": "legacy completion"}]}, r"no 'message' object.*legacy completion"),
    ],
)
def test_openai_bad_response_gives_clear_error(server, body, pattern):
    server.replies = [Reply(200, body)]
    backend, sleeps = make_backend(server)
    with pytest.raises(ChatBackendError, match=pattern) as info:
        backend.chat(MSGS, max_tokens=3)
    assert server.url + "/chat/completions" in str(info.value)
    assert sleeps == []


def test_openai_missing_key_variable_is_an_error(monkeypatch):
    monkeypatch.delenv("PB_UNSET_KEY", raising=False)
    with pytest.raises(ValueError, match="PB_UNSET_KEY"):
        OpenAICompatBackend("http://127.0.0.1:1/v1", "m", api_key_env="PB_UNSET_KEY")


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"base_url": "127.0.0.1:8000"}, ValueError, "base_url"),
        ({"model": ""}, ValueError, "model"),
        ({"timeout_s": 0}, ValueError, "timeout_s"),
        ({"max_retries": -1}, ValueError, "max_retries"),
    ],
)
def test_openai_constructor_validation(kwargs, exc, pattern):
    args = {"base_url": "http://127.0.0.1:1/v1", "model": "m"} | kwargs
    with pytest.raises(exc, match=pattern):
        OpenAICompatBackend(**args)


@pytest.mark.parametrize(
    ("messages", "kwargs", "exc", "pattern"),
    [
        ([], {}, ValueError, "messages"),
        ("hello", {}, TypeError, "messages"),
        ([{"role": "robot", "content": "x"}], {}, ValueError, r"messages\[0\]\['role'\]"),
        ([{"role": "user", "content": 3}], {}, TypeError, r"messages\[0\]\['content'\]"),
        ([{"role": "user", "content": []}], {}, TypeError, r"messages\[0\]\['content'\]"),
        ([{"role": "user", "content": [{"type": "audio"}]}], {}, ValueError, r"\['content'\]\[0\]"),
        (
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            {},
            TypeError,
            r"\['text'\]",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            {},
            ValueError,
            r"\['image_url'\]",
        ),
        (MSGS, {"max_tokens": 0}, ValueError, "max_tokens"),
        (MSGS, {"temperature": -0.1}, ValueError, "temperature"),
        (MSGS, {"temperature": math.nan}, ValueError, "temperature"),
        (MSGS, {"stop": [""]}, ValueError, r"stop\[0\]"),
        (MSGS, {"seed": 1.5}, TypeError, "seed"),
        (MSGS, {"json_mode": 1}, TypeError, "json_mode"),
    ],
)
def test_chat_argument_validation(messages, kwargs, exc, pattern):
    args = {"max_tokens": 4} | kwargs
    backend = OpenAICompatBackend("http://127.0.0.1:1/v1", "m", max_retries=0)
    with pytest.raises(exc, match=pattern):
        backend.chat(messages, **args)
    with pytest.raises(exc, match=pattern):
        ScriptedBackend(["x"]).chat(messages, **args)


def test_openai_extra_body_is_merged_but_cannot_override(server):
    server.replies = [Reply(200, ok_body())]
    backend, _ = make_backend(server, extra_body={"top_p": 0.9})
    backend.chat(MSGS, max_tokens=2)
    assert server.requests[0]["body"]["top_p"] == 0.9
    clash, _ = make_backend(server, extra_body={"model": "other"})
    with pytest.raises(ValueError, match="extra_body"):
        clash.chat(MSGS, max_tokens=2)


# ---------------------------------------------------------------------------------------------
# ScriptedBackend, score_choices dispatch, spec strings
# ---------------------------------------------------------------------------------------------


def test_scripted_replies_in_order_records_and_raises_when_exhausted():
    b = ScriptedBackend(["one", ChatResult("two", "length", {"completion_tokens": 5})])
    assert isinstance(b, ChatBackend)
    r1 = b.chat(MSGS, max_tokens=4, seed=3, stop="\n")
    r2 = b.chat([*MSGS, {"role": "assistant", "content": "one"}], max_tokens=9, temperature=0.7)
    assert (r1.text, r1.finish_reason) == ("one", "stop")
    assert r2 == ChatResult("two", "length", {"completion_tokens": 5})
    assert [r.max_tokens for r in b.requests] == [4, 9]
    assert b.requests[0].seed == 3 and b.requests[0].stop == ["\n"]
    assert b.requests[1].messages[-1] == {"role": "assistant", "content": "one"}
    assert b.remaining == 0
    with pytest.raises(ScriptExhaustedError, match="exhausted after 2 replies"):
        b.chat(MSGS, max_tokens=4)


def test_scripted_requests_are_copies():
    msgs = [{"role": "user", "content": "a"}]
    b = ScriptedBackend(["x"])
    b.chat(msgs, max_tokens=1)
    msgs[0]["content"] = "mutated"
    assert b.requests[0].messages[0]["content"] == "a"


def test_scripted_function_sees_messages_and_request():
    b = ScriptedBackend(lambda msgs, req: f"{len(msgs)}:{req.max_tokens}:{req.json_mode}")
    assert b.chat(MSGS, max_tokens=3, json_mode=True).text == "2:3:True"
    assert b.remaining is None


def test_score_choices_refuses_backends_that_cannot_score():
    with pytest.raises(TypeError, match="OpenAICompatBackend cannot score"):
        score_choices(OpenAICompatBackend("http://127.0.0.1:1/v1", "m"), MSGS, ["a"])
    with pytest.raises(TypeError, match="ScriptedBackend cannot score"):
        score_choices(ScriptedBackend(["x"]), MSGS, ["a"])
    scorer = ScriptedBackend([], score_fn=lambda m, cs: [float(len(c)) for c in cs])
    assert score_choices(scorer, MSGS, ["ab", "c"]) == [2.0, 1.0]
    with pytest.raises(ValueError, match="candidates"):
        score_choices(scorer, MSGS, [])
    with pytest.raises(ValueError, match=r"candidates\[1\]"):
        score_choices(scorer, MSGS, ["a", ""])


def test_backend_from_spec_forms(tmp_path):
    b = backend_from_spec("openai@http://127.0.0.1:9/v1#org/model#v2", timeout_s=5)
    assert isinstance(b, OpenAICompatBackend)
    assert (b.url, b.model, b.timeout_s) == (
        "http://127.0.0.1:9/v1/chat/completions",
        "org/model#v2",
        5.0,
    )

    f = tmp_path / "script.json"
    f.write_text(json.dumps(["first", {"text": "second", "finish_reason": "length"}]))
    s = backend_from_spec(f"scripted:{f}")
    assert s.chat(MSGS, max_tokens=2).text == "first"
    assert s.chat(MSGS, max_tokens=2).finish_reason == "length"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="JSON list"):
        backend_from_spec(f"scripted:{bad}")
    with pytest.raises(FileNotFoundError):
        backend_from_spec(f"scripted:{tmp_path / 'missing.json'}")
    with pytest.raises(ValueError, match="openai@URL#model"):
        backend_from_spec("openai@http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="expected"):
        backend_from_spec("anthropic:claude")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        backend_from_spec(f"hf:{tmp_path / 'no-such-model'}")


# ---------------------------------------------------------------------------------------------
# extract_json and with_format_retries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        (
            'Sure!\n```json\n{"action": "up", "n": [1, 2]}\n```\nDone.',
            {"action": "up", "n": [1, 2]},
        ),
        ('```\n[{"x": null}]\n```', [{"x": None}]),
        ('see [1] then ```json\n{"b": 2}\n```', {"b": 2}),
        ('The move is {"dir": "left"} and then {"dir": "up"}.', {"dir": "left"}),
        ('[sic] {broken} {"k": "}{ braces in strings ]["}', {"k": "}{ braces in strings ]["}),
        ('answer: [1, 2, 3] or {"a": 1}', [1, 2, 3]),
        ('nested {"a": {"b": [1, {"c": true}]}} tail', {"a": {"b": [1, {"c": True}]}}),
        ('```json\nnot json\n```\n{"fallback": 1}', {"fallback": 1}),
    ],
)
def test_extract_json_finds_first_object_or_array(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["no json here", "42", '"a string"', "{unclosed", ""])
def test_extract_json_raises_when_nothing_parses(text):
    with pytest.raises(ValueError, match="no JSON object or array"):
        extract_json(text)


def test_extract_json_type_error():
    with pytest.raises(TypeError, match="text"):
        extract_json(b'{"a": 1}')


def _parse_move(text: str) -> str:
    obj = extract_json(text)
    if not isinstance(obj, dict) or obj.get("move") not in ("up", "down"):
        raise ValueError("expected a JSON object with 'move' set to 'up' or 'down'")
    return obj["move"]


def test_with_format_retries_feeds_error_back_and_succeeds():
    inner = ScriptedBackend(
        [
            ChatResult("I would go left", "stop", {"completion_tokens": 4, "total_tokens": 10}),
            ChatResult(
                '{"move": "sideways"}', "stop", {"completion_tokens": 5, "total_tokens": 12}
            ),
            ChatResult(
                '```json\n{"move": "up"}\n```', "stop", {"completion_tokens": 6, "total_tokens": 14}
            ),
        ]
    )
    wrapped = with_format_retries(inner, _parse_move, retries=3)
    value, result = wrapped.chat_parsed(MSGS, max_tokens=16, seed=1)
    assert value == "up"
    assert result.text == '```json\n{"move": "up"}\n```'
    assert result.usage == {"completion_tokens": 15, "total_tokens": 36}
    assert len(inner.requests) == 3
    third = inner.requests[2].messages
    assert third[: len(MSGS)] == MSGS
    assert [m["role"] for m in third[len(MSGS) :]] == ["assistant", "user", "assistant", "user"]
    assert third[2]["content"] == "I would go left"
    assert "no JSON object or array" in third[3]["content"]
    assert "'move' set to 'up' or 'down'" in third[5]["content"]
    assert all(r.seed == 1 and r.max_tokens == 16 for r in inner.requests)


def test_with_format_retries_gives_up_after_retries():
    inner = ScriptedBackend(["nope", "still nope", "never called"])
    wrapped = with_format_retries(inner, _parse_move, retries=1)
    with pytest.raises(FormatRetriesExhausted, match=r"after 2 attempt\(s\).*still nope") as info:
        wrapped.chat(MSGS, max_tokens=8)
    assert len(info.value.attempts) == 2 and len(info.value.errors) == 2
    assert inner.remaining == 1


def test_with_format_retries_propagates_other_exceptions():
    def validate(text: str) -> None:
        raise RuntimeError("validator bug")

    inner = ScriptedBackend(["a", "b"])
    with pytest.raises(RuntimeError, match="validator bug"):
        with_format_retries(inner, validate).chat(MSGS, max_tokens=2)
    assert len(inner.requests) == 1


# ---------------------------------------------------------------------------------------------
# TransformersBackend on a tiny random Llama saved to disk
# ---------------------------------------------------------------------------------------------


def _tiny_model(seed: int = 0):
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny_model(0).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return path


@pytest.fixture(scope="module")
def backend(model_dir):
    return TransformersBackend(str(model_dir))


def test_transformers_backend_refuses_image_parts(backend):
    with pytest.raises(ValueError, match="TransformersBackend is text-only"):
        backend.chat(IMAGE_MSGS, max_tokens=2)


def test_transformers_greedy_is_deterministic_and_matches_hf_generate(backend):
    r1 = backend.chat(MSGS, max_tokens=8)
    r2 = backend.chat(MSGS, max_tokens=8)
    assert r1 == r2
    assert isinstance(backend, ScoringBackend)
    prompt_ids = backend.tokenizer.encode(backend.render_prompt(MSGS), add_special_tokens=False)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = backend.model.generate(
            ids,
            do_sample=False,
            max_new_tokens=8,
            eos_token_id=2,
            pad_token_id=0,
            attention_mask=torch.ones_like(ids),
        )
    new = out[0, ids.shape[1] :].tolist()
    if 2 in new:
        new = new[: new.index(2)]
        assert r1.finish_reason == "stop"
    else:
        assert r1.finish_reason == "length"
    assert r1.raw["token_ids"] == new
    assert r1.text == backend.tokenizer.decode(new, skip_special_tokens=True)
    assert r1.usage == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": len(new),
        "total_tokens": len(prompt_ids) + len(new),
    }


def test_transformers_loaded_weights_equal_saved(backend):
    reference = _tiny_model(0)
    for (name, p), (_, q) in zip(
        reference.named_parameters(), backend.model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name


def test_transformers_uses_chat_template_or_plain_fallback(backend):
    tok = tiny_tokenizer()
    expected = tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    assert backend.has_chat_template
    assert backend.render_prompt(MSGS) == expected
    assert expected == "<s><|system|> You are a grid agent. </s> <|user|> move ? </s> <|assistant|>"
    plain = TransformersBackend(backend.model, tiny_tokenizer(chat_template=None))
    assert not plain.has_chat_template
    assert plain.render_prompt(MSGS) == "system: You are a grid agent.\nuser: move ?\nassistant:"
    assert plain.chat(MSGS, max_tokens=2).raw["prompt"].endswith("assistant:")


def test_transformers_sampling_is_seeded(backend):
    a = backend.chat(MSGS, max_tokens=10, temperature=1.0, seed=1)
    b = backend.chat(MSGS, max_tokens=10, temperature=1.0, seed=1)
    c = backend.chat(MSGS, max_tokens=10, temperature=1.0, seed=2)
    assert a == b
    assert a.raw["token_ids"] != c.raw["token_ids"]
    # At a vanishing temperature, sampling collapses onto the greedy path.
    cold = backend.chat(MSGS, max_tokens=10, temperature=1e-4, seed=3)
    greedy = backend.chat(MSGS, max_tokens=10)
    assert cold.raw["token_ids"] == greedy.raw["token_ids"]


def test_transformers_sampling_does_not_touch_global_rng(backend):
    state = torch.get_rng_state()
    backend.chat(MSGS, max_tokens=4, temperature=1.0, seed=5)
    assert torch.equal(state, torch.get_rng_state())


def test_transformers_stop_string_truncates(backend):
    full = backend.chat(MSGS, max_tokens=10)
    assert len(full.raw["token_ids"]) >= 4, "the tiny model should not hit EOS this early"
    word = backend.tokenizer.decode([full.raw["token_ids"][3]])
    cut = backend.chat(MSGS, max_tokens=10, stop=["zzz-never", word])
    assert cut.text == full.text[: full.text.find(word)]
    assert cut.finish_reason == "stop"
    assert word not in cut.text


def _forced_model(forced_token: int, strength: float = 8.0):
    """A tiny Llama whose logits are the same bias vector at every position (weights zeroed)."""
    model = _tiny_model(1)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[forced_token] = strength
    model.lm_head = head
    return model, head.bias.detach().clone()


def test_score_choices_prefers_forced_token_with_exact_values():
    tok = tiny_tokenizer()
    up = tok.convert_tokens_to_ids("up")
    model, bias = _forced_model(up)
    b = TransformersBackend(model, tok)
    cands = ["left", "up up", "up", "move left"]
    scores = score_choices(b, MSGS, cands)
    logp = torch.log_softmax(bias.double(), dim=-1)  # the same distribution at every position
    expected = [sum(float(logp[i]) for i in tok.encode(c, add_special_tokens=False)) for c in cands]
    assert scores == pytest.approx(expected, rel=1e-5)
    assert cands[max(range(len(cands)), key=scores.__getitem__)] == "up"
    assert sorted(cands, key=lambda c: -scores[cands.index(c)])[:2] == ["up", "up up"]


def test_forced_eos_ends_generation_immediately():
    tok = tiny_tokenizer()
    model, _ = _forced_model(tok.eos_token_id)
    r = TransformersBackend(model, tok).chat(MSGS, max_tokens=5)
    assert (r.text, r.finish_reason, r.usage["completion_tokens"]) == ("", "stop", 0)
    model, _ = _forced_model(tok.convert_tokens_to_ids("cat"))
    r = TransformersBackend(model, tok).chat(MSGS, max_tokens=5)
    assert (r.text, r.finish_reason, r.usage["completion_tokens"]) == (
        "cat cat cat cat cat",
        "length",
        5,
    )


def test_score_choices_batched_equals_unpadded_per_candidate(backend):
    cands = ["up", "the red cat sees a box .", "move left and right", "no"]
    prompt_ids = backend.tokenizer.encode(backend.render_prompt(MSGS), add_special_tokens=False)
    expected = []
    with torch.no_grad():
        for c in cands:
            cont = backend.tokenizer.encode(c, add_special_tokens=False)
            ids = torch.tensor([prompt_ids + cont])
            logp = torch.log_softmax(backend.model(input_ids=ids).logits[0].double(), dim=-1)
            p = len(prompt_ids)
            expected.append(sum(float(logp[p - 1 + t, tok]) for t, tok in enumerate(cont)))
    for batch_size in (1, 3, 16):
        b = TransformersBackend(backend.model, backend.tokenizer, batch_size=batch_size)
        assert_close(
            f"scores bs={batch_size}",
            torch.tensor(expected),
            torch.tensor(b.score_choices(MSGS, cands)),
        )
    assert all(s < 0 for s in expected)


def test_score_choices_rejects_empty_tokenization(backend):
    with pytest.raises(ValueError, match=r"choices\[1\]"):
        backend.score_choices(MSGS, ["up", "   "])


def test_transformers_missing_directory_is_clear_and_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("TransformersBackend tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(
        FileNotFoundError, match=r"not an existing local directory.*never downloads"
    ):
        TransformersBackend(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        TransformersBackend(str(tmp_path))  # exists, but holds no checkpoint
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TransformersBackend("meta-llama/Llama-3.2-1B")  # a hub id is not a local directory


def test_transformers_constructor_validation(backend):
    with pytest.raises(ValueError, match="tokenizer: required"):
        TransformersBackend(backend.model)
    with pytest.raises(TypeError, match="path_or_model"):
        TransformersBackend(42)
    with pytest.raises(ValueError, match="batch_size"):
        TransformersBackend(backend.model, backend.tokenizer, batch_size=0)


def test_backend_from_spec_hf(model_dir, backend):
    b = backend_from_spec(f"hf:{model_dir}")
    assert isinstance(b, TransformersBackend)
    assert b.chat(MSGS, max_tokens=5) == backend.chat(MSGS, max_tokens=5)


# ---------------------------------------------------------------------------------------------
# Lean import
# ---------------------------------------------------------------------------------------------


def test_lean_import():
    assert_lean_import("paperbricks.core_kernels.llm")


def test_import_does_not_load_transformers_or_torch():
    code = (
        "import sys, json; import paperbricks.core_kernels.llm as m; "
        "print(json.dumps({k: k in sys.modules for k in ('transformers', 'torch', 'tokenizers')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "transformers": False,
        "torch": False,
        "tokenizers": False,
    }


# ---------------------------------------------------------------------------------------------
# GPU (run later on a real card)
# ---------------------------------------------------------------------------------------------


@requires_cuda
def test_transformers_on_cuda_matches_cpu(model_dir, backend):
    gpu = TransformersBackend(str(model_dir), device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    cands = ["up", "the red cat sees a box .", "move left and right", "no"]
    cpu_scores = torch.tensor(backend.score_choices(MSGS, cands), dtype=torch.float64)
    gpu_scores = torch.tensor(gpu.score_choices(MSGS, cands), dtype=torch.float64)
    assert_close("cuda scores", cpu_scores, gpu_scores, ratio=1e-4)
    a = gpu.chat(MSGS, max_tokens=6, temperature=1.0, seed=11)
    assert a == gpu.chat(MSGS, max_tokens=6, temperature=1.0, seed=11)
    assert gpu.chat(MSGS, max_tokens=6) == gpu.chat(MSGS, max_tokens=6)


@requires_cuda
def test_forced_score_choices_on_cuda_bf16():
    tok = tiny_tokenizer()
    up = tok.convert_tokens_to_ids("up")
    model, _ = _forced_model(up)
    b = TransformersBackend(model, tok, device="cuda", dtype=torch.bfloat16)
    scores = b.score_choices(MSGS, ["left", "up", "cat"])
    assert max(range(3), key=scores.__getitem__) == 1
    assert scores[1] > -0.05 and scores[0] < -7.0


@pytest.mark.slow
def test_bench_quick_cpu_runs():
    from paperbricks.core_kernels.llm.bench import run

    rows = run(quick=True, device="cpu")
    assert len(rows) == 2
    assert all(r.ms > 0 and r.baseline_ms > 0 for r in rows)

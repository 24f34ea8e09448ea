"""The GLEE /chat protocol against real servers on 127.0.0.1 (port 0) started by the tests."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paperbricks.core_kernels.llm import ChatBackendError, FormatRetriesExhausted, ScriptedBackend
from paperbricks.glee.actions import Accept, Offer
from paperbricks.glee.bots import (
    BayesianBuyer,
    FairSplitBot,
    KGSeller,
    NegotiationSPEBot,
    RubinsteinSPEBot,
)
from paperbricks.glee.config import BargainingConfig, NegotiationConfig, PersuasionConfig
from paperbricks.glee.games import BargainingGame, make_game
from paperbricks.glee.http import GLEEHttpPlayer, game_params, serve_http
from paperbricks.glee.players_base import play


class _Recorder:
    """A GLEE-style external bot: records bodies/headers, answers from a script."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.bodies = []
        self.headers = []

    def __enter__(self):
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers["Content-Length"])
                rec.bodies.append((self.path, json.loads(self.rfile.read(n))))
                rec.headers.append({k.lower(): v for k, v in self.headers.items()})
                data = json.dumps({"response": rec.replies.pop(0)}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _post(url, body, headers=None):
    req = urllib.request.Request(
        url + "/chat",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_client_request_shape_and_incomplete_information_filter(monkeypatch):
    monkeypatch.setenv("GLEE_TEST_KEY", "s3cret")
    cfg = BargainingConfig(delta_alice=0.9, delta_bob=0.8, money=100.0, complete_information=False)
    game = BargainingGame(cfg)
    game.apply(Offer(70.0))
    with _Recorder(["hmm", '{"decision": "reject"}']) as srv:
        player = GLEEHttpPlayer(srv.url, api_key_env="GLEE_TEST_KEY", send_observation=False)
        action = player.act(game.observation("bob"))
    assert action.kind == "reject" and player.format_errors == 1
    path, body = srv.bodies[0]
    assert path == "/chat"
    assert set(body) == {"messages", "decision", "game_params"}
    assert body["decision"] is True
    gp = body["game_params"]
    assert gp["delta_bob"] == 0.8 and "delta_alice" not in gp  # only the player's own δ
    assert gp["game_type"] == "bargaining" and gp["player"] == "bob" and gp["money"] == 100.0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert srv.headers[0]["x-api-key"] == "s3cret"
    # the retry carries the rejected reply and the error
    retry = srv.bodies[1][1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "hmm"}
    assert "accept" in retry[-1]["content"]
    # complete information sends both δ
    full = BargainingGame(BargainingConfig(delta_alice=0.9, delta_bob=0.8)).observation("alice")
    assert {"delta_alice", "delta_bob"} <= set(game_params(full))


def test_proposer_turn_has_decision_false():
    with _Recorder(['{"alice_gain": 50, "bob_gain": 50}']) as srv:
        view = BargainingGame(BargainingConfig(money=100.0)).observation("alice")
        assert GLEEHttpPlayer(srv.url).act(view) == Offer(50.0)
    assert srv.bodies[0][1]["decision"] is False
    assert srv.bodies[0][1]["observation"]["role"] == "alice"


@pytest.mark.parametrize(
    ("cfg", "alice", "bob"),
    [
        (BargainingConfig(delta_alice=0.9, delta_bob=0.9), RubinsteinSPEBot, RubinsteinSPEBot),
        (NegotiationConfig(max_rounds=7), NegotiationSPEBot, NegotiationSPEBot),
        (NegotiationConfig(money=100.0, max_rounds=4), FairSplitBot, NegotiationSPEBot),
        (
            PersuasionConfig(rounds=6, message_type="binary"),
            lambda: KGSeller(seed=5),
            BayesianBuyer,
        ),
    ],
    ids=["bargaining-spe", "negotiation-spe", "negotiation-mixed", "persuasion"],
)
def test_our_client_against_our_server_equals_direct_play(cfg, alice, bob):
    direct = make_game(cfg, seed=11)
    play(direct, alice(), bob())
    with serve_http(alice()) as sa, serve_http(bob()) as sb:
        remote = make_game(cfg, seed=11)
        play(remote, GLEEHttpPlayer(sa.url), GLEEHttpPlayer(sb.url))
    assert remote.transcript == direct.transcript
    assert remote.outcome() == direct.outcome()


def test_server_answers_from_messages_with_a_chat_backend_or_function():
    body = {
        "messages": [{"role": "user", "content": "Round 1"}],
        "decision": True,
        "game_params": {},
    }
    with serve_http(ScriptedBackend(['{"decision": "accept"}'])) as srv:
        assert _post(srv.url, body) == (200, {"response": '{"decision": "accept"}'})
    seen = []
    with serve_http(lambda m, d, gp: seen.append((m, d, gp)) or "ok") as srv:
        assert _post(srv.url, body) == (200, {"response": "ok"})
    assert seen == [(body["messages"], True, {})]


def test_server_errors(monkeypatch):
    monkeypatch.setenv("GLEE_SRV_KEY", "k")
    with serve_http(FairSplitBot(), api_key_env="GLEE_SRV_KEY") as srv:
        ok = {"messages": [], "decision": False, "game_params": {}}
        assert _post(srv.url, ok)[0] == 401
        code, err = _post(srv.url, ok, {"X-API-Key": "k"})
        assert code == 400 and "observation" in err["error"]  # a bot needs the engine view
        assert _post(srv.url, b"{not json", {"X-API-Key": "k"})[0] == 400
        assert _post(srv.url, {"messages": "x"}, {"X-API-Key": "k"})[0] == 400
        req = urllib.request.Request(srv.url + "/other", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 404
    with pytest.raises(TypeError, match="player"):
        serve_http(42)
    with pytest.raises(ValueError, match="port"):
        serve_http(FairSplitBot(), port=70000)


def test_client_failures_are_clear():
    def boom(m, d, gp):
        raise RuntimeError("model crashed")

    view = BargainingGame(BargainingConfig(money=100.0)).observation("alice")
    with serve_http(boom) as srv, pytest.raises(ChatBackendError, match=r"HTTP 500.*crashed"):
        GLEEHttpPlayer(srv.url).act(view)
    with serve_http(lambda m, d, gp: "no idea") as srv, pytest.raises(FormatRetriesExhausted):
        GLEEHttpPlayer(srv.url, retries=1).act(view)
    with serve_http(lambda m, d, gp: "x") as srv:
        url = srv.url
    with pytest.raises(ChatBackendError, match="request failed"):
        GLEEHttpPlayer(url).act(view)  # closed port: connection refused
    with pytest.raises(ValueError, match="url"):
        GLEEHttpPlayer("ftp://example")


def test_served_spe_bot_accepts_through_the_protocol():
    game = BargainingGame(BargainingConfig(delta_alice=0.9, delta_bob=0.9, money=100.0))
    game.apply(Offer(50.0))
    with serve_http(RubinsteinSPEBot()) as srv:
        assert GLEEHttpPlayer(srv.url).act(game.observation("bob")) == Accept()

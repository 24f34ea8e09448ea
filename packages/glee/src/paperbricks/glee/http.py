"""The GLEE HTTP player protocol: a client player and a server, stdlib only (spec §2 "Protocol").

GLEE lets a remote bot play: the game engine POSTs to ``{url}/chat`` a JSON body
``{"messages": [...], "decision": bool, "game_params": {...}}`` (the conversation so far, whether
this move is a decision on a pending offer, and the game parameters filtered by the information
structure: incomplete-information bargaining reveals only the player's own δ) and reads back
``{"response": "<reply text>"}``; an ``X-API-Key`` header is optional.

* :class:`GLEEHttpPlayer` is a GLEE player (``act(game_view)``) whose moves come from such a
  server: the reply goes through the same tolerant parsing and format-retry loop as
  :class:`~paperbricks.glee.llm_player.LLMPlayer` (a malformed reply is appended with the error
  and the server is asked again). It also sends the engine observation as an extra
  ``"observation"`` field (servers that do not know it ignore it).
* :func:`serve_http` exposes any of our players (a rational bot, an ``LLMPlayer``), any
  core-kernels chat backend, or a plain function at ``POST /chat`` so external GLEE engines (or
  our client) can play against it. A player with ``act`` needs the ``observation`` field; a chat
  backend or function answers from ``messages`` alone.

Differences from GLEE: the client retries malformed replies instead of asserting; the server is
a ``ThreadingHTTPServer`` on 127.0.0.1 by default (port 0 picks a free port) serving one move at
a time (a lock around the player).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from paperbricks.core_kernels.llm import ChatBackendError, ChatResult, normalize_messages

from .llm_player import LLMPlayer
from .parsing import format_action
from .prompts import expected_move

__all__ = ["GLEEHttpBackend", "GLEEHttpPlayer", "GLEEServer", "game_params", "serve_http"]

logger = logging.getLogger(__name__)

_MAX_BODY = 10 * 1024 * 1024


def _finite(obj: Any) -> Any:
    """JSON-safe copy: tuples to lists, non-finite floats to None (strict JSON has no Infinity)."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def game_params(view: dict[str, Any]) -> dict[str, Any]:
    """The ``game_params`` GLEE sends for ``view``: the parameters this player may know.

    ``view['config']`` is already filtered by the engine (incomplete-information bargaining holds
    only the player's own ``delta_<role>``; negotiation only its own value); this adds
    ``game_type``, ``player`` (the role) and ``round``.
    """
    return _finite(
        {
            "game_type": view["family"],
            "player": view["role"],
            "round": view.get("round"),
            **view["config"],
        }
    )


class GLEEHttpBackend:
    """A chat backend over one turn of the GLEE ``/chat`` protocol.

    Args:
        url: server base URL (``/chat`` is appended).
        decision: the request's ``decision`` flag.
        params: the request's ``game_params``.
        observation: optional engine observation sent as the extra ``observation`` field.
        api_key_env: name of an environment variable holding the ``X-API-Key`` value.
        timeout_s: per-request timeout. Default 60.
    """

    supports_scoring = False

    def __init__(
        self,
        url: str,
        *,
        decision: bool = False,
        params: dict[str, Any] | None = None,
        observation: dict[str, Any] | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected an http(s) URL, got {url!r}")
        self.url = url.rstrip("/") + "/chat"
        self.decision = bool(decision)
        self.params = params or {}
        self.observation = observation
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s

    def request_body(self, messages: Any) -> dict[str, Any]:
        """The JSON body sent for ``messages``."""
        body: dict[str, Any] = {
            "messages": normalize_messages(messages),
            "decision": self.decision,
            "game_params": self.params,
        }
        if self.observation is not None:
            body["observation"] = _finite(self.observation)
        return body

    def chat(self, messages: Any, **kwargs: Any) -> ChatResult:
        """POST the conversation; ``max_tokens``/``temperature``/``seed`` are not part of GLEE's protocol."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise ValueError(f"api_key_env: environment variable {self.api_key_env!r} is unset")
            headers["X-API-Key"] = key
        data = json.dumps(self.request_body(messages)).encode()
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as err:
            snippet = err.read()[:300].decode("utf-8", "replace")
            raise ChatBackendError(f"{self.url}: HTTP {err.code}: {snippet}") from err
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise ChatBackendError(f"{self.url}: request failed: {err}") from err
        try:
            obj = json.loads(payload)
            text = obj["response"]
        except (ValueError, KeyError, TypeError) as err:
            raise ChatBackendError(
                f'{self.url}: expected a JSON object {{"response": "..."}}, got {payload[:200]!r}'
            ) from err
        if not isinstance(text, str):
            raise ChatBackendError(f"{self.url}: 'response' must be a string, got {text!r:.100}")
        return ChatResult(text=text, finish_reason="stop", usage={}, raw=obj)

    def __repr__(self) -> str:
        return f"GLEEHttpBackend({self.url!r})"


class GLEEHttpPlayer(LLMPlayer):
    """A GLEE player whose moves come from a remote bot speaking the ``/chat`` protocol.

    Args:
        url: server base URL, e.g. ``"http://127.0.0.1:8000"``.
        retries: extra requests after a malformed reply (the error is fed back). Default 3.
        api_key_env: environment variable holding the ``X-API-Key`` header value (optional).
        timeout_s: per-request timeout. Default 60.
        send_observation: also send the engine observation (``"observation"`` field) so our
            own servers can run a rational bot. Default True.

    Examples:
        >>> from paperbricks.glee.bots import FairSplitBot
        >>> from paperbricks.glee.config import BargainingConfig
        >>> from paperbricks.glee.games import BargainingGame
        >>> with serve_http(FairSplitBot()) as server:
        ...     remote = GLEEHttpPlayer(server.url)
        ...     remote.act(BargainingGame(BargainingConfig(money=100.0)).observation("alice"))
        Offer(amount=50.0, message=None)
    """

    def __init__(
        self,
        url: str,
        retries: int = 3,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        send_observation: bool = True,
    ) -> None:
        GLEEHttpBackend(url)  # validates the URL
        super().__init__(GLEEHttpBackend(url), retries)
        self.url = url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.send_observation = send_observation

    def _chat_backend(self, view: dict[str, Any]) -> Any:
        return GLEEHttpBackend(
            self.url,
            decision=expected_move(view) == "response",
            params=game_params(view),
            observation=view if self.send_observation else None,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
        )

    def __repr__(self) -> str:
        return f"GLEEHttpPlayer({self.url!r}, retries={self.retries})"


def _restore_observation(view: dict[str, Any]) -> dict[str, Any]:
    legal = view.get("legal")
    if isinstance(legal, dict):
        if isinstance(legal.get("kinds"), list):
            legal["kinds"] = tuple(legal["kinds"])
        rng = legal.get("offer")
        if isinstance(rng, dict) and rng.get("max") is None:
            rng["max"] = float("inf")
    return view


class GLEEServer:
    """A running ``/chat`` server (returned by :func:`serve_http`); use as a context manager."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.host, self.port = str(host), int(port)
        self.url = f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> GLEEServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answer(player: Any, body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ValueError("messages: expected a list of {role, content} objects")
    if not isinstance(body.get("decision", False), bool):
        raise ValueError(f"decision: expected a boolean, got {body.get('decision')!r}")
    if not isinstance(body.get("game_params", {}), dict):
        raise ValueError("game_params: expected an object")
    obs = body.get("observation")
    if callable(getattr(player, "act", None)):
        if not isinstance(obs, dict):
            raise ValueError(
                "observation: this server runs a GLEE player, which needs the engine observation "
                "(send it as the 'observation' field, as GLEEHttpPlayer does)"
            )
        view = _restore_observation(obs)
        action = player.act(view)
        return format_action(action, view["family"], money=view["config"].get("money"))
    if callable(getattr(player, "chat", None)):
        return player.chat(normalize_messages(messages), max_tokens=256).text
    return str(player(messages, body.get("decision", False), body.get("game_params", {})))


def serve_http(
    player: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key_env: str | None = None,
) -> GLEEServer:
    """Serve ``player`` at ``POST /chat`` in a background thread.

    Args:
        player: a GLEE player (``act(game_view)``; needs the ``observation`` field), a chat
            backend (``chat(messages, ...)``), or a function
            ``fn(messages, decision, game_params) -> str``.
        host: interface to bind. Default ``"127.0.0.1"`` (local only).
        port: TCP port; 0 (default) picks a free one (see ``server.port``/``server.url``).
        api_key_env: when set, requests must carry ``X-API-Key`` equal to this environment
            variable's value (read at start; 401 otherwise).

    Returns:
        A :class:`GLEEServer` (``.url``, ``.port``, ``.close()``; a context manager).

    Raises:
        TypeError: ``player`` is none of the accepted kinds.
        ValueError: bad ``port``, or ``api_key_env`` names an unset variable.

    Responses: 200 ``{"response": text}``; 400 ``{"error": ...}`` for a malformed request; 401
    for a missing/wrong key; 404 for other paths; 500 when the player fails.
    """
    if not (
        callable(getattr(player, "act", None))
        or callable(getattr(player, "chat", None))
        or callable(player)
    ):
        raise TypeError(
            "player: expected a GLEE player (act), a chat backend (chat) or a function, got "
            f"{type(player).__name__}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected an int in [0, 65535], got {port!r}")
    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env, "")
        if not key:
            raise ValueError(f"api_key_env: environment variable {api_key_env!r} is unset")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            logger.debug("glee http: " + fmt, *args)

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(404, {"error": "only POST /chat is served"})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/chat":
                self._send(404, {"error": f"unknown path {self.path!r}; POST /chat"})
                return
            if key is not None and self.headers.get("X-API-Key") != key:
                self._send(401, {"error": "missing or wrong X-API-Key"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= _MAX_BODY:
                self._send(400, {"error": f"Content-Length: expected 1..{_MAX_BODY} bytes"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise ValueError("body: expected a JSON object")
            except ValueError as err:
                self._send(400, {"error": f"malformed request: {err}"})
                return
            try:
                with lock:
                    text = _answer(player, body)
            except (ValueError, TypeError, KeyError) as err:
                self._send(400, {"error": str(err)})
                return
            except Exception as err:  # the player failed: report, keep serving
                logger.exception("glee http: player failed")
                self._send(500, {"error": f"{type(err).__name__}: {err}"})
                return
            self._send(200, {"response": text})

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="glee-http", daemon=True)
    thread.start()
    server = GLEEServer(httpd, thread)
    logger.info("serving GLEE /chat at %s", server.url)
    return server

"""An ASGI middleware for vLLM that requires the API key on every route but ``GET /health``.

vLLM's own ``--api-key`` check guards only paths under ``/v1``, ``/v2``, ``/inference`` and
``/cohere``; ``/rerank``, ``/score``, ``/tokenize``, ``/metrics`` and others stay open. This guard
closes them. ``rerank-serve`` loads it with ``--middleware rerank_api_key_guard.RequireApiKey``
and puts this file's folder on the server's ``PYTHONPATH``; vLLM adds a middleware class with
``app.add_middleware(cls)``, i.e. no arguments besides ``app``, so the key is read from the
environment (``VLLM_API_KEY``, the variable vLLM's own check reads too), never from argv.

Standard library only: it runs inside vLLM's Python and must not import ``rerank_plugins``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["API_KEY_ENV", "OPEN_ROUTES", "UNAUTHORIZED_BODY", "RequireApiKey"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_KEY_ENV = "VLLM_API_KEY"
# The only unauthenticated requests: a liveness probe that tells nothing but "up". /ping (vLLM's
# SageMaker alias of /health) stays guarded: one open probe is enough and SageMaker deployments
# do not go through rerank-serve. HEAD is what some probes send instead of GET.
OPEN_ROUTES: frozenset[tuple[str, str]] = frozenset({("GET", "/health"), ("HEAD", "/health")})
# vLLM's error shape ({"error": {"message", "type", "param", "code"}}).
UNAUTHORIZED_BODY = json.dumps(
    {"error": {"message": "Unauthorized", "type": "Unauthorized", "param": None, "code": 401}}
).encode()
# RFC 7235 / 6750: a 401 names the scheme it wants.
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
    (b"www-authenticate", b"Bearer"),
]


def _digest(value: bytes) -> bytes:
    # Hash first so that the comparison below takes the same time whatever the lengths.
    return hashlib.sha256(value).digest()


class RequireApiKey:
    """Reject every HTTP and WebSocket request without ``Authorization: Bearer <key>``.

    Exceptions: ``GET``/``HEAD /health`` (liveness probes carry no key) and CORS preflights
    (``OPTIONS`` with ``Access-Control-Request-Method``: browsers never attach credentials to
    them; vLLM's CORS middleware answers them without reaching any route). Lifespan events pass.
    The key comes from env ``VLLM_API_KEY`` (or ``api_key`` for tests); with no key the server
    refuses to start rather than run unguarded.
    """

    def __init__(self, app: ASGIApp, api_key: str | None = None) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key:
            raise RuntimeError(
                f"rerank_api_key_guard.RequireApiKey: no API key in env {API_KEY_ENV}; "
                "refusing to serve unguarded"
            )
        self.app = app
        self._key_digest = _digest(key.encode())

    def _authorized(self, scope: Scope) -> bool:
        supplied = b""
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                supplied = bytes(value)
                break
        scheme, _, token = supplied.partition(b" ")
        ok = hmac.compare_digest(_digest(token.strip()), self._key_digest)
        return ok and scheme.lower() == b"bearer"

    @staticmethod
    def _is_open(scope: Scope) -> bool:
        method = str(scope.get("method", "")).upper()
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        if (method, path) in OPEN_ROUTES:
            return True
        if method == "OPTIONS":
            names = {bytes(n).lower() for n, _ in scope.get("headers") or ()}
            return b"access-control-request-method" in names and b"origin" in names
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 401 (HTTP) / close with 1008 (WebSocket)."""
        kind = scope.get("type")
        if kind not in ("http", "websocket") or self._is_open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 401, "headers": list(_HEADERS)})
        await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})

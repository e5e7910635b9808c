"""One HTTP exchange with retries, and each failure as a typed error.

The retry policy is pure functions of what they are given (the wall clock and the jitter
are passed in); :func:`send` moves the bytes, sleeps and asks them what to do.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from typing import Any

import httpx

from ..config import RerankConfig
from ..errors import (
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankStatusError,
    RerankTimeoutError,
)
from .context import CallContext, logger
from .wire import encode_json

__all__ = [
    "NO_ROUTE",
    "RETRY_STATUSES",
    "next_retry_delay",
    "parse_error_message",
    "parse_retry_after",
    "retry_delay",
    "send",
    "status_error",
]

# 429 asks us to slow down; 502-504 are a proxy or a restarting server: all are worth
# another try. Other 4xx will fail the same way again.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that mean "this server has no such route": an optional feature is then unknown.
NO_ROUTE = frozenset({404, 405})


async def send(
    ctx: CallContext,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    request_id: str | None = None,
    *,
    auth: bool = True,
    routing_key: str | None = None,
) -> bytes:
    """A 2xx answer's body as received; retries 429/502-504 and transport errors in limits."""
    config = ctx.config
    url = config.base_url + path
    content = None if payload is None else encode_json(payload)
    headers = {"Content-Type": "application/json"} if content is not None else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    if routing_key is not None and config.routing_header:
        headers[config.routing_header] = routing_key
    pool = ctx.pool
    scope = ctx.scope
    pool.http()
    slots = pool.slots
    assert slots is not None
    timeout = config.timeout
    attempt = 0
    while True:
        ctx.doing = f"{method} {url}"
        retry_after = None
        error: RerankError
        reason = "timeout"
        timer: asyncio.Timeout | None = None
        try:
            # Waiting for a free connection is not part of a request's own timeout; the
            # call's deadline bounds it.
            async with slots:
                timer = asyncio.timeout(timeout)
                async with timer:
                    response = await pool.request(method, url, content, headers, auth)
        except TimeoutError:
            if timer is None or not timer.expired():
                raise  # the call's deadline, not this request's timeout
            scope.request("timeout")
            error = RerankTimeoutError(
                f"{method} {url} got no complete answer within timeout={timeout:g}s",
                url=url,
            )
        except httpx.InvalidURL as exc:
            raise RerankConfigError(f"base_url is not a usable URL: {exc}") from None
        except httpx.TransportError as exc:
            scope.request("transport_error")
            reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
            error = transport_error(method, url, exc)
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise error from exc  # another try cannot fix a certificate
            error.__cause__ = exc
        else:
            scope.request(f"{response.status_code // 100}xx")
            if response.is_success:
                return response.content  # the JSON reader decodes UTF-8 itself
            error = status_error(method, url, response.status_code, response.text)
            if response.status_code not in RETRY_STATUSES:
                raise error
            retry_after = response.headers.get("retry-after")
            reason = str(response.status_code)
        attempt += 1
        delay = next_retry_delay(
            config, attempt, retry_after, ctx.time_left(), jitter=random.random(), now=time.time()
        )
        if delay is None:
            raise error
        scope.retry(reason)
        logger.debug("retry %d of %s %s in %.2fs: %s", attempt, method, url, delay, error)
        await asyncio.sleep(delay)


# -- the retry policy (pure) ----------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds; None if absent or unreadable.

    It is delta-seconds, or an HTTP date read against the wall clock ``now``.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # "soon" and other garbage: fall back to our own backoff
        if parsed is None or parsed.tzinfo is None:
            return None
        seconds = parsed.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_delay(
    config: RerankConfig, attempt: int, retry_after: str | None, *, jitter: float, now: float
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    A server's ``Retry-After`` wins, capped at four times ``retry_backoff_max``; otherwise
    exponential backoff with full jitter (``jitter`` in [0, 1) picks a point in the upper
    half of the ceiling), so that many clients retrying together do not arrive together.
    """
    asked = parse_retry_after(retry_after, now)
    if asked is not None:
        return min(asked, config.retry_backoff_max * 4)
    ceiling = min(config.retry_backoff * 2.0 ** (attempt - 1), config.retry_backoff_max)
    return ceiling / 2 + jitter * ceiling / 2


def next_retry_delay(
    config: RerankConfig,
    attempt: int,
    retry_after: str | None,
    time_left: float | None,
    *,
    jitter: float,
    now: float,
) -> float | None:
    """The wait before retry ``attempt``; None when retries are spent.

    Also None when the wait would outlast the deadline (``time_left``): the call then fails
    at once with the server's own error rather than with a deadline error later.
    """
    if attempt > config.max_retries:
        return None
    delay = retry_delay(config, attempt, retry_after, jitter=jitter, now=now)
    if time_left is not None and delay >= time_left:
        return None
    return delay


# -- failures as typed errors (pure) --------------------------------------------------------


def parse_error_message(text: str) -> str:
    """The server's own message from either vLLM error shape (0.10.2+ nested, 0.9 flat)."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return text.strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        if "message" in body:
            return str(body["message"])[:500]
        if "detail" in body:
            return str(body["detail"])[:500]
    return text.strip()[:500]


def status_error(method: str, url: str, status_code: int, text: str) -> RerankStatusError:
    """The typed error for a non-2xx answer, carrying the server's own message."""
    message = parse_error_message(text)
    return RerankStatusError(
        f"{method} {url} returned {status_code}: {message}",
        url=url,
        status_code=status_code,
        server_message=message,
    )


def transport_error(method: str, url: str, exc: httpx.TransportError) -> RerankError:
    """The typed error for a request that got no answer."""
    if isinstance(exc, httpx.TimeoutException):
        return RerankTimeoutError(
            f"{method} {url} timed out ({type(exc).__name__}: {exc})", url=url
        )
    return RerankConnectionError(
        f"cannot connect to {url} ({method}): {exc or type(exc).__name__}. Is a vLLM server "
        "running there? Start one with: rerank-serve MODEL --port PORT",
        url=url,
    )

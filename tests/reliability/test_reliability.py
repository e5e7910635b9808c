"""Reliability: the client behind a fault proxy over a real vLLM server (all-MiniLM-L6-v2).

Every case ends in the right answer or the right typed error, within the call's deadline, with
the caller's documents unchanged. Network faults (resets, stalls, trickling bodies), 429/503
bursts with each ``Retry-After`` form, and every malformed-body class on ``/rerank``,
``/score``, ``/tokenize``, ``/v1/models`` and ``/version``, for the sync and the async client.
Counts go to the session ledger (tests/artifacts/reliability_summary.json).
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support.checks import assert_ranking
from support.fault_proxy import RERANK_PATHS, SCORE_PATHS, FaultProxy, Ledger, wait_until

from rerank_plugins import (
    AsyncRerankClient,
    RerankClient,
    RerankConnectionError,
    RerankError,
    RerankResponseError,
    RerankStatusError,
    RerankTimeoutError,
)

# Seconds a call may run past its deadline: scheduling on a loaded 2-core machine, and for a
# sync call its client's start. Every fault a deadline must cut here holds a call for at least
# 6 s (a stall: until the client leaves; Retry-After: 30 s; trickles: 12 s), so a client that
# ignored its deadline still fails the bound; what proves the mechanism is the typed error and
# the proxy seeing the client leave (``stats.abandoned``), not a race against the clock.
GRACE = 3.0
QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower is a landmark in Paris.",
    "Bananas are yellow and rich in potassium.",
    "Berlin is the capital of Germany.",
    "Python is a programming language.",
]
LONG_DOC = "Paris " * 600  # more tokens than MiniLM's window: the client must /tokenize it
MODES = ("sync", "async")


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(minilm_server: Any) -> dict[str, Any]:
    """What the server answers without the proxy: the right answers."""
    with RerankClient(minilm_server.base_url, minilm_server.model_name) as client:
        ranking = client.rerank(QUERY, DOCS)
        scores = client.score(QUERY, DOCS)
    return {"indices": ranking.indices, "scores": list(scores.scores)}


@pytest.fixture(scope="module")
def clean_hits(proxy_server: FaultProxy, minilm_server: Any) -> dict[tuple[str, str], int]:
    """Requests on the rerank (score) routes for one clean call on a fresh client.

    A client may probe the route first; counts in the tests are relative to this.
    """
    out = {}
    for mode in MODES:
        for method, paths in (("rerank", RERANK_PATHS), ("score", SCORE_PATHS)):
            proxy_server.clear()
            proxy_server.reset_stats()
            run_call(mode, proxy_server.url, method, list(DOCS), base_kwargs(minilm_server))
            out[mode, method] = proxy_server.stats.hits(paths)
    return out


def run_call(
    mode: str,
    url: str,
    method: str,
    documents: list[str],
    client_kwargs: dict[str, Any],
    query: str = QUERY,
    **call_kwargs: Any,
) -> Any:
    """One rerank/score call on a fresh client (sync, or async in its own event loop)."""
    if mode == "sync":
        with RerankClient(url, **client_kwargs) as client:
            return getattr(client, method)(query, documents, **call_kwargs)

    async def go() -> Any:
        async with AsyncRerankClient(url, **client_kwargs) as client:
            return await getattr(client, method)(query, documents, **call_kwargs)

    return asyncio.run(go())


@dataclass
class Outcome:
    value: Any
    error: RerankError | None
    elapsed: float


def observe(
    ledger: Ledger, cls: str, fn: Callable[[], Any], deadline: float | None = None
) -> Outcome:
    """Run ``fn``; count the case, its typed error or its bug; check the deadline."""
    ledger.case(cls)
    start = time.monotonic()
    value, error = None, None
    try:
        value = fn()
    except RerankError as exc:
        error = exc
        ledger.typed(cls, exc)
    except Exception as exc:
        ledger.bug(cls, exc)
        raise AssertionError(
            f"non-typed exception {type(exc).__name__}: {exc} after {time.monotonic() - start:.2f}s"
        ) from exc
    finally:
        elapsed = time.monotonic() - start
        if deadline is not None:
            ledger.over_deadline(cls, elapsed, deadline)
    if deadline is not None:
        assert elapsed <= deadline + GRACE, (
            f"took {elapsed:.2f}s for a deadline of {deadline}s "
            f"(ended with {type(error).__name__ if error else 'a result'})"
        )
    return Outcome(value, error, elapsed)


def assert_scores(result: Any, documents: list[str]) -> None:
    assert len(result.scores) == len(documents)
    assert all(type(s) is float and math.isfinite(s) for s in result.scores)


def expect_error(outcome: Outcome, error: type[RerankError] | tuple[type[RerankError], ...]):
    assert outcome.error is not None, f"expected {error}, got a result: {outcome.value!r:.300}"
    assert isinstance(outcome.error, error), f"expected {error}, got {outcome.error!r}"


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def base_kwargs(minilm_server: Any, **extra: Any) -> dict[str, Any]:
    return {"model": minilm_server.model_name, **extra}


# --- connection resets -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hard", [True, False], ids=["rst", "fin"])
@pytest.mark.parametrize("method", ["rerank", "score"])
def test_one_reset_is_retried_to_the_right_answer(
    proxy, minilm_server, reference, clean_hits, ledger, mode, hard, method
):
    path = RERANK_PATHS if method == "rerank" else SCORE_PATHS
    proxy.reset(path, times=1, hard=hard)
    docs = list(DOCS)
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=2, retry_backoff=0.01)
    out = observe(ledger, "reset", lambda: run_call(mode, proxy.url, method, docs, kwargs), 10)
    assert out.error is None, f"a single reset was not retried: {out.error!r}"
    if method == "rerank":
        assert out.value.indices == reference["indices"]
    else:
        assert out.value.scores == pytest.approx(reference["scores"], rel=1e-4)
    assert proxy.stats.faults["reset"] == 1
    assert proxy.stats.hits(path) == clean_hits[mode, method] + 1
    assert docs == DOCS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", [RERANK_PATHS, "/v1/models", "/tokenize"], ids=str)
def test_resets_every_time_end_in_connection_error(proxy, minilm_server, ledger, mode, path):
    proxy.reset(path, times=None)
    docs = [*DOCS, LONG_DOC]
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=2, retry_backoff=0.01)
    out = observe(ledger, "reset", lambda: run_call(mode, proxy.url, "rerank", docs, kwargs), 10)
    expect_error(out, RerankConnectionError)
    assert not isinstance(out.error, RerankTimeoutError), "a reset is not a timeout"
    assert out.elapsed < 5, "resets must fail fast, not wait for the deadline"
    # max_retries=2: 3 attempts (a route probe may add its own, bounded, attempts)
    assert 3 <= proxy.stats.hits(path) <= 6, f"{proxy.stats.hits(path)} attempts"
    assert docs == [*DOCS, LONG_DOC]


# --- 429/503 bursts and Retry-After ------------------------------------------------------------

RETRY_AFTER = {
    "none": lambda: None,
    "seconds": lambda: "1",
    "http-date": lambda: http_date(2),
    "past-date": lambda: http_date(-60),
    "garbage": lambda: "soon",
    "empty": lambda: "",
    "negative": lambda: "-5",
    "nan": lambda: "nan",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", list(RETRY_AFTER))
def test_burst_then_success_for_every_retry_after_form(
    proxy, minilm_server, reference, clean_hits, ledger, mode, status, form
):
    proxy.status(status, RERANK_PATHS, times=2, retry_after=RETRY_AFTER[form]())
    docs = list(DOCS)
    kwargs = base_kwargs(minilm_server, deadline=15, max_retries=2, retry_backoff=0.01)
    out = observe(
        ledger, "retry_after", lambda: run_call(mode, proxy.url, "rerank", docs, kwargs), 15
    )
    assert out.error is None, f"Retry-After {form}: {out.error!r}"
    assert out.value.indices == reference["indices"]
    assert proxy.stats.faults["status"] == 2
    assert proxy.stats.hits(RERANK_PATHS) == clean_hits[mode, "rerank"] + 2
    if form == "seconds":
        assert out.elapsed >= 1.8, "Retry-After: 1 was not honoured on both retries"
    assert docs == DOCS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", ["30", "http-date-far", "garbage"])
def test_retry_after_never_waits_past_the_deadline(proxy, minilm_server, ledger, mode, form):
    retry_after = {"30": "30", "http-date-far": http_date(60), "garbage": "soon"}[form]
    proxy.status(503, RERANK_PATHS, times=None, retry_after=retry_after)
    kwargs = base_kwargs(
        minilm_server, deadline=2, max_retries=50, retry_backoff=0.3, retry_backoff_max=0.6
    )
    out = observe(
        ledger, "retry_after", lambda: run_call(mode, proxy.url, "rerank", list(DOCS), kwargs), 2
    )
    expect_error(out, (RerankStatusError, RerankTimeoutError))
    if isinstance(out.error, RerankStatusError):
        assert out.error.status_code == 503


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_are_bounded_by_max_retries(proxy, minilm_server, ledger, mode, status):
    proxy.status(status, RERANK_PATHS, times=None, retry_after="0")
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=2, retry_backoff=0.01)
    out = observe(
        ledger, "status", lambda: run_call(mode, proxy.url, "rerank", list(DOCS), kwargs), 10
    )
    expect_error(out, RerankStatusError)
    assert out.error.status_code == status
    hits = proxy.stats.hits(RERANK_PATHS)
    assert 3 <= hits <= 6, f"max_retries=2 means 3 attempts (a probe may add), got {hits}"


@pytest.mark.parametrize("mode", MODES)
def test_a_400_is_not_retried(proxy, minilm_server, clean_hits, ledger, mode):
    proxy.status(400, RERANK_PATHS, times=None)
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=2, retry_backoff=0.01)
    out = observe(
        ledger, "status", lambda: run_call(mode, proxy.url, "rerank", list(DOCS), kwargs), 10
    )
    expect_error(out, RerankStatusError)
    assert out.error.status_code == 400
    assert proxy.stats.hits(RERANK_PATHS) <= clean_hits[mode, "rerank"], "a 400 was retried"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/v1/models", "/version", "/tokenize"])
def test_a_503_on_a_side_request_is_retried(proxy, minilm_server, reference, ledger, mode, path):
    proxy.status(503, path, times=1, retry_after="0")
    docs = list(DOCS)
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=2, retry_backoff=0.01)
    out = observe(ledger, "status", lambda: run_call(mode, proxy.url, "rerank", docs, kwargs), 10)
    assert out.error is None, f"503 on {path}: {out.error!r}"
    assert out.value.indices == reference["indices"]


# --- deadlines: trickles, stalls, slow batches -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "path", [RERANK_PATHS, SCORE_PATHS, "/v1/models", "/version", "/tokenize"], ids=str
)
def test_trickling_body_is_cut_at_the_deadline(proxy, minilm_server, reference, ledger, mode, path):
    proxy.trickle(path, chunk=16, interval=0.5, give_up_after=12)
    method = "score" if path == SCORE_PATHS else "rerank"
    docs = [*DOCS, LONG_DOC] if path == "/tokenize" else list(DOCS)
    before = copy.deepcopy(docs)
    kwargs = base_kwargs(minilm_server, deadline=2, timeout=30, max_retries=2)
    out = observe(
        ledger, "deadline", lambda: run_call(mode, proxy.url, method, docs, kwargs), deadline=2
    )
    _timeout_or_right_answer(out, method, reference)
    if out.error is not None:  # cut by the deadline: the client hung up on the trickle
        assert wait_until(lambda: proxy.stats.abandoned_on(path) >= 1), proxy.stats
    assert docs == before


def _timeout_or_right_answer(
    out: Outcome, method: str, reference: dict[str, Any], docs: list[str] = DOCS
) -> None:
    """A RerankTimeoutError, or (a side request given up on as unknown) the right answer."""
    if out.error is not None:
        expect_error(out, RerankTimeoutError)
    elif method == "rerank":
        assert_ranking(out.value, docs)
        if docs == DOCS:
            assert out.value.indices == reference["indices"]
    elif docs == DOCS:
        assert out.value.scores == pytest.approx(reference["scores"], rel=1e-4)
    else:
        assert len(out.value.scores) == len(docs)


@pytest.mark.parametrize("mode", MODES)
def test_fast_trickle_within_the_deadline_is_read_whole(proxy, minilm_server, reference, mode):
    proxy.trickle(RERANK_PATHS, chunk=64, interval=0.02)
    kwargs = base_kwargs(minilm_server, deadline=20)
    result = run_call(mode, proxy.url, "rerank", list(DOCS), kwargs)
    assert result.indices == reference["indices"]
    assert proxy.stats.faults["trickle"] >= 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "path", [RERANK_PATHS, SCORE_PATHS, "/v1/models", "/version", "/tokenize"], ids=str
)
def test_stall_ends_in_timeout_at_the_deadline(proxy, minilm_server, reference, ledger, mode, path):
    proxy.stall(path)
    method = "score" if path == SCORE_PATHS else "rerank"
    docs = [*DOCS, LONG_DOC]
    kwargs = base_kwargs(minilm_server, deadline=2, timeout=8, max_retries=2)
    out = observe(
        ledger, "deadline", lambda: run_call(mode, proxy.url, method, docs, kwargs), deadline=2
    )
    _timeout_or_right_answer(out, method, reference, docs)
    # Whether the deadline or a side request's own limit ended it, the client hung up on
    # every stalled request (none left open on the server).
    stalled = proxy.stats.faults["stall"]
    assert stalled >= 1, f"nothing was sent to {path}"
    assert wait_until(lambda: proxy.stats.abandoned_on(path) == stalled), proxy.stats
    assert docs == [*DOCS, LONG_DOC]


@pytest.mark.parametrize("mode", MODES)
def test_deadline_bounds_all_batches_together(proxy, minilm_server, ledger, mode):
    proxy.delay(1.0, RERANK_PATHS)
    docs = [f"document number {i} about Paris" for i in range(12)]
    kwargs = base_kwargs(minilm_server, deadline=2, max_batch_size=1, max_concurrency=1)
    out = observe(
        ledger, "deadline", lambda: run_call(mode, proxy.url, "rerank", docs, kwargs), deadline=2
    )
    expect_error(out, RerankTimeoutError)  # 12 batches x 1 s, one at a time: 12 s > 2 s
    assert "deadline of 2s passed during POST" in str(out.error), out.error
    assert proxy.stats.hits(RERANK_PATHS) < 12, "every batch was sent: no deadline for all"
    # The batch in flight at the deadline was dropped, not left to finish.
    assert wait_until(lambda: proxy.stats.abandoned_on(RERANK_PATHS) >= 1), proxy.stats


@pytest.mark.parametrize("mode", MODES)
def test_deadline_bounds_retry_sleeps(proxy, minilm_server, ledger, mode):
    proxy.status(503, RERANK_PATHS, times=None)
    kwargs = base_kwargs(
        minilm_server, deadline=1.5, max_retries=100, retry_backoff=0.4, retry_backoff_max=0.8
    )
    out = observe(
        ledger, "deadline", lambda: run_call(mode, proxy.url, "rerank", list(DOCS), kwargs), 1.5
    )
    expect_error(out, (RerankStatusError, RerankTimeoutError))
    # Waits of at least 0.2 s each: at most 8 attempts fit in 1.5 s (a route probe may add).
    assert proxy.stats.hits(RERANK_PATHS) <= 10, "retries went on past the deadline"


# --- malformed 200 bodies ----------------------------------------------------------------------


def _under(field: str, change: Callable[[list[dict[str, Any]]], Any]) -> Callable[[Any], Any]:
    """A body rewrite: ``change`` applied to a copy of the body's list at ``field``."""

    def replace(body: Any) -> Any:
        body = copy.deepcopy(body)
        body[field] = change(body[field])
        return body

    return replace


def _results(change: Callable[[list[dict[str, Any]]], Any]) -> Callable[[Any], Any]:
    return _under("results", change)


def _data(change: Callable[[list[dict[str, Any]]], Any]) -> Callable[[Any], Any]:
    return _under("data", change)


def _first(key: str, value: Any) -> Callable[[list[dict[str, Any]]], Any]:
    def change(entries: list[dict[str, Any]]) -> Any:
        entries[0][key] = value
        return entries

    return change


def _drop_first(key: str) -> Callable[[list[dict[str, Any]]], Any]:
    def change(results: list[dict[str, Any]]) -> Any:
        del results[0][key]
        return results

    return change


def _dup_index(results: list[dict[str, Any]]) -> Any:
    if len(results) < 2:  # a one-document request (e.g. a route probe): add the duplicate
        return [*results, dict(results[0])]
    results[1]["index"] = results[0]["index"]
    return results


def _float_index(results: list[dict[str, Any]]) -> Any:
    results[0]["index"] = float(results[0]["index"])
    return results


def _with(key: str, value: Any) -> Callable[[Any], Any]:
    def replace(body: Any) -> Any:
        return {**body, key: value}

    return replace


def _without(key: str) -> Callable[[Any], Any]:
    def replace(body: Any) -> Any:
        return {k: v for k, v in body.items() if k != key}

    return replace


COMMON_BODIES: dict[str, Any] = {
    "not-json": b"this is not JSON",
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "empty": b"",
    "truncated-json": b'{"results": [{"index": 0, "relevance_score": 0.5}',
    "json-array": b"[]",
    "json-null": b"null",
    "json-string": b'"ok"',
    "garbage-usage-str": _with("usage", "lots"),
    "garbage-usage-list": _with("usage", [1, 2]),
    "garbage-usage-tokens": _with("usage", {"prompt_tokens": "many", "total_tokens": -3}),
    "garbage-usage-nan": _with("usage", {"prompt_tokens": float("nan"), "total_tokens": 1}),
}

# Scores no answer may carry, in both bodies: "<name>-score" cases.
BAD_SCORES: dict[str, Any] = {
    "nan": float("nan"),
    "inf": float("inf"),
    "minus-inf": float("-inf"),
    "string": "0.5",
    "bool": True,
    "null": None,
}

RERANK_BODIES: dict[str, Any] = {
    **COMMON_BODIES,
    "results-missing": _without("results"),
    "results-not-list": _with("results", {"0": 1}),
    "results-null": _with("results", None),
    "result-not-object": _results(lambda r: [5, *r[1:]]),
    **{f"{bad}-score": _results(_first("relevance_score", v)) for bad, v in BAD_SCORES.items()},
    "list-score": _results(_first("relevance_score", [0.5])),
    "missing-score": _results(_drop_first("relevance_score")),
    "missing-index": _results(_drop_first("index")),
    "float-index": _results(_float_index),
    "fractional-index": _results(_first("index", 0.5)),
    "string-index": _results(_first("index", "0")),
    "bool-index": _results(_first("index", False)),
    "negative-index": _results(_first("index", -1)),
    "huge-index": _results(_first("index", 10**30)),
    "out-of-range-index": _results(_first("index", len(DOCS))),
    "duplicate-index": _results(_dup_index),
    "fewer-results": _results(lambda r: r[:-1]),
    "no-results": _results(lambda r: []),
    "more-results": _results(lambda r: [*r, dict(r[0])]),
}


SCORE_BODIES: dict[str, Any] = {
    **COMMON_BODIES,
    "data-missing": _without("data"),
    "data-not-list": _with("data", {"0": 1}),
    "entry-not-object": _data(lambda d: [5, *d[1:]]),
    **{f"{bad}-score": _data(_first("score", v)) for bad, v in BAD_SCORES.items()},
    "missing-score": _data(lambda d: [{"index": d[0]["index"]}, *d[1:]]),
    "float-index": _data(_first("index", 0.0)),
    "string-index": _data(_first("index", "0")),
    "negative-index": _data(_first("index", -1)),
    "out-of-range-index": _data(_first("index", len(DOCS))),
    "duplicate-index": _data(_dup_index),
    "fewer-entries": _data(lambda d: d[:-1]),
    "more-entries": _data(lambda d: [*d, {**d[0], "index": len(d)}]),
}


def _expect_malformed_body(proxy, minilm_server, ledger, mode, route, body, paths):
    """The proxy swaps each answer's body; the call is a RerankResponseError, docs untouched."""
    proxy.replace_body(body, paths)
    docs = list(DOCS)
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=1, retry_backoff=0.01)
    out = observe(
        ledger, "malformed_body", lambda: run_call(mode, proxy.url, route, docs, kwargs), 10
    )
    expect_error(out, RerankResponseError)
    assert proxy.stats.faults["body"] >= 1
    assert docs == DOCS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", list(RERANK_BODIES))
def test_malformed_rerank_body_is_a_response_error(proxy, minilm_server, ledger, mode, body):
    _expect_malformed_body(
        proxy, minilm_server, ledger, mode, "rerank", RERANK_BODIES[body], RERANK_PATHS
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", list(SCORE_BODIES))
def test_malformed_score_body_is_a_response_error(proxy, minilm_server, ledger, mode, body):
    _expect_malformed_body(
        proxy, minilm_server, ledger, mode, "score", SCORE_BODIES[body], SCORE_PATHS
    )


@pytest.mark.parametrize("mode", MODES)
def test_top_n_reply_with_fewer_results_is_fine(proxy, minilm_server, reference, mode):
    """The 'fewer results' rule is for calls without top_n: with it, top_n results are right."""
    result = run_call(mode, proxy.url, "rerank", list(DOCS), base_kwargs(minilm_server), top_n=2)
    assert result.indices == reference["indices"][:2]


TOKENIZE_BODIES: dict[str, Any] = {
    "not-json": b"not JSON",
    "json-array": b"[1, 2]",
    "tokens-missing": _without("tokens"),
    "tokens-string": _with("tokens", "abc"),
    "tokens-null": _with("tokens", None),
    "tokens-strings": _with("tokens", ["a", "b"]),
    "tokens-floats": _with("tokens", [1.5, 2.5]),
    "tokens-bools": _with("tokens", [True, False]),
    "tokens-nested": _with("tokens", [[1], [2]]),
    "tokens-nan": _with("tokens", [float("nan")]),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", list(TOKENIZE_BODIES))
def test_malformed_tokenize_body_is_a_response_error(proxy, minilm_server, ledger, mode, body):
    proxy.replace_body(TOKENIZE_BODIES[body], "/tokenize")
    docs = [*DOCS, LONG_DOC]
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=1, retry_backoff=0.01)
    out = observe(
        ledger, "malformed_body", lambda: run_call(mode, proxy.url, "rerank", docs, kwargs), 10
    )
    if proxy.stats.faults["body"]:
        expect_error(out, RerankResponseError)
    else:  # a client that never asked /tokenize must still be right
        assert out.error is None, out.error
        assert_ranking(out.value, docs)
    assert docs == [*DOCS, LONG_DOC]


INFO_BODIES: dict[str, dict[str, Any]] = {
    "/v1/models": {
        "not-json": b"not JSON",
        "json-array": b"[1, 2]",
        "json-null": b"null",
        "data-string": {"data": "abc"},
        "data-object": {"data": {"a": 1}},
        "data-ints": {"data": [5, 6]},
        "data-empty": {"data": []},
        "entry-id-int": {"data": [{"id": 5, "root": 7, "max_model_len": "abc"}]},
        "max-len-string": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": "256"}]},
        "max-len-bool": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": True}]},
        "max-len-negative": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": -5}]},
        "max-len-zero": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": 0}]},
        "max-len-float": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": 256.5}]},
        "max-len-nan": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": float("nan")}]},
        "max-len-huge": {"data": [{"id": "all-MiniLM-L6-v2", "max_model_len": 10**30}]},
    },
    "/version": {
        "not-json": b"not JSON",
        "json-array": b"[1, 2]",
        "json-string": b'"0.32.0"',
        "version-int": {"version": 5},
        "version-null": {"version": None},
        "version-garbage": {"version": "banana"},
        "version-huge": {"version": "9" * 5000 + ".1"},
    },
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("path", "body"), [(p, b) for p, bodies in INFO_BODIES.items() for b in bodies]
)
def test_garbage_server_info_is_unknown_or_a_response_error(
    proxy, minilm_server, reference, ledger, mode, path, body
):
    replacement = INFO_BODIES[path][body]
    if isinstance(replacement, dict):
        replacement = _replace_with(replacement)
    proxy.replace_body(replacement, path)
    docs = list(DOCS)
    kwargs = base_kwargs(minilm_server, deadline=10, max_retries=1, retry_backoff=0.01)
    out = observe(
        ledger, "malformed_body", lambda: run_call(mode, proxy.url, "rerank", docs, kwargs), 10
    )
    if out.error is not None:
        expect_error(out, RerankResponseError)
    else:
        assert out.value.indices == reference["indices"]
    assert docs == DOCS


def _replace_with(value: Any) -> Callable[[Any], Any]:
    return lambda _body: value

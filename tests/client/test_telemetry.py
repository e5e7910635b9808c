"""Prometheus metrics and OpenTelemetry spans of real calls to all-MiniLM-L6-v2 on vLLM.

Metrics go to a private ``CollectorRegistry`` per test; spans to the SDK's
``InMemorySpanExporter`` through a ``TracerProvider`` handed to ``OpenTelemetryTracing``. Retries
come from the loopback fault proxy in front of the same server (a real server cannot answer 503
on demand).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from support.fault_proxy import RERANK_PATHS, FaultProxy
from support.texts import SKILLET_DOCS as DOCS
from support.texts import SKILLET_QUERY as QUERY

from rerank_plugins import AsyncRerankClient, RerankClient, RerankStatusError
from rerank_plugins.cache import InMemoryCache
from rerank_plugins.telemetry import OpenTelemetryTracing, PrometheusMetrics

MODEL = "all-MiniLM-L6-v2"
ROUTE = "/v2/rerank"
OTHER_QUERY = "what makes a skillet non-stick"
LABEL_NAMES = {"model", "route", "outcome", "status_class", "error_type", "reason", "le"}


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels``."""
    found = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                found += sample.value
    return found


def label_sets(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [dict(s.labels) for family in registry.collect() for s in family.samples]


# --- Prometheus --------------------------------------------------------------------------------


def test_prometheus_counts_real_calls(minilm_server: Any) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    in_flight_seen: list[float] = []

    def progress(done: int, of: int) -> None:  # on the I/O thread, while the call runs
        in_flight_seen.append(total(registry, "rerank_calls_in_flight"))

    with RerankClient(
        minilm_server.base_url, model=MODEL, cache=InMemoryCache(), metrics=metrics
    ) as client:
        client.rerank(QUERY, DOCS, on_progress=progress)  # 8 misses
        client.rerank(QUERY, DOCS, top_n=2)  # 8 hits
        client.score(OTHER_QUERY, DOCS[:3])  # 3 misses
    assert in_flight_seen and all(v == 1 for v in in_flight_seen)

    assert total(registry, "rerank_call_duration_seconds_count", outcome="ok") == 3
    assert total(registry, "rerank_call_duration_seconds_count", route=ROUTE) == 2
    assert total(registry, "rerank_call_duration_seconds_count", route="/score") == 1
    assert total(registry, "rerank_call_duration_seconds_sum") > 0
    assert total(registry, "rerank_call_documents_count") == 3
    assert total(registry, "rerank_call_documents_sum") == 8 + 8 + 3
    # The two batch requests (and the first call's server reads), all answered 2xx.
    assert total(registry, "rerank_requests_total", status_class="2xx") >= 2
    assert total(registry, "rerank_requests_total") == total(
        registry, "rerank_requests_total", status_class="2xx"
    )
    assert total(registry, "rerank_cache_hits_total", model=MODEL, route=ROUTE) == 8
    assert total(registry, "rerank_cache_misses_total", model=MODEL, route=ROUTE) == 8
    assert total(registry, "rerank_cache_misses_total", route="/score") == 3
    assert total(registry, "rerank_cache_errors_total") == 0
    assert total(registry, "rerank_errors_total") == 0

    # A wrong model: the server answers 404, counted by error type.
    with (
        RerankClient(minilm_server.base_url, model="no-such-model", metrics=metrics) as wrong,
        pytest.raises(RerankStatusError),
    ):
        wrong.rerank(QUERY, DOCS[:2])
    assert (
        total(
            registry,
            "rerank_errors_total",
            model="no-such-model",
            route=ROUTE,
            error_type="RerankStatusError",
        )
        == 1
    )
    assert total(registry, "rerank_requests_total", status_class="4xx") >= 1
    assert total(registry, "rerank_call_duration_seconds_count", outcome="error") == 1

    # Every call ended: nothing in flight.
    gauges = [
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "rerank_calls_in_flight"
    ]
    assert gauges and all(v == 0 for v in gauges)

    # Bounded labels: the model, the route and a few fixed classes; never a query or a text.
    sets = label_sets(registry)
    assert {name for labels in sets for name in labels} <= LABEL_NAMES
    values = {v for labels in sets for v in labels.values()}
    for text in (QUERY, OTHER_QUERY, *DOCS):
        assert text not in values
    assert {labels["model"] for labels in sets if "model" in labels} == {MODEL, "no-such-model"}
    assert {labels["route"] for labels in sets if "route" in labels} == {ROUTE, "/score"}
    assert {labels["status_class"] for labels in sets if "status_class" in labels} <= {
        "2xx",
        "4xx",
    }


def test_prometheus_counts_retries(minilm_server: Any) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    with (
        FaultProxy(minilm_server.base_url).start() as proxy,
        RerankClient(proxy.url, model=MODEL, metrics=metrics, retry_backoff=0.01) as client,
    ):
        client.rerank(QUERY, DOCS[:2])  # learn the server first: the probe is not retried here
        proxy.status(503, RERANK_PATHS, times=1, retry_after="0")
        result = client.rerank(QUERY, DOCS)
        assert proxy.stats.faults["status"] == 1
    assert len(result) == len(DOCS)
    assert total(registry, "rerank_retries_total", model=MODEL, route=ROUTE, reason="503") == 1
    assert total(registry, "rerank_requests_total", status_class="5xx") == 1
    assert total(registry, "rerank_errors_total") == 0
    assert total(registry, "rerank_call_duration_seconds_count", outcome="ok") == 2
    assert total(registry, "rerank_calls_in_flight") == 0


def test_metrics_true_is_one_instance_per_process() -> None:
    # Clients are built without calling a server; metrics are registered once, on the
    # default registry, however many clients ask for them.
    first = RerankClient("http://127.0.0.1:9", metrics=True)
    second = AsyncRerankClient("http://127.0.0.1:9", metrics=True)
    third = RerankClient("http://127.0.0.1:9", metrics=PrometheusMetrics.default())
    try:
        assert PrometheusMetrics.default() is PrometheusMetrics.default()
        for client in (first, second, third):
            members = client.debug_view().instruments
            assert len(members) == 1 and members[0] is PrometheusMetrics.default()
    finally:
        first.close()
        second.to_sync().close()
        third.close()


# --- OpenTelemetry -----------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def traced(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> tuple[OpenTelemetryTracing, InMemorySpanExporter]:
    """The client's tracing hook on the test's provider, and the exporter its spans reach."""
    provider, exporter = spans
    return OpenTelemetryTracing(tracer_provider=provider), exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def check_call_span(
    exporter: InMemorySpanExporter,
    caller: ReadableSpan,
    documents: int,
    batches: int,
    sent: int | None = None,
) -> ReadableSpan:
    """The one call span: under ``caller``, its attributes, ``batches`` children sending
    ``sent`` documents in all (default: every document)."""
    (call,) = named(exporter, "rerank")
    assert call.parent is not None
    assert call.parent.span_id == caller.context.span_id
    assert call.context.trace_id == caller.context.trace_id
    attrs = dict(call.attributes or {})
    assert attrs["openinference.span.kind"] == "RERANKER"
    assert attrs["reranker.model_name"] == MODEL
    assert attrs["rerank.route"] == ROUTE
    assert attrs["rerank.documents"] == documents
    assert attrs["rerank.retries"] == 0
    assert call.status.status_code != StatusCode.ERROR
    children = [
        s
        for s in named(exporter, "rerank.batch")
        if s.parent is not None and s.parent.span_id == call.context.span_id
    ]
    assert len(children) == batches
    sent = documents if sent is None else sent
    assert sum(dict(s.attributes or {})["rerank.documents"] for s in children) == sent
    for child in children:
        assert call.start_time <= child.start_time <= child.end_time <= call.end_time
    return call


def test_spans_of_a_sync_call_nest_under_the_callers_span(
    minilm_server: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    tracing = OpenTelemetryTracing(tracer_provider=provider)
    with RerankClient(
        minilm_server.base_url, model=MODEL, tracing=tracing, max_batch_size=3
    ) as client:
        with tracer.start_as_current_span("caller"):
            client.rerank(QUERY, DOCS)
        (caller,) = named(exporter, "caller")
        check_call_span(exporter, caller, len(DOCS), batches=3)
        assert len(named(exporter, "rerank")) == 1

        # A second call under another caller span: its own call span, its own batches.
        exporter.clear()
        with tracer.start_as_current_span("caller"):
            client.score(QUERY, DOCS[:4])
        (caller,) = named(exporter, "caller")
        (call,) = named(exporter, "rerank")
        assert call.parent is not None and call.parent.span_id == caller.context.span_id
        assert dict(call.attributes or {})["rerank.route"] == "/score"
        assert len(named(exporter, "rerank.batch")) == 2


async def test_spans_of_an_async_call_nest_under_the_callers_span(
    minilm_server: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    tracing = OpenTelemetryTracing(tracer_provider=provider)
    cache = InMemoryCache()
    async with AsyncRerankClient(
        minilm_server.base_url, model=MODEL, tracing=tracing, max_batch_size=2, cache=cache
    ) as client:
        with tracer.start_as_current_span("caller"):
            await client.rerank(QUERY, DOCS)
        (caller,) = named(exporter, "caller")
        call = check_call_span(exporter, caller, len(DOCS), batches=4)
        assert dict(call.attributes or {})["rerank.cache_hits"] == 0
        assert dict(call.attributes or {})["rerank.cache_misses"] == len(DOCS)

        # All hits: a call span with the cache counts and no batch.
        exporter.clear()
        with tracer.start_as_current_span("caller"):
            await client.rerank(QUERY, DOCS, top_n=3)
        (caller,) = named(exporter, "caller")
        call = check_call_span(exporter, caller, len(DOCS), batches=0, sent=0)
        assert dict(call.attributes or {})["rerank.cache_hits"] == len(DOCS)
        assert dict(call.attributes or {})["rerank.cache_misses"] == 0


def test_a_failing_call_has_an_error_span(
    minilm_server: Any, traced: tuple[OpenTelemetryTracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = traced
    with (
        RerankClient(minilm_server.base_url, model="no-such-model", tracing=tracing) as client,
        pytest.raises(RerankStatusError),
    ):
        client.rerank(QUERY, DOCS[:2])
    (call,) = named(exporter, "rerank")
    assert call.parent is None  # no caller span: a root span
    assert call.status.status_code == StatusCode.ERROR
    assert call.status.description == "RerankStatusError"
    assert any(event.name == "exception" for event in call.events)
    assert dict(call.attributes or {})["reranker.model_name"] == "no-such-model"


def test_a_retried_call_counts_its_retries_on_the_span(
    minilm_server: Any, traced: tuple[OpenTelemetryTracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = traced
    with (
        FaultProxy(minilm_server.base_url).start() as proxy,
        RerankClient(proxy.url, model=MODEL, tracing=tracing, retry_backoff=0.01) as client,
    ):
        client.rerank(QUERY, DOCS[:2])
        exporter.clear()
        proxy.status(503, RERANK_PATHS, times=1, retry_after="0")
        client.rerank(QUERY, DOCS)
    (call,) = named(exporter, "rerank")
    assert dict(call.attributes or {})["rerank.retries"] == 1
    assert [dict(e.attributes or {}).get("reason") for e in call.events if e.name == "retry"] == [
        "503"
    ]
    assert call.status.status_code != StatusCode.ERROR

"""Prometheus metrics and OpenTelemetry tracing for the clients; both optional.

    client = AsyncRerankClient(url, metrics=True)    # prometheus_client, default registry
    client = AsyncRerankClient(url, metrics=PrometheusMetrics(registry=my_registry))
    client = AsyncRerankClient(url, tracing=True)    # opentelemetry-api's global provider

Metric names start with ``rerank_``; labels are bounded: ``model`` and ``route`` (and a
status class, an error type or a retry reason), never a query, a document or a request id.
Spans: one per call (``rerank``, OpenInference span kind ``RERANKER``) and one per batch
(``rerank.batch``), carrying the model, document count, cache hits and retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, Protocol

from ._extras import import_extra

__all__ = ["CallScope", "Instrument", "OpenTelemetryTracing", "PrometheusMetrics", "instruments"]


class CallScope(Protocol):
    """What an instrument hears of one call, on the loop that runs it (home or I/O loop)."""

    def batch(self, documents: int) -> AbstractContextManager[None]:
        """Around one batch request."""
        ...

    def request(self, status_class: str) -> None:
        """One HTTP request ended: "2xx", "4xx", "5xx", "timeout" or "transport_error"."""
        ...

    def retry(self, reason: str) -> None:
        """A request is sent again: the status code, "timeout" or "connection"."""
        ...

    def cache(self, hits: int, misses: int) -> None:
        """What the score cache held of this call's pairs."""
        ...

    def cache_error(self) -> None:
        """A cache lookup or store failed or timed out."""
        ...

    def finish(self, error: BaseException | None) -> None:
        """The call ended, with ``error`` or None."""
        ...


class Instrument(Protocol):
    """Something that watches calls: metrics, tracing."""

    def start_call(self, route: str, model: str, documents: int) -> CallScope:
        """A call starts."""
        ...


class _Scopes:
    """Several instruments' scopes of one call, told everything together."""

    def __init__(self, scopes: Sequence[CallScope]) -> None:
        self._scopes = scopes

    @contextmanager
    def batch(self, documents: int) -> Iterator[None]:
        with ExitStack() as stack:
            for scope in self._scopes:
                stack.enter_context(scope.batch(documents))
            yield

    def request(self, status_class: str) -> None:
        for scope in self._scopes:
            scope.request(status_class)

    def retry(self, reason: str) -> None:
        for scope in self._scopes:
            scope.retry(reason)

    def cache(self, hits: int, misses: int) -> None:
        for scope in self._scopes:
            scope.cache(hits, misses)

    def cache_error(self) -> None:
        for scope in self._scopes:
            scope.cache_error()

    def finish(self, error: BaseException | None) -> None:
        for scope in self._scopes:
            scope.finish(error)


class _Silent:
    """The scope of a call nobody watches."""

    def batch(self, documents: int) -> AbstractContextManager[None]:
        return nullcontext()

    def request(self, status_class: str) -> None:
        pass

    def retry(self, reason: str) -> None:
        pass

    def cache(self, hits: int, misses: int) -> None:
        pass

    def cache_error(self) -> None:
        pass

    def finish(self, error: BaseException | None) -> None:
        pass


SILENT: CallScope = _Silent()


class Instruments:
    """The instruments of one client."""

    def __init__(self, members: Sequence[Instrument]) -> None:
        self._members = tuple(members)

    @property
    def members(self) -> tuple[Instrument, ...]:
        """The instruments, in the order the settings gave them."""
        return self._members

    @property
    def active(self) -> bool:
        """Whether any instrument watches."""
        return bool(self._members)

    def start_call(self, route: str, model: str, documents: int) -> CallScope:
        if not self._members:
            return SILENT
        return _Scopes([m.start_call(route, model, documents) for m in self._members])


def instruments(metrics: object, tracing: object) -> Instruments:
    """The instruments a client's ``metrics`` and ``tracing`` settings ask for."""
    members: list[Instrument] = []
    if metrics is True:
        members.append(PrometheusMetrics.default())
    elif metrics:
        members.append(metrics)  # type: ignore[arg-type]
    if tracing is True:
        members.append(OpenTelemetryTracing())
    elif tracing:
        members.append(tracing)  # type: ignore[arg-type]
    return Instruments(members)


# -- Prometheus ------------------------------------------------------------------------------


class PrometheusMetrics:
    """The client's metrics on a ``prometheus_client`` registry (the default one unless given).

    One instance per registry: metrics cannot be registered twice, so share it between
    clients (``metrics=True`` uses :meth:`default`). Needs the ``[metrics]`` extra.
    """

    _default: PrometheusMetrics | None = None

    def __init__(self, registry: Any = None) -> None:
        prom = import_extra(
            "prometheus_client",
            "metrics need prometheus_client: pip install 'rerank-plugins[metrics]'",
        )
        reg = prom.REGISTRY if registry is None else registry
        labels = ("model", "route")
        self.duration = prom.Histogram(
            "rerank_call_duration_seconds",
            "Wall time of one rerank or score call, retries and waits included.",
            (*labels, "outcome"),
            registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.documents = prom.Histogram(
            "rerank_call_documents",
            "Documents in one call.",
            labels,
            registry=reg,
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
        )
        self.requests = prom.Counter(
            "rerank_requests",
            "HTTP requests sent, by status class.",
            (*labels, "status_class"),
            registry=reg,
        )
        self.errors = prom.Counter(
            "rerank_errors",
            "Calls that raised, by error type.",
            (*labels, "error_type"),
            registry=reg,
        )
        self.retries = prom.Counter(
            "rerank_retries", "Requests sent again, by reason.", (*labels, "reason"), registry=reg
        )
        self.cache_hits = prom.Counter(
            "rerank_cache_hits", "Pairs answered from the score cache.", labels, registry=reg
        )
        self.cache_misses = prom.Counter(
            "rerank_cache_misses", "Pairs the score cache did not hold.", labels, registry=reg
        )
        self.cache_errors = prom.Counter(
            "rerank_cache_errors",
            "Cache lookups or stores that failed or timed out (the call went on without).",
            labels,
            registry=reg,
        )
        self.in_flight = prom.Gauge(
            "rerank_calls_in_flight", "Calls running now.", labels, registry=reg
        )

    @classmethod
    def default(cls) -> PrometheusMetrics:
        """The instance on the default registry, made once per process."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def start_call(self, route: str, model: str, documents: int) -> CallScope:
        """A call starts: count it in flight."""
        return _PromScope(self, model, route, documents)


class _PromScope:
    def __init__(self, metrics: PrometheusMetrics, model: str, route: str, documents: int):
        self._m = metrics
        self._labels = (model, route)
        self._start = time.perf_counter()
        metrics.documents.labels(*self._labels).observe(documents)
        metrics.in_flight.labels(*self._labels).inc()

    def batch(self, documents: int) -> AbstractContextManager[None]:
        return nullcontext()

    def request(self, status_class: str) -> None:
        self._m.requests.labels(*self._labels, status_class).inc()

    def retry(self, reason: str) -> None:
        self._m.retries.labels(*self._labels, reason).inc()

    def cache(self, hits: int, misses: int) -> None:
        self._m.cache_hits.labels(*self._labels).inc(hits)
        self._m.cache_misses.labels(*self._labels).inc(misses)

    def cache_error(self) -> None:
        self._m.cache_errors.labels(*self._labels).inc()

    def finish(self, error: BaseException | None) -> None:
        outcome = "ok" if error is None else "error"
        if error is not None:
            self._m.errors.labels(*self._labels, type(error).__name__).inc()
        self._m.duration.labels(*self._labels, outcome).observe(time.perf_counter() - self._start)
        self._m.in_flight.labels(*self._labels).dec()


# -- OpenTelemetry ---------------------------------------------------------------------------


class OpenTelemetryTracing:
    """Spans through ``opentelemetry-api`` (a no-op until an SDK provider is installed).

    Needs the ``[tracing]`` extra. ``tracer_provider`` None uses the global provider.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        trace = import_extra(
            "opentelemetry.trace",
            "tracing needs opentelemetry-api: pip install 'rerank-plugins[tracing]'",
        )
        self._tracer = trace.get_tracer("rerank_plugins", tracer_provider=tracer_provider)

    def start_call(self, route: str, model: str, documents: int) -> CallScope:
        """A call starts: open its span under the caller's current one."""
        return _SpanScope(self._tracer, route, model, documents)


class _SpanScope:
    def __init__(self, tracer: Any, route: str, model: str, documents: int) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self._span = tracer.start_span(
            "rerank",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "openinference.span.kind": "RERANKER",
                "reranker.model_name": model,
                "rerank.route": route,
                "rerank.documents": documents,
            },
        )
        self._retries = 0

    @contextmanager
    def batch(self, documents: int) -> Iterator[None]:
        from opentelemetry import trace

        context = trace.set_span_in_context(self._span)
        with self._tracer.start_as_current_span(
            "rerank.batch", context=context, attributes={"rerank.documents": documents}
        ):
            yield

    def request(self, status_class: str) -> None:
        pass

    def retry(self, reason: str) -> None:
        self._retries += 1
        self._span.add_event("retry", {"reason": reason})

    def cache(self, hits: int, misses: int) -> None:
        self._span.set_attribute("rerank.cache_hits", hits)
        self._span.set_attribute("rerank.cache_misses", misses)

    def cache_error(self) -> None:
        self._span.add_event("cache_error")

    def finish(self, error: BaseException | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("rerank.retries", self._retries)
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self._span.end()

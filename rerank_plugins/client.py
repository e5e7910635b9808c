"""The two clients: ``AsyncRerankClient`` (share one per application) and its sync twin.

Both are thin over ``_core``: they differ only where bytes move and where they wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, Self, TypedDict, TypeVar, Unpack

import httpx

from . import _core
from .config import PromptMode, RerankConfig
from .errors import (
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankInputError,
    RerankTimeoutError,
)
from .types import PreparedCall, RerankResult, ScoreResult, ServerInfo

__all__ = ["AsyncRerankClient", "ClientOptions", "ProgressCallback", "RerankClient"]

logger = logging.getLogger("rerank_plugins")

R = TypeVar("R")

ProgressCallback = Callable[[int, int], None]
"""Called as ``on_progress(done_batches, total_batches)`` each time a batch finishes."""

_USER_AGENT = "rerank-plugins/0.1"


class ClientOptions(TypedDict, total=False):
    """Settings beyond URL, model and key; see :class:`RerankConfig` for each."""

    route: str
    prompt_mode: PromptMode
    instruction: str | None
    max_batch_size: int | None
    max_concurrency: int
    timeout: float
    deadline: float | None
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    truncate: bool


class _BaseClient:
    """What both clients share without I/O: config, headers, URLs, error wrapping."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key: str | None,
        config: RerankConfig | None,
        options: ClientOptions,
    ) -> None:
        if config is not None and (base_url or model or api_key or options):
            raise RerankConfigError("pass either config=... or individual settings, not both")
        self.config = config or RerankConfig.resolve(base_url, model, api_key, **options)
        self._info: ServerInfo | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.config.base_url!r}, model={self.config.model!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # HTTP clients, pools and locks do not pickle; they are rebuilt lazily.
        return {"config": self.config, "_info": self._info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(config=state["config"])  # type: ignore[misc]
        self._info = state["_info"]

    def _url(self, path: str) -> str:
        return self.config.base_url + path

    def _headers(self, request_id: str | None) -> dict[str, str]:
        headers = {"User-Agent": _USER_AGENT}
        if request_id:
            headers["X-Request-Id"] = request_id
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def _model(self, info: ServerInfo) -> str:
        model = self.config.model or info.model
        if not model:
            raise RerankConfigError(
                "no model: pass model=... or set RERANK_MODEL (the server listed none)"
            )
        return model

    def _budget(self, info: ServerInfo, overhead: int) -> int:
        assert info.max_model_len is not None
        budget = _core.document_budget(info.max_model_len, overhead)
        if budget <= 0:
            raise RerankInputError(
                f"the query and prompt take {overhead} tokens, leaving no room for documents "
                f"in the model's window of {info.max_model_len} tokens"
            )
        return budget

    def _wrap_transport_error(self, url: str, exc: httpx.TransportError) -> RerankError:
        if isinstance(exc, httpx.TimeoutException):
            error: RerankError = RerankTimeoutError(
                f"POST {url} timed out after {self.config.timeout:g}s ({type(exc).__name__})",
                url=url,
            )
        else:
            error = RerankConnectionError(
                f"cannot connect to {url}: {exc or type(exc).__name__}. Is a vLLM server "
                "running there? Start one with: rerank-serve MODEL --port PORT",
                url=url,
            )
        error.__cause__ = exc
        return error

    def _deadline_at(self) -> float | None:
        return None if self.config.deadline is None else time.monotonic() + self.config.deadline

    def _give_up(
        self, error: RerankError, attempt: int, retry_after: str | None, deadline_at: float | None
    ) -> float:
        """The delay before the next try; raises ``error`` when there is none."""
        delay = _core.next_retry_delay(
            self.config, attempt, retry_after, deadline_at, time.monotonic()
        )
        if delay is None:
            raise error
        logger.debug("retry %d after %.2fs: %s", attempt, delay, error)
        return delay

    def _check_response(self, url: str, response: httpx.Response) -> RerankError | None:
        if response.is_success:
            return None
        error = _core.status_error(url, response.status_code, response.text)
        if response.status_code not in _core.RETRY_STATUSES:
            raise error
        return error

    def _timeout(self, deadline_at: float | None) -> float:
        timeout = _core.request_timeout(self.config, deadline_at, time.monotonic())
        if timeout <= 0:
            raise RerankTimeoutError(
                f"deadline of {self.config.deadline:g}s passed", url=self.config.base_url
            )
        return timeout


class AsyncRerankClient(_BaseClient):
    """Async client for vLLM's rerank API; one per application, safe across event loops.

    Args:
        base_url: Server root, e.g. ``http://127.0.0.1:8000``; else ``RERANK_BASE_URL``.
        model: Served model name; else ``RERANK_MODEL``; else the server's first model.
        api_key: Bearer token; else ``RERANK_API_KEY``. Never logged or shown in reprs.
        config: A ready :class:`RerankConfig` instead of the settings above.
        transport: An ``httpx.AsyncBaseTransport`` for every HTTP client this makes (tests,
            proxies).
        http_client: An ``httpx.AsyncClient`` to use as is; the caller closes it.
        **options: Further settings, see :class:`RerankConfig`.

    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        config: RerankConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, model, api_key, config, options)
        self._transport = transport
        self._user_http = http_client
        self._http_client: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def to_sync(self) -> RerankClient:
        """The sync twin: same config and what was learnt of the server, its own HTTP client."""
        twin = RerankClient(config=self.config)
        twin._info = self._info
        return twin

    def _http(self) -> httpx.AsyncClient:
        if self._user_http is not None:
            return self._user_http
        loop = asyncio.get_running_loop()
        # An httpx.AsyncClient belongs to the loop it first ran on; a new loop
        # (a second asyncio.run(), a new notebook kernel loop) gets a new one.
        if self._http_client is None or self._http_loop is not loop:
            self._http_client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self.config.timeout,
                limits=httpx.Limits(max_connections=self.config.max_concurrency + 2),
            )
            self._http_loop = loop
        return self._http_client

    async def aclose(self) -> None:
        """Close the HTTP client this made (not one passed in as ``http_client``)."""
        client, self._http_client = self._http_client, None
        if client is not None and self._http_loop is asyncio.get_running_loop():
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        request_id: str | None,
        deadline_at: float | None,
    ) -> str:
        url = self._url(path)
        attempt = 0
        while True:
            retry_after = None
            try:
                response = await self._http().request(
                    method,
                    url,
                    json=payload,
                    headers=self._headers(request_id),
                    timeout=self._timeout(deadline_at),
                )
            except httpx.TransportError as exc:
                error = self._wrap_transport_error(url, exc)
            else:
                status_error = self._check_response(url, response)
                if status_error is None:
                    return response.text
                error, retry_after = status_error, response.headers.get("retry-after")
            attempt += 1
            await asyncio.sleep(self._give_up(error, attempt, retry_after, deadline_at))

    async def server_info(self) -> ServerInfo:
        """``/version`` and ``/v1/models``, read once per client."""
        if self._info is None:
            version, models = (
                await self._get_optional("/version"),
                await self._get_optional("/v1/models"),
            )
            self._info = _core.parse_server_info(version, models, self.config.model)
            logger.debug("server at %s: %s", self.config.base_url, self._info)
        return self._info

    async def _get_optional(self, path: str) -> str | None:
        try:
            return await self._request("GET", path, None, None, None)
        except RerankConnectionError:
            raise
        except RerankError:
            return None  # not a vLLM server, or an old one: its features are then assumed

    async def render(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> PreparedCall:
        """The exact query and document texts this client would send (after truncation)."""
        info = await self.server_info()
        return await self._prepare(info, query, _core.check_input(query, documents), instruction)

    async def _prepare(
        self, info: ServerInfo, query: str, docs: list[str], instruction: str | None
    ) -> PreparedCall:
        mode = _core.effective_mode(self.config, info)
        instruction = instruction or self.config.instruction
        if self.config.truncate and info.max_model_len and docs:
            docs = await self._truncate(info, mode, query, docs, instruction)
        return _core.prepare_call(mode, query, docs, instruction, info)

    async def _truncate(
        self, info: ServerInfo, mode: str, query: str, docs: list[str], instruction: str | None
    ) -> list[str]:
        before, after = _core.overhead_text(mode, query, instruction)
        model = self._model(info)
        overhead = await self._count_tokens(model, before + after)
        budget = self._budget(info, overhead)
        long = [i for i, doc in enumerate(docs) if _core.may_exceed(doc, budget)]
        if not long:
            return docs
        limiter = asyncio.Semaphore(self.config.max_concurrency)

        async def cut(i: int) -> None:
            async with limiter:
                docs[i] = await self._cut_to(model, docs[i], budget)

        docs = list(docs)
        await asyncio.gather(*(cut(i) for i in long))
        return docs

    async def _count_tokens(self, model: str, text: str) -> int:
        body = await self._request(
            "POST", "/tokenize", {"model": model, "prompt": text}, None, None
        )
        return _core.token_count(self._url("/tokenize"), body)

    async def _cut_to(self, model: str, text: str, budget: int) -> str:
        payload = {"model": model, "prompt": text, "add_special_tokens": False}
        tokens = _core.tokens_of(
            self._url("/tokenize"), await self._request("POST", "/tokenize", payload, None, None)
        )
        if len(tokens) <= budget:
            return text
        body = await self._request(
            "POST", "/detokenize", {"model": model, "tokens": tokens[:budget]}, None, None
        )
        return _core.detokenized(self._url("/detokenize"), body)

    async def _run_batches(
        self,
        make_request: Callable[[_core.Batch, str], Any],
        batches: list[_core.Batch],
        request_id: str,
        on_progress: ProgressCallback | None,
    ) -> list[Any]:
        limiter = asyncio.Semaphore(self.config.max_concurrency)
        results: list[Any] = [None] * len(batches)
        done = 0

        async def run(number: int, batch: _core.Batch) -> None:
            nonlocal done
            async with limiter:
                results[number] = await make_request(batch, f"{request_id}-{number}")
            done += 1
            if on_progress is not None:
                on_progress(done, len(batches))

        tasks = [asyncio.ensure_future(run(n, b)) for n, b in enumerate(batches)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # the first failure cancels the batches still in flight
        return results

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first, cut to ``top_n`` (None: all)."""
        _core.check_top_n(top_n)
        endpoint = _core.RerankEndpoint(self.config.route, top_n)
        return await self._call(endpoint, query, documents, instruction, on_progress, request_id)

    async def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Score each document against ``query``, in input order (vLLM's ``/score``)."""
        endpoint = _core.ScoreEndpoint()
        return await self._call(endpoint, query, documents, instruction, on_progress, request_id)

    async def _call(
        self,
        endpoint: _core.Endpoint[R],
        query: str,
        documents: Sequence[str],
        instruction: str | None,
        on_progress: ProgressCallback | None,
        request_id: str | None,
    ) -> R:
        docs = _core.check_input(query, documents)
        request_id = request_id or _core.new_request_id()
        if not docs:
            return endpoint.empty(self.config.model or "", request_id)
        deadline_at = self._deadline_at()
        info = await self.server_info()
        model = self._model(info)
        call = await self._prepare(info, query, docs, instruction)
        batches = _core.plan_batches(call.documents, self.config.max_batch_size)
        logger.debug("%s: %d documents in %d batches", endpoint.path, len(docs), len(batches))
        url = self._url(endpoint.path)

        async def send(batch: _core.Batch, batch_id: str) -> Any:
            payload = endpoint.payload(model, call, batch)
            body = await self._request("POST", endpoint.path, payload, batch_id, deadline_at)
            return endpoint.parse(url, body, batch, docs)

        parts = await self._run_batches(send, batches, request_id, on_progress)
        return endpoint.result(parts, model, request_id)


class RerankClient(_BaseClient):
    """Blocking twin of :class:`AsyncRerankClient`: same settings, same results.

    Batches go out concurrently from a thread pool, so a long list is as fast as with the
    async client; it is safe to call inside a running event loop (Jupyter, Gradio).
    ``transport`` and ``http_client`` are the sync ``httpx`` counterparts.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        config: RerankConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(base_url, model, api_key, config, options)
        self._transport = transport
        self._user_http = http_client
        self._http_client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._user_http is not None:
            return self._user_http
        if self._http_client is None:
            self._http_client = httpx.Client(
                transport=self._transport,
                timeout=self.config.timeout,
                limits=httpx.Limits(max_connections=self.config.max_concurrency + 2),
            )
        return self._http_client

    def close(self) -> None:
        """Close the HTTP client this made (not one passed in as ``http_client``)."""
        client, self._http_client = self._http_client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        request_id: str | None,
        deadline_at: float | None,
    ) -> str:
        url = self._url(path)
        attempt = 0
        while True:
            retry_after = None
            try:
                response = self._http().request(
                    method,
                    url,
                    json=payload,
                    headers=self._headers(request_id),
                    timeout=self._timeout(deadline_at),
                )
            except httpx.TransportError as exc:
                error = self._wrap_transport_error(url, exc)
            else:
                status_error = self._check_response(url, response)
                if status_error is None:
                    return response.text
                error, retry_after = status_error, response.headers.get("retry-after")
            attempt += 1
            time.sleep(self._give_up(error, attempt, retry_after, deadline_at))

    def server_info(self) -> ServerInfo:
        """``/version`` and ``/v1/models``, read once per client."""
        if self._info is None:
            version, models = self._get_optional("/version"), self._get_optional("/v1/models")
            self._info = _core.parse_server_info(version, models, self.config.model)
            logger.debug("server at %s: %s", self.config.base_url, self._info)
        return self._info

    def _get_optional(self, path: str) -> str | None:
        try:
            return self._request("GET", path, None, None, None)
        except RerankConnectionError:
            raise
        except RerankError:
            return None  # not a vLLM server, or an old one: its features are then assumed

    def render(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> PreparedCall:
        """The exact query and document texts this client would send (after truncation)."""
        info = self.server_info()
        return self._prepare(info, query, _core.check_input(query, documents), instruction)

    def _prepare(
        self, info: ServerInfo, query: str, docs: list[str], instruction: str | None
    ) -> PreparedCall:
        mode = _core.effective_mode(self.config, info)
        instruction = instruction or self.config.instruction
        if self.config.truncate and info.max_model_len and docs:
            docs = self._truncate(info, mode, query, docs, instruction)
        return _core.prepare_call(mode, query, docs, instruction, info)

    def _truncate(
        self, info: ServerInfo, mode: str, query: str, docs: list[str], instruction: str | None
    ) -> list[str]:
        before, after = _core.overhead_text(mode, query, instruction)
        model = self._model(info)
        body = self._request(
            "POST", "/tokenize", {"model": model, "prompt": before + after}, None, None
        )
        budget = self._budget(info, _core.token_count(self._url("/tokenize"), body))
        long = [i for i, doc in enumerate(docs) if _core.may_exceed(doc, budget)]
        if not long:
            return docs
        docs = list(docs)
        with ThreadPoolExecutor(self.config.max_concurrency) as pool:
            cut = pool.map(lambda i: self._cut_to(model, docs[i], budget), long)
            for i, text in zip(long, cut, strict=True):
                docs[i] = text
        return docs

    def _cut_to(self, model: str, text: str, budget: int) -> str:
        payload = {"model": model, "prompt": text, "add_special_tokens": False}
        tokens = _core.tokens_of(
            self._url("/tokenize"), self._request("POST", "/tokenize", payload, None, None)
        )
        if len(tokens) <= budget:
            return text
        body = self._request(
            "POST", "/detokenize", {"model": model, "tokens": tokens[:budget]}, None, None
        )
        return _core.detokenized(self._url("/detokenize"), body)

    def _run_batches(
        self,
        make_request: Callable[[_core.Batch, str], Any],
        batches: list[_core.Batch],
        request_id: str,
        on_progress: ProgressCallback | None,
    ) -> list[Any]:
        if len(batches) == 1:
            result = make_request(batches[0], f"{request_id}-0")
            if on_progress is not None:
                on_progress(1, 1)
            return [result]
        workers = min(self.config.max_concurrency, len(batches))
        with ThreadPoolExecutor(workers, thread_name_prefix="rerank") as pool:
            futures: dict[Future[Any], int] = {
                pool.submit(make_request, b, f"{request_id}-{n}"): n for n, b in enumerate(batches)
            }
            results: list[Any] = [None] * len(batches)
            pending = set(futures)
            done = 0
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()  # batches not yet started are not sent
                        raise future.exception()  # type: ignore[misc]
                    results[futures[future]] = future.result()
                    done += 1
                    if on_progress is not None:
                        on_progress(done, len(batches))
        return results

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first, cut to ``top_n`` (None: all)."""
        _core.check_top_n(top_n)
        endpoint = _core.RerankEndpoint(self.config.route, top_n)
        return self._call(endpoint, query, documents, instruction, on_progress, request_id)

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        on_progress: ProgressCallback | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Score each document against ``query``, in input order (vLLM's ``/score``)."""
        endpoint = _core.ScoreEndpoint()
        return self._call(endpoint, query, documents, instruction, on_progress, request_id)

    def _call(
        self,
        endpoint: _core.Endpoint[R],
        query: str,
        documents: Sequence[str],
        instruction: str | None,
        on_progress: ProgressCallback | None,
        request_id: str | None,
    ) -> R:
        docs = _core.check_input(query, documents)
        request_id = request_id or _core.new_request_id()
        if not docs:
            return endpoint.empty(self.config.model or "", request_id)
        deadline_at = self._deadline_at()
        info = self.server_info()
        model = self._model(info)
        call = self._prepare(info, query, docs, instruction)
        batches = _core.plan_batches(call.documents, self.config.max_batch_size)
        logger.debug("%s: %d documents in %d batches", endpoint.path, len(docs), len(batches))
        url = self._url(endpoint.path)

        def send(batch: _core.Batch, batch_id: str) -> Any:
            payload = endpoint.payload(model, call, batch)
            body = self._request("POST", endpoint.path, payload, batch_id, deadline_at)
            return endpoint.parse(url, body, batch, docs)

        parts = self._run_batches(send, batches, request_id, on_progress)
        return endpoint.result(parts, model, request_id)

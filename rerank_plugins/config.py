"""Client settings: arguments first, then environment variables, then defaults.

=================  =====================  ==========================
argument           environment variable   default
=================  =====================  ==========================
``base_url``       ``RERANK_BASE_URL``    required
``model``          ``RERANK_MODEL``       the server's first model
``api_key``        ``RERANK_API_KEY``     none
``prompt_mode``    ``RERANK_PROMPT_MODE`` ``"auto"``
``images``         ``RERANK_IMAGES``      ``"as_text"``
``long_documents`` ``RERANK_LONG_DOCUMENTS`` ``"truncate"``
=================  =====================  ==========================
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from .errors import RerankConfigError

__all__ = ["PROMPT_MODES", "ROUTES", "ImagePolicy", "LongDocuments", "PromptMode", "RerankConfig"]

PromptMode = Literal["auto", "server", "client", "raw"]
# The one list of prompt modes (rerank-serve serves all but "raw", a client-only setting).
PROMPT_MODES: tuple[PromptMode, ...] = get_args(PromptMode)
ImagePolicy = Literal["as_text", "error"]
LongDocuments = Literal["truncate", "chunk"]
_IMAGE_POLICIES: tuple[ImagePolicy, ...] = get_args(ImagePolicy)
_LONG_DOCUMENTS: tuple[LongDocuments, ...] = get_args(LongDocuments)
# /v2/rerank first: it works on vLLM directly, passes vllm-router and LiteLLM unchanged, and
# vLLM's own --api-key check guards it (it guards nothing outside /v1 and /v2).
ROUTES = ("/v2/rerank", "/rerank", "/v1/rerank")
SCORE_ROUTES = ("/score", "/v1/score")
# The settings an environment variable fills when the argument is not given (the table above).
_FROM_ENVIRONMENT = {
    "base_url": "RERANK_BASE_URL",
    "model": "RERANK_MODEL",
    "api_key": "RERANK_API_KEY",
    "prompt_mode": "RERANK_PROMPT_MODE",
    "images": "RERANK_IMAGES",
    "long_documents": "RERANK_LONG_DOCUMENTS",
}
Verify = bool | str | ssl.SSLContext
Cert = str | tuple[str, str]


@dataclass(frozen=True)
class RerankConfig:
    """Everything a client needs to talk to one vLLM server; immutable and picklable.

    ``prompt_mode`` says who applies a reranker's prompt: ``"server"`` (the server applies
    its template; the client sends plain text and ``instruction``), ``"client"`` (the client
    wraps query and documents in Qwen3-Reranker's official prompt, for a server without a
    template), ``"raw"`` (text is sent as is to a server without a template: models that need
    no prompt). ``"auto"`` asks the server once which it does and picks accordingly; an
    explicit mode that contradicts the server raises :class:`RerankConfigError`.

    ``max_batch_size=None`` sends each call as one request (listwise models, whose scores
    depend on the whole list). ``timeout`` bounds one HTTP request from send to the last
    byte; ``deadline`` bounds everything one call does (server reads, tokenizing, every
    batch, retries and waits). ``max_concurrency`` is the requests one call keeps in flight;
    ``max_connections`` bounds the connections of a client's pool, across callers (a client
    has one on its home loop and one on its I/O thread; see ``AsyncRerankClient``).
    ``verify`` is True, False, a CA bundle path or an ``ssl.SSLContext``; ``cert`` a client
    certificate (a PEM path holding the key, or a ``(cert, key)`` pair of paths).
    ``score_route`` None is ``/v1/score`` with an API key (vLLM guards it), else ``/score``.
    ``listwise`` None asks the model's family (:func:`rerank_plugins.families.is_listwise`,
    by the served name and the checkpoint ``/v1/models`` reports): a listwise model (one that
    ranks a whole list in one prompt, e.g. jina-reranker-v3) gets one request per call
    whatever ``max_batch_size`` says, and no cache; True or False overrides the family.
    ``routing_header`` (e.g. ``"X-Session-ID"``) sends a hash of the query in that header
    with every batch, for routers that hash it to pick a replica (vllm-router's
    ``consistent_hash``); off by default.
    ``images`` says what a model whose family takes text only does with documents that carry
    images: ``"as_text"`` ranks each by its text alone (an :class:`ImageDocument`'s ``text``,
    else an empty string) with the rest, logging once per client that images were not seen;
    ``"error"`` raises :class:`RerankInputError` instead. A model of no known family counts as
    text-only.
    ``long_documents`` says what happens to a document longer than the model's window:
    ``"truncate"`` cuts it (the prompt's end is kept, so its tail is never seen);
    ``"chunk"`` splits it into overlapping windows that fit (a quarter of a window overlaps
    the next), scores each and gives the document its best chunk's score (MaxP), naming the
    chunk on the result item (``item.chunk``; ``score()`` gives the best score alone);
    ``usage`` counts every chunk, and each chunk is cached as a document would be.
    ``cache`` is a :mod:`rerank_plugins.cache` score cache (None: none); ``metrics`` True or a
    :class:`~rerank_plugins.telemetry.PrometheusMetrics`; ``tracing`` True or an
    :class:`~rerank_plugins.telemetry.OpenTelemetryTracing`.
    """

    base_url: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    route: str = "/v2/rerank"
    score_route: str | None = None
    prompt_mode: PromptMode = "auto"
    instruction: str | None = None
    max_batch_size: int | None = 64
    max_concurrency: int = 4
    timeout: float = 60.0
    deadline: float | None = None
    max_retries: int = 2
    retry_backoff: float = 0.5
    retry_backoff_max: float = 8.0
    truncate: bool = True
    long_documents: LongDocuments = "truncate"
    images: ImagePolicy = "as_text"
    max_connections: int = 16
    verify: Verify = field(default=True, compare=False)
    cert: Cert | None = None
    proxy: str | None = field(default=None, repr=False)
    trust_env: bool = True
    routing_header: str | None = None
    listwise: bool | None = None
    # Live objects, not settings: not compared, not shown, not serialized by the adapters.
    cache: Any = field(default=None, compare=False, repr=False)
    metrics: Any = field(default=False, compare=False, repr=False)
    tracing: Any = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise RerankConfigError(
                f"base_url must start with http:// or https://, got {self.base_url!r} "
                "(argument base_url or env RERANK_BASE_URL)"
            )
        if self.route not in ROUTES:
            raise RerankConfigError(f"route must be one of {ROUTES}, got {self.route!r}")
        if self.score_route is not None and self.score_route not in SCORE_ROUTES:
            raise RerankConfigError(
                f"score_route must be one of {SCORE_ROUTES} or None, got {self.score_route!r}"
            )
        if self.cache is not None and not callable(getattr(self.cache, "get_many", None)):
            raise RerankConfigError(
                "cache must be a score cache such as rerank_plugins.cache.InMemoryCache(), "
                f"got {type(self.cache).__name__}"
            )
        if not isinstance(self.verify, bool | str | ssl.SSLContext):
            raise RerankConfigError(
                "verify must be True, False, a CA bundle path or an ssl.SSLContext, "
                f"got {type(self.verify).__name__}"
            )
        if self.prompt_mode not in PROMPT_MODES:
            raise RerankConfigError(
                f"prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r} "
                "(argument prompt_mode or env RERANK_PROMPT_MODE)"
            )
        if self.images not in _IMAGE_POLICIES:
            raise RerankConfigError(
                f"images must be one of {_IMAGE_POLICIES}, got {self.images!r} "
                "(argument images or env RERANK_IMAGES)"
            )
        if self.long_documents not in _LONG_DOCUMENTS:
            raise RerankConfigError(
                f"long_documents must be one of {_LONG_DOCUMENTS}, got {self.long_documents!r} "
                "(argument long_documents or env RERANK_LONG_DOCUMENTS)"
            )
        _check_positive("max_concurrency", self.max_concurrency)
        _check_positive("max_connections", self.max_connections)
        _check_positive("timeout", self.timeout)
        if self.max_batch_size is not None:
            _check_positive("max_batch_size", self.max_batch_size)
        if self.deadline is not None:
            _check_positive("deadline", self.deadline)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise RerankConfigError(f"max_retries must be an int, got {self.max_retries!r:.60}")
        if self.max_retries < 0:
            raise RerankConfigError(f"max_retries must be >= 0, got {self.max_retries!r}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        secret = ", api_key='***'" if self.api_key else ""
        return f"RerankConfig({shown}{secret})"

    @classmethod
    def resolve(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        **options: Any,
    ) -> RerankConfig:
        """Build a config from arguments, falling back to ``RERANK_*`` environment variables."""
        options.update(base_url=base_url, model=model, api_key=api_key)
        for name, env in _FROM_ENVIRONMENT.items():
            # None or "" means "not given": the environment variable, else the default.
            value = options.pop(name, None) or os.environ.get(env)
            if value:
                options[name] = value
        if "base_url" not in options:
            raise RerankConfigError(
                "no server URL: pass base_url=... or set RERANK_BASE_URL "
                "(start a server with: rerank-serve MODEL)"
            )
        options["base_url"] = options["base_url"].rstrip("/")
        return cls(**options)

    @property
    def score_path(self) -> str:
        """The route ``score()`` posts to."""
        if self.score_route is not None:
            return self.score_route
        return "/v1/score" if self.api_key else "/score"

    def replace(self, **changes: Any) -> RerankConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _check_positive(name: str, value: object) -> None:
    # NaN fails "> 0" too; bools are ints to Python but never a meaningful setting here.
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise RerankConfigError(f"{name} must be a number > 0, got {value!r:.60}")

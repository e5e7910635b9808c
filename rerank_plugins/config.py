"""Client settings: arguments first, then environment variables, then defaults.

=================  =====================  ==========================
argument           environment variable   default
=================  =====================  ==========================
``base_url``       ``RERANK_BASE_URL``    required
``model``          ``RERANK_MODEL``       the server's first model
``api_key``        ``RERANK_API_KEY``     none
``prompt_mode``    ``RERANK_PROMPT_MODE`` ``"auto"``
=================  =====================  ==========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, cast

from .errors import RerankConfigError

__all__ = ["ROUTES", "PromptMode", "RerankConfig"]

PromptMode = Literal["auto", "server", "client", "raw"]
ROUTES = ("/rerank", "/v1/rerank", "/v2/rerank")
_PROMPT_MODES = ("auto", "server", "client", "raw")


@dataclass(frozen=True)
class RerankConfig:
    """Everything a client needs to talk to one vLLM server; immutable and picklable.

    ``prompt_mode`` says who applies Qwen3-Reranker's prompt: ``"server"`` (vLLM was started
    with this package's chat template; the client sends ``instruction``), ``"client"`` (the
    client wraps query and documents in the official prompt), ``"raw"`` (text is sent as is:
    every other model). ``"auto"`` is ``"client"`` for a Qwen3-Reranker model name, else
    ``"raw"``, which matches a server started by ``rerank-serve`` with its defaults.

    ``max_batch_size=None`` sends each call as one request (listwise models, whose scores
    depend on the whole list). ``deadline`` bounds a whole call, retries included.
    """

    base_url: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    route: str = "/rerank"
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

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise RerankConfigError(
                f"base_url must start with http:// or https://, got {self.base_url!r} "
                "(argument base_url or env RERANK_BASE_URL)"
            )
        if self.route not in ROUTES:
            raise RerankConfigError(f"route must be one of {ROUTES}, got {self.route!r}")
        if self.prompt_mode not in _PROMPT_MODES:
            raise RerankConfigError(
                f"prompt_mode must be one of {_PROMPT_MODES}, got {self.prompt_mode!r} "
                "(argument prompt_mode or env RERANK_PROMPT_MODE)"
            )
        _check_positive("max_concurrency", self.max_concurrency)
        _check_positive("timeout", self.timeout)
        if self.max_batch_size is not None:
            _check_positive("max_batch_size", self.max_batch_size)
        if self.deadline is not None:
            _check_positive("deadline", self.deadline)
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
        prompt_mode: PromptMode | None = None,
        **options: Any,
    ) -> RerankConfig:
        """Build a config from arguments, falling back to ``RERANK_*`` environment variables."""
        base_url = base_url or os.environ.get("RERANK_BASE_URL")
        if not base_url:
            raise RerankConfigError(
                "no server URL: pass base_url=... or set RERANK_BASE_URL "
                "(start a server with: rerank-serve MODEL)"
            )
        mode = prompt_mode or os.environ.get("RERANK_PROMPT_MODE") or "auto"
        return cls(
            base_url=base_url.rstrip("/"),
            model=model or os.environ.get("RERANK_MODEL") or None,
            api_key=api_key or os.environ.get("RERANK_API_KEY") or None,
            prompt_mode=cast(PromptMode, mode),
            **options,
        )

    def replace(self, **changes: Any) -> RerankConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise RerankConfigError(f"{name} must be > 0, got {value!r}")

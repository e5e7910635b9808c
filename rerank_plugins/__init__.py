"""rerank_plugins: vLLM-served rerankers for LlamaIndex and LangChain.

The core is framework-free: ``import rerank_plugins`` loads httpx and nothing else heavy.
Adapters live in ``rerank_plugins.llamaindex`` and ``rerank_plugins.langchain``.
"""

from __future__ import annotations

from .client import AsyncRerankClient, ClientOptions, ProgressCallback, RerankClient
from .config import PromptMode, RerankConfig
from .errors import (
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankInputError,
    RerankResponseError,
    RerankStatusError,
    RerankTimeoutError,
)
from .prompts import DEFAULT_INSTRUCTION
from .types import PreparedCall, RerankItem, RerankResult, ScoreResult, ServerInfo, Usage

__all__ = [
    "DEFAULT_INSTRUCTION",
    "AsyncRerankClient",
    "ClientOptions",
    "PreparedCall",
    "ProgressCallback",
    "PromptMode",
    "RerankClient",
    "RerankConfig",
    "RerankConfigError",
    "RerankConnectionError",
    "RerankError",
    "RerankInputError",
    "RerankItem",
    "RerankResponseError",
    "RerankResult",
    "RerankStatusError",
    "RerankTimeoutError",
    "ScoreResult",
    "ServerInfo",
    "Usage",
]

__version__ = "0.1.0"

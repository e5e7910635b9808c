"""The error tree of rerank_plugins: every failure a caller can catch.

RerankError
├── RerankConfigError        a setting is missing or invalid (names the argument and env var)
├── RerankInputError         the query or documents cannot be sent as given
├── RerankConnectionError    the server could not be reached
│   └── RerankTimeoutError   the server did not answer in time
├── RerankStatusError        the server answered with a non-2xx status
└── RerankResponseError      the server answered 2xx with a body we cannot read
"""

from __future__ import annotations

__all__ = [
    "RerankConfigError",
    "RerankConnectionError",
    "RerankError",
    "RerankInputError",
    "RerankResponseError",
    "RerankStatusError",
    "RerankTimeoutError",
]


class RerankError(Exception):
    """Base class of every error raised by rerank_plugins."""


class RerankConfigError(RerankError, ValueError):
    """A required setting is missing or a setting has an invalid value."""


class RerankInputError(RerankError, ValueError):
    """The query or the documents cannot be sent as given."""


class RerankConnectionError(RerankError):
    """The server could not be reached (refused, reset, DNS, TLS)."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class RerankTimeoutError(RerankConnectionError):
    """The server did not answer within the timeout or the call's deadline."""


class RerankStatusError(RerankError):
    """The server answered with a non-2xx HTTP status."""

    def __init__(self, message: str, *, url: str, status_code: int, server_message: str) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.server_message = server_message


class RerankResponseError(RerankError):
    """The server answered 2xx, but the body is not the shape the API promises."""

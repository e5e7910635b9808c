"""The demo's words in English and Chinese, and which of the two a visitor gets.

Two paths, because Gradio translates only what the page was built with:

* static text (labels, buttons, the banner) goes to the browser as ``gr.I18n`` keys, and the
  page picks the language the browser asks for (``navigator.language``);
* text a handler writes (status lines, error messages, tables, cards, the chart) is chosen on
  the server from the request's ``Accept-Language``, which the same browser setting fills.

``--lang en|zh`` fixes the language for both paths. Corpus text, queries and model output are
never translated; library exceptions stay English and are mapped to a message here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import gradio as gr

from rerank_plugins import (
    RerankConnectionError,
    RerankError,
    RerankInputError,
    RerankResponseError,
    RerankStatusError,
    RerankTimeoutError,
)

from .messages import LANGUAGES, Lang, text

__all__ = ["UiText", "accept_language", "error_text", "request_language"]


def accept_language(header: str | None) -> Lang:
    """The first of our languages an ``Accept-Language`` header asks for (English if none).

    ``zh-CN,zh;q=0.9,en;q=0.8`` gives ``zh``; ``fr,en;q=0.5`` gives ``en``; ``fr`` gives ``en``.
    """
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return cast(Lang, primary)
    return "en"


def request_language(request: gr.Request | None, fixed: Lang | None = None) -> Lang:
    """The language of one request: ``fixed`` (``--lang``) if set, else the browser's."""
    if fixed is not None:
        return fixed
    if request is None:
        return "en"
    headers = getattr(request, "headers", None) or {}
    return accept_language(headers.get("accept-language"))


def error_text(lang: Lang, exc: RerankError) -> str:
    """A library exception as the user reads it: English as raised, or mapped to Chinese.

    The Chinese message says what happened and what to do, by the exception's type; the
    English original (message key ``err_detail``) can follow it as the detail.
    """
    detail = str(exc)
    url = getattr(exc, "url", "")
    if isinstance(exc, RerankTimeoutError):
        key = "err_timeout"
    elif isinstance(exc, RerankConnectionError):
        key = "err_connection"
    elif isinstance(exc, RerankStatusError):
        key = "err_status"
    elif isinstance(exc, RerankResponseError):
        key = "err_response"
    elif isinstance(exc, RerankInputError):
        key = "err_input"
    else:
        key = "err_prefix"
    status = getattr(exc, "status_code", "")
    return text(lang, key, detail=detail, url=url, status=status)


class UiText:
    """Static page text for one demo: ``gr.I18n`` keys, or plain strings with ``--lang``.

    Calling it with a key (and the key's parameters) gives what a component takes as its
    label or value. Following the browser, each call registers the filled-in message in both
    languages under its own key, so text built from the backend (the model name, the banner)
    is translated too; :attr:`i18n` is what ``launch`` needs.
    """

    def __init__(self, fixed: Lang | None = None) -> None:
        self.fixed = fixed
        self._translations: dict[Lang, dict[str, str]] = {lang: {} for lang in LANGUAGES}

    def __call__(self, key: str, /, **params: Any) -> Any:
        """The text of ``key``: a plain string (fixed language) or a ``gr.I18n`` key."""
        return self.each(key, lambda lang: text(lang, key, **params), unique=bool(params))

    def each(self, key: str, render: Callable[[Lang], str], *, unique: bool = True) -> Any:
        """Text built per language by ``render`` (the banner joins several messages)."""
        if self.fixed is not None:
            return render(self.fixed)
        # Namespaced: the page also looks up plain strings as keys, so a document or a query
        # that reads "query" must not match one of ours.
        name = f"rr.{key}.{len(self._translations['en'])}" if unique else f"rr.{key}"
        for lang in LANGUAGES:
            self._translations[lang][name] = render(lang)
        return gr.I18n()(name)

    @property
    def i18n(self) -> gr.I18n:
        """Every registered message in both languages, for ``Blocks.launch(i18n=...)``."""
        return gr.I18n(**{lang: dict(messages) for lang, messages in self._translations.items()})

"""The demo's event handlers: UI values in, display values out, errors as readable messages.

Kept apart from the layout so tests call them directly. Every handler uses the one shared
``AsyncRerankClient`` it was given, and answers in the visitor's language (``--lang``, else
the request's ``Accept-Language``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from rerank_plugins import AsyncRerankClient, RerankError
from rerank_plugins.eval.languages import cjk_share, text_language
from rerank_plugins.metrics import ndcg_at_k
from rerank_plugins.retrieval import Hit

from .backend import Backend
from .corpora import Corpus, PublicSet
from .i18n import error_text, request_language
from .inputs import (
    MAX_DOCUMENTS,
    MAX_UPLOAD_BYTES,
    SPLIT_MODES,
    DocumentsError,
    parse_file,
    parse_text,
)
from .messages import MESSAGES, Lang, language_name, languages_label, text
from .pipeline import IndexCache, SearchOutcome, bm25_order, rerank_hits, run_search
from .views import (
    comparison_figure,
    documents_html,
    list_columns,
    list_table,
    results_table,
    table_columns,
    timing_markdown,
)

__all__ = [
    "OWN_DOCS",
    "RERANK_ANYWAY",
    "Handlers",
    "error_markdown",
    "judged_markdown",
    "user_documents",
]

logger = logging.getLogger("demo")

OWN_DOCS = text("en", "own_docs")
"""The corpus picker's value for the user's own documents."""
RERANK_ANYWAY = text("en", "rerank_anyway")
NDCG_DEPTH = 10
SearchOutputs = tuple[str, str, pd.DataFrame, Any, str, str]
"""Status, timings, table, chart, documents, judgements (nDCG@10 on a public set)."""


def error_markdown(message: str) -> str:
    """An error as the status line shows it."""
    return f"⚠ **{message}**"


def _split_mode(split: str) -> Any:
    # The picker sends the mode ("lines"); an API caller may still send the English label.
    return SPLIT_MODES.get(split) or (split if split in SPLIT_MODES.values() else "auto")


def user_documents(
    pasted: str | None, upload: str | None, split: str, lang: Lang = "en"
) -> tuple[list[str], str]:
    """The user's documents (upload first, then pasted) and a note saying where they came from.

    Raises:
        DocumentsError: a limit is exceeded or the file cannot be read.

    """
    mode = _split_mode(split)
    docs: list[str] = []
    sources = []
    if upload:
        from_file = parse_file(upload, mode)
        docs += from_file
        name = os.path.basename(upload)
        sources.append(text(lang, "source_file", n=f"{len(from_file):,}", name=name))
    if pasted and pasted.strip():
        from_paste = parse_text(pasted, mode)
        docs += from_paste
        sources.append(text(lang, "source_pasted", n=f"{len(from_paste):,}"))
    if len(docs) > MAX_DOCUMENTS:
        raise DocumentsError("docs_too_many_together", n=len(docs), limit=MAX_DOCUMENTS)
    return docs, " + ".join(sources)


def judged_markdown(
    outcome: SearchOutcome,
    doc_ids: Sequence[str],
    grades: Mapping[int, int],
    lang: Lang = "en",
) -> str:
    """nDCG@10 of BM25's list and of the reranked list on one judged query, and the verdict.

    ``grades`` maps corpus positions to relevance grades; both lists are scored with the
    package's metric (trec_eval's linear gain) against every judged document of the query.
    """
    relevance = {doc_ids[i]: grade for i, grade in grades.items()}
    bm25 = ndcg_at_k([doc_ids[h.index] for h in outcome.hits], relevance, NDCG_DEPTH)
    reranked = ndcg_at_k([doc_ids[r.index] for r in outcome.ranked], relevance, NDCG_DEPTH)
    if not outcome.reranked:
        verdict = text(lang, "verdict_skipped")
    elif reranked > bm25:
        verdict = text(lang, "verdict_up")
    elif reranked < bm25:
        verdict = text(lang, "verdict_down")
    else:
        verdict = text(lang, "verdict_same")
    relevant = {i for i, grade in grades.items() if grade > 0}
    return text(
        lang,
        "judged_ndcg",
        bm25=bm25,
        reranked=reranked,
        delta=reranked - bm25,
        verdict=verdict,
        found=sum(1 for h in outcome.hits if h.index in relevant),
        relevant=len(relevant),
        hits=len(outcome.hits),
    )


class Handlers:
    """The callbacks of one demo: search a corpus, check user documents, rerank a list."""

    def __init__(
        self,
        client: AsyncRerankClient,
        backend: Backend,
        corpora: Mapping[str, Corpus],
        cache: IndexCache | None = None,
        *,
        public: Mapping[str, PublicSet] | None = None,
        lang: Lang | None = None,
    ) -> None:
        self.client = client
        self.backend = backend
        self.corpora: dict[str, Corpus | PublicSet] = {**corpora, **(public or {})}
        """Every corpus the picker offers, by name (bundled first, then public sets)."""
        self.by_label = {c.label: c for c in corpora.values()}
        self.cache = cache or IndexCache()
        self.lang = lang
        """The fixed language (``--lang``); None follows each request's browser."""

    def language(self, request: gr.Request | None) -> Lang:
        """The language to answer ``request`` in."""
        return request_language(request, self.lang)

    def corpus(self, choice: str) -> Corpus | PublicSet | None:
        """The corpus the picker's value names (a name, or a bundled corpus's label)."""
        if choice in self.corpora:
            return self.corpora[choice]
        return self.by_label.get(choice)

    def _instruction(self, text: str | None) -> str | None:
        # A model without instructions must not get one (the box is disabled, but an API
        # caller can still send text).
        if not self.backend.takes_instruction:
            return None
        return (text or "").strip() or None

    def unreadable(self, query: str, texts: Sequence[str], lang: Lang = "en") -> str | None:
        """Why the model should not rerank these texts (None: it can read them).

        The language is a script check (the share of CJK characters among the letters of the
        query and the candidates); the model's languages come from a small table.
        """
        language = text_language([query, *texts])
        if self.backend.reads(language):
            return None
        return text(
            lang,
            "unreadable",
            model=self.backend.model,
            languages=languages_label(self.backend.languages, lang),
            language=language_name(language, lang),
            share=cjk_share([query, *texts]),
        )

    def corpus_documents(
        self, choice: str, pasted: str | None, upload: str | None, split: str, lang: Lang = "en"
    ) -> tuple[Sequence[str], str]:
        """The documents the corpus picker points at, and a note on where they came from."""
        corpus = self.corpus(choice)
        if corpus is not None:
            return corpus.documents, self.corpus_title(corpus, lang)
        docs, source = user_documents(pasted, upload, split, lang)
        if not docs:
            raise DocumentsError("no_docs_yet")
        return docs, text(lang, "your_docs", source=source)

    @staticmethod
    def corpus_title(corpus: Corpus | PublicSet, lang: Lang) -> str:
        """A corpus's title in ``lang`` (its own title when the catalog has none)."""
        key = f"corpus_{corpus.name}"
        return text(lang, key) if key in MESSAGES else corpus.title

    async def search(
        self,
        choice: str,
        query: str,
        top_k: float,
        top_n: float,
        instruction: str,
        pasted: str,
        upload: str | None,
        split: str,
        rerank_anyway: bool = False,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio injects the tracker)
    ) -> SearchOutputs:
        """BM25 then rerank; returns status, timings, table, chart, documents and judgements.

        Candidates in a language the model cannot read keep BM25's order (and the status says
        why) unless ``rerank_anyway``. On a public set's own query, the judged documents get
        a ✓ and the last output compares nDCG@10 before and after reranking.
        """
        lang = self.language(request)
        if not query or not query.strip():
            return self._empty(error_markdown(text(lang, "type_query")), lang)
        corpus = self.corpus(choice)
        if isinstance(corpus, PublicSet) and not corpus.loaded:
            progress(0.0, desc=text(lang, "progress_load", corpus=self.corpus_title(corpus, lang)))
        try:
            # Reading a public set takes a second or so: off the event loop.
            documents, source = await asyncio.to_thread(
                self.corpus_documents, choice, pasted, upload, split, lang
            )
        except DocumentsError as exc:
            gr.Warning(exc.message(lang))
            return self._empty(error_markdown(exc.message(lang)), lang)
        progress(0.0, desc=text(lang, "progress_bm25"))

        def on_progress(done: int, total: int) -> None:
            progress(done / total, desc=text(lang, "progress_rerank", done=done, total=total))

        reasons: list[str] = []

        def should_rerank(q: str, hits: Sequence[Hit]) -> bool:
            reason = self.unreadable(q, [hit.text for hit in hits], lang)
            if reason is not None:
                reasons.append(reason)
            return reason is None or bool(rerank_anyway)

        try:
            outcome = await run_search(
                self.client,
                self.cache,
                documents,
                query.strip(),
                top_k=int(top_k),
                instruction=self._instruction(instruction),
                on_progress=on_progress,
                rerank=should_rerank,
                corpus_name=corpus.name if isinstance(corpus, PublicSet) else None,
            )
        except RerankError as exc:
            return self._empty(self._backend_error(exc, lang), lang)
        except Exception as exc:  # a bug must still read as a message, not a trace
            logger.exception("search failed")
            message = text(lang, "search_failed", kind=type(exc).__name__, detail=exc)
            gr.Warning(message)
            return self._empty(error_markdown(message), lang)
        if not outcome.hits:
            return self._empty(error_markdown(text(lang, "no_hits")), lang)
        shown = outcome.shown(int(top_n))
        counts = {
            "hits": len(outcome.hits),
            "total": f"{len(documents):,}",
            "source": source,
            "shown": len(shown),
        }
        anyway = text(lang, "rerank_anyway")
        if not outcome.reranked:
            status = text(lang, "not_reranked", reason=reasons[0], anyway=anyway, **counts)
        else:
            status = text(lang, "reranked", **counts)
            if reasons:
                status = f"{text(lang, 'reranked_anyway', reason=reasons[0])}  \n{status}"
        grades, judged = None, ""
        if isinstance(corpus, PublicSet):
            grades = corpus.grades(outcome.query)
            if grades is None:
                judged = text(lang, "judged_none", corpus=self.corpus_title(corpus, lang))
            else:
                judged = judged_markdown(outcome, corpus.collection().doc_ids, grades, lang)
        model = outcome.result.model if outcome.result else self.backend.model
        return (
            status,
            timing_markdown(outcome, len(documents), model, lang=lang),
            results_table(shown, outcome.reranked, lang, grades),
            comparison_figure(outcome, int(top_n), lang),
            documents_html(shown, outcome.query, outcome.language, outcome.reranked, lang, grades),
            judged,
        )

    @staticmethod
    def _empty(message: str, lang: Lang) -> SearchOutputs:
        return (
            message,
            "",
            pd.DataFrame(columns=table_columns(lang)),
            None,
            documents_html([], "", "en", lang=lang),
            "",
        )

    def check_documents(
        self, pasted: str, upload: str | None, split: str, request: gr.Request | None = None
    ) -> str:
        """Parse the user's documents as soon as they arrive, to report count or problem."""
        lang = self.language(request)
        try:
            docs, source = user_documents(pasted, upload, split, lang)
        except DocumentsError as exc:
            gr.Warning(exc.message(lang))
            return error_markdown(exc.message(lang))
        if not docs:
            return text(lang, "docs_hint", mb=MAX_UPLOAD_BYTES // 2**20, docs=f"{MAX_DOCUMENTS:,}")
        own = text(lang, "own_docs")
        return text(lang, "docs_ready", n=f"{len(docs):,}", source=source, own=own)

    async def rerank_list(
        self,
        query: str,
        candidates: str,
        instruction: str,
        rerank_anyway: bool = False,
        request: gr.Request | None = None,
    ) -> tuple[str, pd.DataFrame]:
        """Rank pasted candidates (one per line) for ``query``: status line and table.

        Candidates in a language the model cannot read keep their input order (the status
        says why) unless ``rerank_anyway``.
        """
        lang = self.language(request)
        empty = pd.DataFrame(columns=list_columns(lang))
        if not query or not query.strip():
            return error_markdown(text(lang, "type_query")), empty
        try:
            docs = parse_text(candidates or "", "lines", source="source_list")
        except DocumentsError as exc:
            return error_markdown(exc.message(lang)), empty
        if not docs:
            return error_markdown(text(lang, "list_empty")), empty
        # No BM25 stage here: each candidate is a "hit" at its input position.
        hits = [Hit(i, 0.0, doc) for i, doc in enumerate(docs)]
        reason = self.unreadable(query, docs, lang)
        anyway = text(lang, "rerank_anyway")
        if reason is not None and not rerank_anyway:
            status = text(lang, "list_kept", reason=reason, anyway=anyway, n=len(docs))
            return status, list_table(bm25_order(hits), reranked=False, lang=lang)
        try:
            ranked, result = await rerank_hits(
                self.client, query.strip(), hits, instruction=self._instruction(instruction)
            )
        except RerankError as exc:
            return self._backend_error(exc, lang), empty
        status = text(
            lang,
            "list_ranked",
            n=len(docs),
            model=result.model,
            tokens=f"{result.usage.total_tokens:,}",
        )
        if reason is not None:
            status = f"{text(lang, 'list_anyway', reason=reason)}  \n{status}"
        return status, list_table(ranked, lang=lang)

    def _backend_error(self, exc: RerankError, lang: Lang) -> str:
        # The client's messages name the URL and what to do; a stack trace helps nobody.
        logger.warning("rerank failed: %s", exc)
        message = error_text(lang, exc)
        gr.Warning(message)
        # In Chinese, the library's own (English) words follow as the detail.
        return error_markdown(message) + text(lang, "err_detail", detail=exc)

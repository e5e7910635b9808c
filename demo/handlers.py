"""The demo's event handlers: UI values in, display values out, errors as readable messages.

Kept apart from the layout so tests call them directly. Every handler uses the one shared
``AsyncRerankClient`` it was given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from rerank_plugins import AsyncRerankClient, RerankError
from rerank_plugins.eval.languages import LANGUAGE_NAMES, cjk_share, text_language
from rerank_plugins.retrieval import Hit

from .backend import Backend
from .corpora import Corpus
from .inputs import (
    MAX_DOCUMENTS,
    MAX_UPLOAD_BYTES,
    SPLIT_MODES,
    DocumentsError,
    parse_file,
    parse_text,
)
from .pipeline import IndexCache, bm25_order, rerank_hits, run_search
from .views import (
    LIST_COLUMNS,
    TABLE_COLUMNS,
    comparison_figure,
    documents_html,
    list_table,
    results_table,
    timing_markdown,
)

__all__ = ["OWN_DOCS", "RERANK_ANYWAY", "Handlers", "error_markdown", "user_documents"]

logger = logging.getLogger("demo")

OWN_DOCS = "Your documents (paste or upload)"
RERANK_ANYWAY = "Rerank anyway, even text the model cannot read"
SearchOutputs = tuple[str, str, pd.DataFrame, Any, str]


def error_markdown(message: str) -> str:
    """An error as the status line shows it."""
    return f"⚠ **{message}**"


def user_documents(pasted: str | None, upload: str | None, split: str) -> tuple[list[str], str]:
    """The user's documents (upload first, then pasted) and a note saying where they came from.

    Raises:
        DocumentsError: a limit is exceeded or the file cannot be read.

    """
    mode = SPLIT_MODES.get(split, "auto")
    docs: list[str] = []
    sources = []
    if upload:
        from_file = parse_file(upload, mode)
        docs += from_file
        sources.append(f"{len(from_file):,} from {os.path.basename(upload)}")
    if pasted and pasted.strip():
        from_paste = parse_text(pasted, mode)
        docs += from_paste
        sources.append(f"{len(from_paste):,} pasted")
    if len(docs) > MAX_DOCUMENTS:
        raise DocumentsError(
            f"The upload and the pasted text hold {len(docs):,} documents together; the demo "
            f"takes at most {MAX_DOCUMENTS:,}."
        )
    return docs, " + ".join(sources)


def _empty(message: str) -> SearchOutputs:
    return message, "", pd.DataFrame(columns=TABLE_COLUMNS), None, documents_html([], "", "en")


class Handlers:
    """The callbacks of one demo: search a corpus, check user documents, rerank a list."""

    def __init__(
        self,
        client: AsyncRerankClient,
        backend: Backend,
        corpora: Mapping[str, Corpus],
        cache: IndexCache | None = None,
    ) -> None:
        self.client = client
        self.backend = backend
        self.by_label = {c.label: c for c in corpora.values()}
        self.cache = cache or IndexCache()

    def _instruction(self, text: str | None) -> str | None:
        # A model without instructions must not get one (the box is disabled, but an API
        # caller can still send text).
        if not self.backend.takes_instruction:
            return None
        return (text or "").strip() or None

    def unreadable(self, query: str, texts: Sequence[str]) -> str | None:
        """Why the model should not rerank these texts (None: it can read them).

        The language is a script check (the share of CJK characters among the letters of the
        query and the candidates); the model's languages come from a small table.
        """
        language = text_language([query, *texts])
        if self.backend.reads(language):
            return None
        share = cjk_share([query, *texts])
        return (
            f"`{self.backend.model}` reads {self.backend.languages_label}, and this text is "
            f"{LANGUAGE_NAMES.get(language, language)} ({share:.0%} CJK characters): a model "
            "that cannot read it reorders it by accident, not by meaning"
        )

    def corpus_documents(
        self, choice: str, pasted: str | None, upload: str | None, split: str
    ) -> tuple[Sequence[str], str]:
        """The documents the corpus picker points at, and a note on where they came from."""
        if choice in self.by_label:
            corpus = self.by_label[choice]
            return corpus.documents, corpus.title
        docs, source = user_documents(pasted, upload, split)
        if not docs:
            raise DocumentsError(
                "No documents yet: paste some text or upload a .txt, .md or .jsonl file "
                "under “Your documents”."
            )
        return docs, f"your documents ({source})"

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
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio injects the tracker)
    ) -> SearchOutputs:
        """BM25 then rerank; returns status, timings, table, chart and documents.

        Candidates in a language the model cannot read keep BM25's order (and the status says
        why) unless ``rerank_anyway``.
        """
        if not query or not query.strip():
            return _empty(error_markdown("Type a query first."))
        try:
            documents, source = self.corpus_documents(choice, pasted, upload, split)
        except DocumentsError as exc:
            gr.Warning(str(exc))
            return _empty(error_markdown(str(exc)))
        progress(0.0, desc="BM25 search")

        def on_progress(done: int, total: int) -> None:
            progress(done / total, desc=f"Reranking: batch {done} of {total}")

        reasons: list[str] = []

        def should_rerank(q: str, hits: Sequence[Hit]) -> bool:
            reason = self.unreadable(q, [hit.text for hit in hits])
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
            )
        except RerankError as exc:
            return _empty(self._backend_error(exc))
        except Exception as exc:  # a bug must still read as a message, not a trace
            logger.exception("search failed")
            gr.Warning(f"Search failed: {exc}")
            return _empty(error_markdown(f"Search failed ({type(exc).__name__}): {exc}"))
        if not outcome.hits:
            return _empty(error_markdown("BM25 found no document sharing a word with the query."))
        shown = outcome.shown(int(top_n))
        if not outcome.reranked:
            status = (
                f"**Showing BM25's order, not reranked.** {reasons[0]}. Tick “{RERANK_ANYWAY}” "
                f"to see the model's order.  \nBM25's top {len(outcome.hits)} of "
                f"{len(documents):,} documents ({source}); showing the best {len(shown)}."
            )
        else:
            status = (
                f"Reranked BM25's top {len(outcome.hits)} of {len(documents):,} documents "
                f"({source}); showing the best {len(shown)}."
            )
            if reasons:
                status = (
                    f"⚠ **Reranked anyway:** {reasons[0]}. This order is not an improvement "
                    f"on BM25's.  \n{status}"
                )
        model = outcome.result.model if outcome.result else self.backend.model
        return (
            status,
            timing_markdown(outcome, len(documents), model),
            results_table(shown, outcome.reranked),
            comparison_figure(outcome, int(top_n)),
            documents_html(shown, outcome.query, outcome.language, outcome.reranked),
        )

    def check_documents(self, pasted: str, upload: str | None, split: str) -> str:
        """Parse the user's documents as soon as they arrive, to report count or problem."""
        try:
            docs, source = user_documents(pasted, upload, split)
        except DocumentsError as exc:
            gr.Warning(str(exc))
            return error_markdown(str(exc))
        if not docs:
            return (
                f"Paste text or upload .txt, .md or .jsonl (up to {MAX_UPLOAD_BYTES // 2**20} MB "
                f"and {MAX_DOCUMENTS:,} documents)."
            )
        return f"✓ {len(docs):,} documents ready ({source}). Pick “{OWN_DOCS}” to search them."

    async def rerank_list(
        self, query: str, candidates: str, instruction: str, rerank_anyway: bool = False
    ) -> tuple[str, pd.DataFrame]:
        """Rank pasted candidates (one per line) for ``query``: status line and table.

        Candidates in a language the model cannot read keep their input order (the status
        says why) unless ``rerank_anyway``.
        """
        empty = pd.DataFrame(columns=LIST_COLUMNS)
        if not query or not query.strip():
            return error_markdown("Type a query first."), empty
        try:
            docs = parse_text(candidates or "", "lines", source="The candidate list")
        except DocumentsError as exc:
            return error_markdown(str(exc)), empty
        if not docs:
            return error_markdown("Paste at least one candidate, one per line."), empty
        # No BM25 stage here: each candidate is a "hit" at its input position.
        hits = [Hit(i, 0.0, doc) for i, doc in enumerate(docs)]
        reason = self.unreadable(query, docs)
        if reason is not None and not rerank_anyway:
            status = (
                f"**Kept in input order, not reranked.** {reason}. Tick “{RERANK_ANYWAY}” "
                f"to see the model's order.  \n{len(docs)} candidates."
            )
            return status, list_table(bm25_order(hits), reranked=False)
        try:
            ranked, result = await rerank_hits(
                self.client, query.strip(), hits, instruction=self._instruction(instruction)
            )
        except RerankError as exc:
            return self._backend_error(exc), empty
        status = (
            f"Ranked {len(docs)} candidates with `{result.model}` · "
            f"**Tokens** {result.usage.total_tokens:,}"
        )
        if reason is not None:
            status = (
                f"⚠ **Reranked anyway:** {reason}. This order is not an improvement.  \n{status}"
            )
        return status, list_table(ranked)

    def _backend_error(self, exc: RerankError) -> str:
        # The client's messages name the URL and what to do; a stack trace helps nobody.
        logger.warning("rerank failed: %s", exc)
        message = f"The reranker failed: {exc}"
        gr.Warning(message)
        return error_markdown(message)

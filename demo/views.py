"""How one search is shown: the comparison table, the chart, the highlighted documents, timings.

Pure functions from pipeline results to pandas / matplotlib / HTML; no Gradio here.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure

from rerank_plugins.retrieval import Language, tokenize

from .messages import Lang, text
from .pipeline import Ranked, SearchOutcome

__all__ = [
    "TABLE_COLUMNS",
    "comparison_figure",
    "documents_html",
    "highlight",
    "list_columns",
    "list_table",
    "results_table",
    "table_columns",
    "timing_markdown",
]

TABLE_COLUMNS = ["Rank", "Score", "BM25 rank", "BM25 score", "Change", "Doc #", "Document"]
LIST_COLUMNS = ["Rank", "Score", "Input #", "Document"]
SNIPPET_CHARS = 110
CARD_CHARS = 1500

_UP, _DOWN, _SAME, _OTHER = "#16a34a", "#dc2626", "#6b7280", "#cbd5e1"
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_LATIN_WORD = f"[^\\W_{_CJK}]+"
_TABLE_KEYS = (
    "col_rank",
    "col_score",
    "col_bm25_rank",
    "col_bm25_score",
    "col_change",
    "col_doc",
    "col_document",
)
_LIST_KEYS = ("col_rank", "col_score", "col_input", "col_document")
# Chinese chart labels need a CJK font. matplotlib falls back glyph by glyph along the family
# list, so Latin text keeps DejaVu Sans; only installed fonts are named.
_CJK_FONTS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "SimHei",
    "PingFang SC",
)
_installed = {font.name for font in font_manager.fontManager.ttflist}
matplotlib.rcParams["font.family"] = ["DejaVu Sans", *(f for f in _CJK_FONTS if f in _installed)]
# WenQuanYi has only a medium weight: matplotlib would log "failed to find font weight normal".
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


def table_columns(lang: Lang = "en") -> list[str]:
    """The comparison table's column headers in ``lang`` (English: :data:`TABLE_COLUMNS`)."""
    return [text(lang, key) for key in _TABLE_KEYS]


def list_columns(lang: Lang = "en") -> list[str]:
    """The list tab's column headers in ``lang`` (English: :data:`LIST_COLUMNS`)."""
    return [text(lang, key) for key in _LIST_KEYS]


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ``limit`` columns of ``text``; a CJK character takes two, as on screen."""
    text = " ".join(text.split())
    width = 0
    for i, ch in enumerate(text):
        width += 2 if _CJK_RE.match(ch) else 1
        if width > limit:
            return text[:i].rstrip() + "…"
    return text


NOT_SCORED = "—"


def _judged(r: Ranked, grades: Mapping[int, int] | None) -> str:
    # A judged-relevant document is marked where the eye reads first: before its text.
    return "✓ " if grades and grades.get(r.index, 0) > 0 else ""


def results_table(
    shown: Sequence[Ranked],
    reranked: bool = True,
    lang: Lang = "en",
    grades: Mapping[int, int] | None = None,
) -> pd.DataFrame:
    """The comparison table: reranked rank and score next to BM25's rank and score.

    Not ``reranked``: BM25's own order, with no rerank score (``—``). ``grades`` (corpus
    position -> relevance grade) puts ✓ before each judged-relevant document.
    """
    rows = [
        [
            r.rank,
            round(r.score, 4) if reranked else NOT_SCORED,
            r.bm25_rank,
            round(r.bm25_score, 3),
            r.change_label,
            r.index,
            _judged(r, grades) + _snippet(r.text),
        ]
        for r in shown
    ]
    return pd.DataFrame(rows, columns=table_columns(lang))


def list_table(shown: Sequence[Ranked], reranked: bool = True, lang: Lang = "en") -> pd.DataFrame:
    """The pasted-list tab's table: rank, score, the candidate's input position, its text."""
    rows = [
        [r.rank, round(r.score, 4) if reranked else NOT_SCORED, r.index + 1, r.text] for r in shown
    ]
    return pd.DataFrame(rows, columns=list_columns(lang))


def comparison_figure(outcome: SearchOutcome, top_n: int, lang: Lang = "en") -> Figure:
    """Left: how each shown document moved from its BM25 rank; right: BM25 vs rerank score."""
    shown = outcome.shown(top_n)
    fig, (slope, scatter) = plt.subplots(
        1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1, 1.25]}
    )
    fig.patch.set_alpha(0)

    worst = max([r.bm25_rank for r in shown] + [len(shown)])
    for r in shown:
        color = _UP if r.change > 0 else _DOWN if r.change < 0 else _SAME
        slope.plot([0, 1], [r.bm25_rank, r.rank], color=color, marker="o", lw=2, alpha=0.9)
        slope.annotate(
            f"#{r.bm25_rank}",
            (0, r.bm25_rank),
            xytext=(-8, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=8,
            color=color,
        )
        slope.annotate(
            f"#{r.rank}  {text(lang, 'chart_doc', index=r.index)}",
            (1, r.rank),
            xytext=(8, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=8,
            color=color,
        )
    slope.set_xlim(-0.35, 1.45)
    slope.set_ylim(worst + 0.8, 0.2)  # rank 1 on top
    slope.set_xticks([0, 1], [text(lang, "chart_bm25_rank"), text(lang, "chart_reranked")])
    slope.set_yticks([])
    slope.set_title(text(lang, "chart_rank_change", n=len(shown)), fontsize=11)
    for side in ("left", "right", "top"):
        slope.spines[side].set_visible(False)

    if not outcome.reranked:
        slope.set_xticks([0, 1], [text(lang, "chart_bm25_rank"), text(lang, "chart_shown_bm25")])
        scatter.axis("off")
        scatter.text(
            0.5,
            0.5,
            text(lang, "chart_not_reranked"),
            ha="center",
            va="center",
            fontsize=11,
            transform=scatter.transAxes,
        )
        fig.tight_layout()
        plt.close(fig)
        return fig

    others = outcome.ranked[top_n:]
    if others:
        scatter.scatter(
            [r.bm25_score for r in others],
            [r.score for r in others],
            s=18,
            color=_OTHER,
            label=text(lang, "chart_others", n=len(others)),
        )
    scatter.scatter(
        [r.bm25_score for r in shown],
        [r.score for r in shown],
        s=36,
        color="#2563eb",
        label=text(lang, "chart_shown", n=len(shown)),
        zorder=3,
    )
    for r in shown:
        scatter.annotate(
            str(r.rank),
            (r.bm25_score, r.score),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=8,
            color="#1e3a8a",
        )
    scatter.set_xlabel(text(lang, "chart_bm25_score"))
    scatter.set_ylabel(text(lang, "chart_rerank_score"))
    scatter.set_title(text(lang, "chart_scores"), fontsize=11)
    scatter.grid(alpha=0.3)
    scatter.legend(fontsize=8, loc="best")
    fig.tight_layout()
    plt.close(fig)  # Gradio renders it; pyplot must not keep every figure alive
    return fig


@lru_cache(maxsize=20_000)
def _term_of(word: str) -> str | None:
    terms = tokenize(word, "en")
    return terms[0] if terms else None


def highlight(text: str, query: str, language: Language) -> str:
    """``text`` as HTML with the words BM25 matched against ``query`` in ``<mark>``.

    Latin words match by stem (``entangled`` marks ``entanglement``); Chinese terms (jieba's
    segments of the query) match as substrings.
    """
    terms = set(tokenize(query, language))
    cjk_terms = sorted((t for t in terms if _CJK_RE.search(t)), key=len, reverse=True)
    parts = [f"(?P<cjk>{'|'.join(map(re.escape, cjk_terms))})"] if cjk_terms else []
    parts.append(f"(?P<word>{_LATIN_WORD})")
    pattern = re.compile("|".join(parts))
    out: list[str] = []
    pos = 0
    for match in pattern.finditer(text):
        word = match.group("word")
        if word is not None and _term_of(word.lower()) not in terms:
            continue
        out.append(html.escape(text[pos : match.start()]))
        out.append(f"<mark>{html.escape(match.group())}</mark>")
        pos = match.end()
    out.append(html.escape(text[pos:]))
    # 量子 + 纠缠 read as one highlighted word, as the reader sees it.
    return "".join(out).replace("</mark><mark>", "")


def _change_badge(r: Ranked) -> str:
    cls = "up" if r.change > 0 else "down" if r.change < 0 else "same"
    return f'<span class="chg {cls}">{html.escape(r.change_label)}</span>'


def documents_html(
    shown: Sequence[Ranked],
    query: str,
    language: Language,
    reranked: bool = True,
    lang: Lang = "en",
    grades: Mapping[int, int] | None = None,
) -> str:
    """The shown documents, best first, full text with query terms highlighted.

    ``grades`` (corpus position -> relevance grade) marks judged-relevant documents with ✓.
    """
    if not shown:
        return f'<div class="rr-empty">{html.escape(text(lang, "no_results"))}</div>'
    cards = []
    for r in shown:
        body = r.text if len(r.text) <= CARD_CHARS else r.text[:CARD_CHARS] + "…"
        score = (
            text(lang, "card_score", score=r.score) if reranked else text(lang, "card_not_reranked")
        )
        grade = grades.get(r.index, 0) if grades else 0
        judged = (
            f' · <span class="rr-rel">{text(lang, "card_relevant", grade=grade)}</span>'
            if grade > 0
            else ""
        )
        cards.append(
            '<div class="rr-card">'
            f'<div class="rr-head"><span class="rr-rank">#{r.rank}</span>'
            f'<span class="rr-meta">{score} · BM25 #{r.bm25_rank} '
            f"({r.bm25_score:.2f}) · {_change_badge(r)} · "
            f"{text(lang, 'card_doc', index=r.index)}{judged}</span></div>"
            f'<div class="rr-text">{highlight(body, query, language)}</div></div>'
        )
    return '<div class="rr-cards">' + "".join(cards) + "</div>"


def timing_markdown(
    outcome: SearchOutcome,
    corpus_size: int,
    model: str,
    batches: int | None = None,
    lang: Lang = "en",
) -> str:
    """BM25 and rerank times, candidates and tokens, in one line a person reads."""
    index = (
        text(lang, "timing_index_built", ms=outcome.index_ms)
        if outcome.index_ms is not None
        else text(lang, "timing_index_cached")
    )
    common = {
        "bm25": outcome.bm25_ms,
        "docs": corpus_size,
        "index": index,
        "hits": len(outcome.hits),
        "model": model,
    }
    if not outcome.reranked:
        return text(lang, "timing_skipped", **common)
    tokens = outcome.result.usage.total_tokens if outcome.result else 0
    batch_note = text(lang, "timing_batches", n=batches) if batches and batches > 1 else ""
    return text(
        lang, "timing", rerank=outcome.rerank_ms, batches=batch_note, tokens=tokens, **common
    )

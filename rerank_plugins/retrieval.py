"""BM25 first-stage retrieval shared by the demo and the notebooks (needs the ``[eval]`` extra).

Sparse scoring comes from ``bm25s``; tokenization is ours so Chinese (``jieba``) and English
(lowercase, stopwords, Snowball stemming) both work, including mixed text.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from .eval.languages import Language, text_language

__all__ = ["BM25Index", "Hit", "Language", "detect_language", "tokenize"]

_EXTRA_HINT = "pip install 'rerank-plugins[eval]'"
# CJK Unified Ideographs (+ extension A and compatibility block); kana/hangul are not segmented.
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+")
# NLTK's English list (apostrophes dropped: the tokenizer splits "don't" into "don", "t").
# bm25s ships only 33 words, which leaves "how", "do", "what" to match everything.
_STOPWORDS_EN = frozenset(
    """
    a about above after again against ain all am an and any are aren as at be because
    been before being below between both but by can couldn d did didn do does doesn
    doing don down during each few for from further had hadn has hasn have haven having
    he her here hers herself him himself his how i if in into is isn it its itself just
    ll m ma me mightn more most mustn my myself needn no nor not now o of off on once
    only or other our ours ourselves out over own re s same shan she should shouldn so
    some such t than that the their theirs them themselves then there these they this
    those through to too under until up ve very was wasn we were weren what when where
    which while who whom why will with won wouldn y you your yours yourself yourselves
    """.split()  # noqa: SIM905 - a word list reads better than 150 quoted lines
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One BM25 result: the document's position in the corpus, its score and its text."""

    index: int
    score: float
    text: str


def _missing(name: str, exc: ImportError) -> ImportError:
    err = ImportError(f"BM25 retrieval needs the optional package {name!r}: {_EXTRA_HINT}")
    err.__cause__ = exc
    return err


@cache
def _english_tools() -> tuple[frozenset[str], Callable[[list[str]], list[str]]]:
    try:
        import Stemmer
    except ImportError as exc:
        raise _missing("PyStemmer", exc) from exc
    stemmer = Stemmer.Stemmer("english")
    stem_words: Callable[[list[str]], list[str]] = stemmer.stemWords
    return _STOPWORDS_EN, stem_words


@cache
def _chinese_tools() -> tuple[frozenset[str], Callable[[str], list[str]]]:
    try:
        import jieba
        from bm25s.stopwords import STOPWORDS_CHINESE
    except ImportError as exc:
        raise _missing(exc.name or "jieba", exc) from exc
    jieba.setLogLevel(60)  # silence the "Building prefix dict" chatter on first use
    # Search mode also emits the parts of long words (量子纠缠 -> 量子, 纠缠, 量子纠缠), so a query
    # and a document that segment differently still share terms.
    cut: Callable[[str], list[str]] = jieba.lcut_for_search
    return frozenset(STOPWORDS_CHINESE), cut


def detect_language(texts: str | Sequence[str]) -> Language:
    """``"zh"`` or ``"en"`` by the package's one script rule.

    That rule is :func:`rerank_plugins.eval.languages.text_language`; the demo and the
    evaluation use it too, so BM25 tokenizes a text as the language they call it.
    """
    return text_language(texts)


def tokenize(text: str, language: Language) -> list[str]:
    """Split ``text`` into BM25 terms.

    Latin runs are lowercased, stripped of English stopwords and stemmed in both languages.
    CJK runs are segmented with jieba for ``"zh"`` and split into characters for ``"en"``
    (which never imports jieba).
    """
    stopwords_en, stem_words = _english_tools()
    tokens: list[str] = []
    pos = 0
    for match in _CJK_RUN.finditer(text):
        tokens.extend(_latin_terms(text[pos : match.start()], stopwords_en, stem_words))
        if language == "zh":
            stopwords_zh, cut = _chinese_tools()
            tokens.extend(t for t in cut(match.group()) if t not in stopwords_zh)
        else:
            tokens.extend(match.group())
        pos = match.end()
    tokens.extend(_latin_terms(text[pos:], stopwords_en, stem_words))
    return tokens


def _latin_terms(
    text: str, stopwords: frozenset[str], stem_words: Callable[[list[str]], list[str]]
) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in stopwords]
    return stem_words(words) if words else []


class BM25Index:
    """A BM25 index over one corpus, built once and searched many times.

    Build it with :meth:`from_documents`; :meth:`search` only tokenizes the query.
    """

    def __init__(self, documents: Sequence[str], language: Language, retriever: Any) -> None:
        self._documents = tuple(documents)
        self._language: Language = language
        self._retriever = retriever

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[str],
        language: Literal["auto", "en", "zh"] = "auto",
        *,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> BM25Index:
        """Tokenize and index ``documents``.

        Args:
            documents: The corpus; a hit's ``index`` is the position in this sequence.
            language: ``"auto"`` picks ``"zh"`` or ``"en"`` from the CJK share of the corpus.
            k1: BM25 term-frequency saturation.
            b: BM25 length normalisation.

        Raises:
            ImportError: ``bm25s``, ``jieba`` or ``PyStemmer`` is missing (the ``[eval]`` extra).
            ValueError: ``documents`` is empty or ``language`` is unknown.
            TypeError: a document is not a string.

        """
        docs = list(documents)
        if not docs:
            raise ValueError("BM25Index needs at least one document")
        for i, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise TypeError(f"documents[{i}] is {type(doc).__name__}, expected str")
        if language == "auto":
            resolved = detect_language(docs)
        elif language in ("en", "zh"):
            resolved = language
        else:
            raise ValueError(f"language must be 'auto', 'en' or 'zh', got {language!r}")
        try:
            with warnings.catch_warnings():
                # bm25s imports tqdm.auto, which warns in Jupyter without ipywidgets (with a
                # path of this machine in the text); its progress bars are never shown here.
                warnings.filterwarnings("ignore", message="IProgress not found")
                import bm25s
        except ImportError as exc:
            raise _missing("bm25s", exc) from exc
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index([tokenize(doc, resolved) for doc in docs], show_progress=False)
        return cls(docs, resolved, retriever)

    @property
    def language(self) -> Language:
        """The tokenization language the index was built with."""
        return self._language

    @property
    def documents(self) -> tuple[str, ...]:
        """The indexed documents, in corpus order."""
        return self._documents

    def __len__(self) -> int:
        return len(self._documents)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Return up to ``k`` hits, best first (ties by corpus order).

        Documents sharing no term with the query score 0 and are left out, so fewer than
        ``k`` hits (or none) can come back.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        terms = [t for t in tokenize(query, self._language) if t in self._retriever.vocab_dict]
        if not terms or k == 0:
            return []
        scores = self._retriever.get_scores(terms)
        return [Hit(i, score, self._documents[i]) for i, score in _top_k(scores, k)]


def _top_k(scores: Any, k: int) -> list[tuple[int, float]]:
    """The ``k`` best positive scores as (index, score), by score descending, ties by index.

    The same order as sorting every score by ``(-score, index)``, without doing so: numpy keeps
    the positive scores, ``argpartition`` finds the k-th best value, and only the candidates
    scoring at least that much (all of them on ties at the cut) are sorted.
    """
    import numpy as np

    positive = np.flatnonzero(scores > 0.0)
    values = scores[positive]
    if len(positive) > k:
        kth = values[np.argpartition(-values, k - 1)[k - 1]]
        keep = values >= kth
        positive, values = positive[keep], values[keep]
    # lexsort: last key first; indices are already ascending, so ties keep corpus order.
    order = np.lexsort((positive, -values))[:k]
    return list(zip(positive[order].tolist(), values[order].tolist(), strict=True))

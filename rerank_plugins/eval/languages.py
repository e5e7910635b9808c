"""Which language a text is in (a script check) and which ones a reranker model reads (a table).

The package's one language rule: BM25 (:mod:`rerank_plugins.retrieval`) picks its tokenizer
with it, and the demo and the evaluation use it to avoid reranking Chinese with an
English-only model, so all three call the same text the same language. The model check is a
small table of known model families (from their model cards); an unknown model is assumed to
read anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

__all__ = [
    "CJK_THRESHOLD",
    "MODEL_LANGUAGES",
    "Language",
    "cjk_share",
    "model_languages",
    "model_reads",
    "text_language",
]

Language = Literal["en", "zh"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
# A text is "zh" when at least this share of its letters are CJK characters. Low on purpose: one
# ideograph carries about a word's meaning and an English word is about five letters, so 5% of
# the letters is already about a fifth of the words, more than an English-only model can skip;
# and for BM25 the "zh" tokenizer treats Latin runs exactly like "en" (it only costs loading
# jieba), while "en" on Chinese text degrades to single characters.
CJK_THRESHOLD = 0.05

# Lower-case name fragment -> languages the model was trained for (None: many, incl. en and zh).
# Checked in order; the first fragment found in the served name or path wins.
MODEL_LANGUAGES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    ("minilm-l6-v2", frozenset({"en"}), "all-MiniLM-L6-v2 (English sentence embeddings)"),
    ("all-minilm", frozenset({"en"}), "all-MiniLM (English sentence embeddings)"),
    ("ms-marco-minilm", frozenset({"en"}), "ms-marco cross-encoder (English)"),
    ("ms-marco", frozenset({"en"}), "ms-marco cross-encoder (English)"),
    ("bge-reranker-base", frozenset({"en", "zh"}), "bge-reranker-base (English and Chinese)"),
    ("bge-reranker-large", frozenset({"en", "zh"}), "bge-reranker-large (English and Chinese)"),
    ("bge-reranker-v2", None, "bge-reranker-v2 (multilingual)"),
    ("qwen3-reranker", None, "Qwen3-Reranker (100+ languages)"),
    ("qwen3", None, "Qwen3 (100+ languages)"),
    ("jina-reranker", None, "jina-reranker (multilingual)"),
    ("mxbai-rerank", None, "mxbai-rerank (multilingual)"),
    ("nemotron-rerank", None, "nemotron-rerank (multilingual)"),
)

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}


def cjk_share(texts: str | Iterable[str]) -> float:
    """The share of CJK characters (Chinese, kana, hangul) among the letters of ``texts``."""
    if isinstance(texts, str):
        texts = [texts]
    cjk = letters = 0
    for text in texts:
        cjk += len(_CJK.findall(text))
        letters += sum(ch.isalpha() for ch in text)
    return cjk / letters if letters else 0.0


def text_language(texts: str | Iterable[str]) -> Language:
    """``"zh"`` when CJK characters are at least 5% of the letters, else ``"en"``."""
    return "zh" if cjk_share(texts) >= CJK_THRESHOLD else "en"


def model_languages(model: str) -> frozenset[str] | None:
    """The languages ``model`` (a served name or path) reads; None when many or unknown."""
    name = model.lower().replace("_", "-")
    for fragment, languages, _ in MODEL_LANGUAGES:
        if fragment in name:
            return languages
    return None


def model_reads(model: str, language: str) -> bool:
    """Whether ``model`` can read text in ``language`` (unknown models are given the benefit)."""
    languages = model_languages(model)
    return languages is None or language in languages

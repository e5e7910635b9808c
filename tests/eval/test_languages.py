"""One language rule: BM25's tokenizer choice, the demo's "can this model read it" check and the
evaluation's corpus note call the same text the same language."""

from __future__ import annotations

import pytest

from rerank_plugins import retrieval
from rerank_plugins.eval import languages
from rerank_plugins.eval.languages import CJK_THRESHOLD, cjk_share, text_language
from rerank_plugins.retrieval import BM25Index, detect_language

TEXTS = [
    "How do Python decorators work?",
    "解释量子纠缠的基本原理",
    "Python 的 json 模块可以读取 JSON 文件、并把它转换为字典。",
    # About 8% of the letters CJK: the two old detectors (thresholds 0.05 and 0.2) disagreed.
    "The word 量子纠缠 means quantum entanglement in Chinese physics texts",
    # Under 5%: English with one Chinese name in it.
    "Shanghai (上海) is the largest city of China by population and a global financial hub",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_bm25_and_the_language_check_agree(text: str) -> None:
    expected = "zh" if cjk_share(text) >= CJK_THRESHOLD else "en"
    assert text_language(text) == detect_language(text) == expected
    if text:
        assert BM25Index.from_documents([text]).language == expected


def test_the_mixed_text_is_chinese_for_everyone() -> None:
    # 4 CJK characters among 53 letters: read as Chinese by BM25, the demo and the evaluation.
    mixed = TEXTS[3]
    assert 0.05 <= cjk_share(mixed) < 0.2
    assert text_language(mixed) == "zh"
    assert BM25Index.from_documents([mixed]).language == "zh"
    assert text_language(TEXTS[4]) == "en"


def test_the_demo_and_bm25_import_the_same_rule() -> None:
    from demo import handlers

    assert handlers.text_language is languages.text_language
    assert retrieval.text_language is languages.text_language

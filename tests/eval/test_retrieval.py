# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
import builtins
import subprocess
import sys

import bm25s
import pytest

from rerank_plugins import retrieval
from rerank_plugins.retrieval import BM25Index, Hit, detect_language, tokenize

EN_DOCS = [
    "The cat sat quietly on the warm windowsill all afternoon.",
    "She runs five kilometres every morning before work.",
    "Compound interest makes savings grow faster over time.",
    "Bake the bread until the crust is deep golden brown.",
    "A marathon is a long-distance running race of 42 kilometres.",
]

ZH_DOCS = [
    "量子纠缠是指两个粒子形成一个整体的量子态，测量一个会立即确定另一个的结果。",
    "爱因斯坦把量子纠缠称为鬼魅般的超距作用。",
    "分手后反复联系，这样的感情纠缠让人疲惫。",
    "洗衣机的工作原理是电机带动内筒旋转。",
    "红烧肉要小火慢炖一个小时再大火收汁。",
]


def test_english_query_finds_doc_sharing_terms():
    index = BM25Index.from_documents(EN_DOCS, language="en")
    hits = index.search("compound interest savings", k=3)
    assert hits[0].index == 2
    assert hits[0].text == EN_DOCS[2]
    assert isinstance(hits[0], Hit)


def test_stemming_running_matches_runs():
    assert tokenize("running", "en") == tokenize("runs", "en") == ["run"]
    index = BM25Index.from_documents(EN_DOCS, language="en")
    found = {h.index for h in index.search("running", k=5)}
    # doc 1 only has "runs", doc 4 only has "running"
    assert {1, 4} <= found


def test_english_stopwords_and_case_removed():
    assert tokenize("How do THE Cats work?", "en") == ["cat", "work"]


def test_chinese_segmentation_finds_entanglement_docs():
    index = BM25Index.from_documents(ZH_DOCS)
    assert index.language == "zh"
    hits = index.search("量子纠缠", k=5)
    assert {h.index for h in hits[:2]} == {0, 1}
    # the relationship doc shares only 纠缠 and ranks below both physics docs
    assert [h.index for h in hits].index(2) >= 2
    # nothing about cooking or washing machines matches
    assert 4 not in {h.index for h in hits}


def test_chinese_tokens_are_words_not_characters():
    tokens = tokenize("解释量子纠缠的基本原理", "zh")
    assert {"量子", "纠缠", "原理"} <= set(tokens)
    assert "的" not in tokens  # stopword


def test_mixed_text_keeps_english_terms_in_chinese_mode():
    index = BM25Index.from_documents(["用Python写装饰器 decorators", "红烧肉的做法"])
    assert index.language == "zh"
    assert tokenize("Python decorators 装饰器", "zh")[:2] == ["python", "decor"]
    assert index.search("python decorator", k=2)[0].index == 0


def test_detect_language_by_cjk_share():
    assert detect_language("Plain English text only") == "en"
    assert detect_language("完全是中文的句子") == "zh"
    assert detect_language(["An English corpus", "with one 中文 word"]) == "zh"
    assert detect_language(["mostly english " * 40 + "中"]) == "en"


def test_english_mode_never_loads_jieba():
    code = (
        "import sys\n"
        "from rerank_plugins.retrieval import BM25Index\n"
        "ix = BM25Index.from_documents(['a cat', 'a dog 猫'], language='en')\n"
        "assert ix.search('猫', 1)[0].index == 1\n"
        "assert 'jieba' not in sys.modules, 'jieba imported'\n"
        "import rerank_plugins.retrieval\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_is_light():
    code = "import sys, rerank_plugins.retrieval; assert not {'bm25s', 'jieba'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_index_built_once(monkeypatch):
    calls = []
    original = bm25s.BM25.index

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", counting)
    index = BM25Index.from_documents(EN_DOCS)
    for query in ("cat", "bread", "marathon running", "interest"):
        assert index.search(query, k=2)
    assert len(calls) == 1


def test_results_sorted_limited_and_zero_scores_dropped():
    index = BM25Index.from_documents(EN_DOCS)
    hits = index.search("kilometres", k=10)
    assert {h.index for h in hits} == {1, 4}
    assert all(h.score > 0 for h in hits)
    assert len(hits) == 2
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(index.search("cat bread interest marathon runs", k=3)) == 3
    assert index.search("unrelated zebra", k=5) == []
    assert index.search("cat", k=0) == []
    assert index.search("the and of", k=5) == []  # only stopwords


def test_ties_keep_corpus_order():
    index = BM25Index.from_documents(["apple pie", "banana", "apple pie"])
    assert [h.index for h in index.search("apple", k=2)] == [0, 2]


def test_invalid_input():
    with pytest.raises(ValueError):
        BM25Index.from_documents([])
    with pytest.raises(TypeError):
        BM25Index.from_documents(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        BM25Index.from_documents(["ok"], language="fr")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BM25Index.from_documents(["ok"]).search("ok", k=-1)


def _hide_module(monkeypatch, missing: str) -> None:
    """Make ``import missing`` fail as if the package were not installed."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == missing:
            raise ImportError(f"No module named '{missing}'", name=missing)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_extra_names_it(monkeypatch):
    _hide_module(monkeypatch, "bm25s")
    with pytest.raises(ImportError, match=r"rerank-plugins\[eval\]"):
        BM25Index.from_documents(["a document"], language="en")


def test_missing_jieba_names_extra(monkeypatch):
    retrieval._chinese_tools.cache_clear()
    _hide_module(monkeypatch, "jieba")
    try:
        with pytest.raises(ImportError, match=r"jieba.*rerank-plugins\[eval\]"):
            tokenize("量子纠缠", "zh")
    finally:
        monkeypatch.undo()
        retrieval._chinese_tools.cache_clear()


@pytest.mark.parametrize("seed", range(6))
def test_fast_top_k_matches_brute_force_sort(seed):
    """search() selects the top k with numpy: the same hits as sorting every score by
    (-score, index), ties included (a tiny vocabulary and repeated documents force many)."""
    import random

    rng = random.Random(seed)
    words = ["apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "plum"]
    words = words[: rng.randint(3, len(words))]
    docs = [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 300))]
    docs += rng.choices(docs, k=len(docs) // 3)  # exact duplicates: equal scores
    index = BM25Index.from_documents(docs, language="en")
    for _ in range(20):
        query = " ".join(rng.choices([*words, "zebra"], k=rng.randint(1, 3)))
        terms = [t for t in tokenize(query, "en") if t in index._retriever.vocab_dict]
        scores = [float(s) for s in index._retriever.get_scores(terms)] if terms else []
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        for k in (1, 2, 3, 5, 10, len(docs), len(docs) + 5):
            expected = [Hit(i, scores[i], docs[i]) for i in order[:k] if scores[i] > 0.0]
            assert index.search(query, k=k) == expected, (seed, query, k)

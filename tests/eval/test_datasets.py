import json
import re

import pytest

from rerank_plugins.datasets import (
    CORPORA,
    load_corpus,
    load_eval_set,
    load_examples,
    read_eval_set,
)

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_eval_set_counts_and_integrity():
    es = load_eval_set("eval_en")
    assert len(es.queries) >= 30
    assert len(es.corpus) >= 300
    doc_ids = {d.id for d in es.corpus}
    assert len(doc_ids) == len(es.corpus)
    assert set(es.qrels) == set(es.queries)  # every query is judged
    for qid, judged in es.qrels.items():
        assert judged.keys() <= doc_ids, qid
        assert all(0 <= g <= 3 for g in judged.values()), qid
        grades = sorted(judged.values())
        assert grades[-1] > 0, f"{qid} has no relevant document"
        # graded: several relevant levels, plus judged hard negatives
        assert len({g for g in grades if g > 0}) >= 2, qid
        assert 0 in grades, qid


def test_eval_passages_fit_minilm():
    # MiniLM reads at most 256 tokens: keep passages short
    for doc in load_eval_set().corpus:
        assert 25 <= len(doc.text.split()) <= 150, doc.id


def test_demo_corpora_sizes_and_languages():
    en = load_corpus("demo_en")
    zh = load_corpus("demo_zh")
    assert len(en) >= 400
    assert len(zh) >= 300
    assert not any(CJK.search(d.text) for d in en)
    assert all(CJK.search(d.text) for d in zh)
    for docs in (en, zh):
        assert len({d.id for d in docs}) == len(docs)
        assert len({d.text for d in docs}) == len(docs)


def test_chinese_physics_cluster_and_word_sharing_decoys():
    texts = [d.text for d in load_corpus("demo_zh")]
    assert sum("量子纠缠" in t for t in texts) >= 3
    assert any("鬼魅般的超距作用" in t for t in texts)
    assert any("贝尔不等式" in t for t in texts)
    assert any("量子波动速读" in t for t in texts)
    assert any("纠缠" in t and "量子" not in t for t in texts)  # relationships, lawsuits
    assert any("原理" in t and "量子" not in t for t in texts)  # machines


def test_examples():
    ex = load_examples()
    assert set(ex.queries) == set(CORPORA)
    assert "解释量子纠缠的基本原理" in ex.queries["demo_zh"]
    assert all(ex.queries[name] for name in CORPORA)
    zh_lists = [c for c in ex.candidate_lists if c.query == "解释量子纠缠的基本原理"]
    assert len(zh_lists) == 1
    docs = zh_lists[0].documents
    assert 5 <= len(docs) <= 8
    assert any("鬼魅般的超距作用" in d for d in docs)
    assert any("量子波动速读" in d for d in docs)
    assert any("纠缠" in d and "量子" not in d for d in docs)


def test_unknown_names_rejected():
    with pytest.raises(ValueError, match="demo_en"):
        load_corpus("nope")
    with pytest.raises(ValueError, match="eval_en"):
        load_eval_set("nope")


def test_read_own_eval_set(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"id": "d1", "text": "alpha"}) + "\n" + json.dumps({"id": "d2", "text": "b"})
    )
    (tmp_path / "queries.jsonl").write_text(json.dumps({"id": "q1", "text": "alpha?"}) + "\n")
    # TREC four-column rows are accepted
    (tmp_path / "qrels.tsv").write_text("q1 0 d1 2\nq1 0 d2 0\n")
    es = read_eval_set(tmp_path)
    assert es.qrels == {"q1": {"d1": 2, "d2": 0}}
    assert es.corpus[0].title is None
    (tmp_path / "qrels.tsv").write_text("qid\tdocid\tgrade\nq1\td9\t1\n")
    with pytest.raises(ValueError, match="d9"):
        read_eval_set(tmp_path)


def test_full_text_joins_title_and_text_per_language():
    from rerank_plugins.datasets import Document

    assert Document("a", "Body.", "Title").full_text == "Title. Body."
    assert Document("b", "正文。", "量子纠缠").full_text == "量子纠缠。正文。"
    assert Document("c", "Body only.").full_text == "Body only."

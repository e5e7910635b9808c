"""vLLM's scores against transformers reference computations of the same prompts.

These prove the serving recipe: the Qwen3-Reranker overrides turn the tiny causal LM into the
yes/no classifier the official recipe describes, the packaged template renders the official
prompt exactly (server mode equals client mode), and MiniLM gives real semantic scores.
"""

from __future__ import annotations

import httpx
import pytest

from rerank_plugins.prompts import format_document, format_query

pytestmark = pytest.mark.integration

PAIRS = [
    ("what is the capital of China?", "The capital of China is Beijing."),
    ("explain gravity", "Gravity is a force that attracts two bodies towards each other."),
    ("中国的首都是哪里?", "北京是中国的首都。"),
    ("how do I read a JSON file in Python", "Boil salted water and add the pasta."),
]
INSTRUCTION = "Given a question about geography or physics, find the passage that answers it"


def rerank(server, query, documents, **extra):
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    body = {"model": server.model_name, "query": query, "documents": documents, **extra}
    resp = httpx.post(f"{server.base_url}/rerank", json=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    return {r["index"]: r["relevance_score"] for r in resp.json()["results"]}


def client_side_scores(server, instruction=None):
    """One request per pair, formatted the way the client does in client prompt mode."""
    return [rerank(server, format_query(q, instruction), [format_document(d)])[0] for q, d in PAIRS]


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_tiny_client_formatted_scores_equal_the_reference(
    tiny_server, reference_scores, instruction
):
    got = client_side_scores(tiny_server, instruction)
    ref = reference_scores(tiny_server, PAIRS, format="official", instruction=instruction)
    assert got == pytest.approx(ref, abs=1e-4)
    # Random weights, but not a constant: the comparison above would be vacuous otherwise.
    assert max(ref) - min(ref) > 1e-3


def test_tiny_batch_of_documents_scores_like_single_pairs(tiny_server, reference_scores):
    query, docs = PAIRS[0][0], [d for _, d in PAIRS]
    got = rerank(tiny_server, format_query(query), [format_document(d) for d in docs])
    ref = reference_scores(tiny_server, [(query, d) for d in docs], format="official")
    assert [got[i] for i in range(len(docs))] == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_template_server_scores_equal_client_formatting(
    tiny_server, tiny_server_template, reference_scores, instruction
):
    extra = {} if instruction is None else {"instruction": instruction}
    server_side = [rerank(tiny_server_template, q, [d], **extra)[0] for q, d in PAIRS]
    client_side = client_side_scores(tiny_server, instruction)
    # Equal scores mean equal prompts: the packaged template renders the official prompt,
    # down to the final "</think>\n\n" that vLLM's example template loses.
    assert server_side == pytest.approx(client_side, abs=1e-4)
    ref = reference_scores(tiny_server, PAIRS, format="official", instruction=instruction)
    assert server_side == pytest.approx(ref, abs=1e-4)


def test_template_server_uses_the_instruction_field(tiny_server_template):
    q, d = PAIRS[0]
    default = rerank(tiny_server_template, q, [d])[0]
    custom = rerank(tiny_server_template, q, [d], instruction=INSTRUCTION)[0]
    assert abs(default - custom) > 1e-6


JSON_QUERY = "how do I read a JSON file in Python"
JSON_DOCS = [
    "Use Python's csv module: csv.reader(open('data.csv')) yields each row as a list.",
    "Jackson's ObjectMapper reads JSON into Java objects with readValue().",
    "Cooking pasta: boil salted water, add the pasta and cook for nine minutes.",
    "In Python, json.load(f) parses a JSON file opened with open('data.json') into a dict.",
]


def test_minilm_ranks_the_json_document_first(minilm_server, reference_scores):
    scores = rerank(minilm_server, JSON_QUERY, JSON_DOCS)
    ranking = sorted(scores, key=scores.get, reverse=True)
    assert ranking[0] == 3
    assert ranking[-1] == 2  # cooking is the least related
    ref = reference_scores(minilm_server, [(JSON_QUERY, d) for d in JSON_DOCS])
    assert [scores[i] for i in range(len(JSON_DOCS))] == pytest.approx(ref, abs=1e-4)

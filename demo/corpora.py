"""The demo's corpora: the bundled samples (``rerank_plugins.datasets``) and public labelled
sets (``data/<name>/``, read by ``rerank_plugins.eval.data.load_collection``).

A public set is loaded at first use, not at start: medquad-liveqa is 15,825 documents.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rerank_plugins import datasets
from rerank_plugins.eval.data import Collection, load_collection

from .messages import text

__all__ = [
    "BUNDLED",
    "PUBLIC",
    "Corpus",
    "Examples",
    "PublicSet",
    "load_bundled",
    "load_examples_safe",
    "load_public",
]

logger = logging.getLogger("demo")

# Dataset name -> label shown in the corpus picker.
BUNDLED = {"demo_en": "English sample", "demo_zh": "中文 sample"}
# Public sets in data/ the picker offers (titles: corpus_<name> in demo.messages).
PUBLIC = ("medquad-liveqa", "xquad-zh")
EXAMPLES_PER_SET = 12


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


class PublicSet:
    """A public labelled set: corpus, queries and judgements, loaded once at first use.

    Thread-safe: two first searches load it once. ``loader`` is ``load_collection`` (tests
    may hand a smaller collection).
    """

    def __init__(
        self, name: str, title: str, loader: Callable[[str], Collection] = load_collection
    ) -> None:
        self.name = name
        self.title = title
        self._loader = loader
        self._lock = threading.Lock()
        self._collection: Collection | None = None
        self._query_ids: dict[str, str] = {}
        self._positions: dict[str, int] = {}

    @property
    def label(self) -> str:
        """The corpus picker's entry (no size: that would mean loading the set)."""
        return self.title

    @property
    def loaded(self) -> bool:
        """Whether the set has been read (the first search says it is loading)."""
        return self._collection is not None

    def collection(self) -> Collection:
        """The set, read on the first call."""
        with self._lock:
            if self._collection is None:
                collection = self._loader(self.name)
                # Exact query text -> id: a query typed or picked as the set has it is judged.
                self._query_ids = {" ".join(t.split()): q for q, t in collection.queries.items()}
                self._positions = {doc_id: i for i, doc_id in enumerate(collection.doc_ids)}
                self._collection = collection
            return self._collection

    @property
    def documents(self) -> tuple[str, ...]:
        """The passages BM25 and the reranker see, in corpus order."""
        return self.collection().texts

    def example_queries(self, count: int = EXAMPLES_PER_SET) -> list[str]:
        """The set's own first ``count`` judged queries, in file order."""
        collection = self.collection()
        return [collection.queries[q] for q in collection.judged_queries()[:count]]

    def grades(self, query: str) -> dict[int, int] | None:
        """Corpus position -> relevance grade for ``query`` (None: the set never judged it)."""
        collection = self.collection()
        qid = self._query_ids.get(" ".join(query.split()))
        if qid is None or qid not in collection.qrels:
            return None
        return {
            self._positions[doc_id]: grade
            for doc_id, grade in collection.qrels[qid].items()
            if doc_id in self._positions
        }


def load_public(names: Sequence[str] = PUBLIC) -> dict[str, PublicSet]:
    """The public sets by name, none of them read yet (so the demo starts as fast)."""
    return {name: PublicSet(name, text("en", f"corpus_{name}")) for name in names}

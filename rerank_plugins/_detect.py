"""How the server formats prompts, found out once per client, and the prompt mode that follows.

The signal is the prompt token count vLLM reports for a probe pair of two one-character
texts. A server that applies a template (this package's Qwen3-Reranker template, a
Sentence-Transformers v6 checkpoint's own template, any ``--chat-template``) spends tens of
tokens on it; a bare cross-encoder adds at most a few special tokens. Each one-character text
is one token, so ``prompt_tokens - 2`` is exactly what the server adds to every pair: that
figure also sizes the truncation budget. A server that reports no usage (a gateway that
rewrites the reply) gives no signal; ``auto`` then falls back to the model-name rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import prompts
from .errors import RerankConfigError

__all__ = [
    "PROBE_DOCUMENT",
    "PROBE_QUERY",
    "TEMPLATE_MIN_TOKENS",
    "Detection",
    "read_probe",
    "resolve_mode",
]

PROBE_QUERY = "a"
PROBE_DOCUMENT = "b"

# Special tokens of the cross-encoders vLLM serves: BERT [CLS] q [SEP] d [SEP] adds 3,
# XLM-RoBERTa <s> q </s></s> d </s> adds 4. Qwen3-Reranker's template adds about 60.
TEMPLATE_MIN_TOKENS = 16


@dataclass(frozen=True, slots=True)
class Detection:
    """What the probe showed: whether the server templates, and what it adds to a pair."""

    formats_prompt: bool | None
    added_tokens: int | None
    evidence: str


def read_probe(prompt_tokens: int | None, route: str) -> Detection:
    """Interpret the probe's ``usage.prompt_tokens`` (None: the reply had no usage)."""
    if prompt_tokens is None:
        return Detection(None, None, f"{route} reported no token usage for the probe pair")
    added = max(prompt_tokens - len(PROBE_QUERY) - len(PROBE_DOCUMENT), 0)
    templated = added >= TEMPLATE_MIN_TOKENS
    what = "applies a prompt template" if templated else "sends the pair as is"
    return Detection(
        templated,
        added,
        f"{route} counted {prompt_tokens} prompt tokens for a pair of two one-character "
        f"texts: the server {what} ({added} tokens added per pair)",
    )


def resolve_mode(
    requested: str, detection: Detection, needs_template: bool, base_url: str
) -> tuple[str, str]:
    """The prompt mode to use and why; an explicit mode that contradicts the server raises.

    ``needs_template``: the model is one whose scores need its prompt (the name rule).
    """
    templated = detection.formats_prompt
    if requested != "auto":
        if templated is True and requested in ("client", "raw"):
            action = (
                "wrap the prompt a second time" if requested == "client" else "be templated anyway"
            )
            raise RerankConfigError(
                f"prompt_mode={requested!r} contradicts the server at {base_url}: "
                f"{detection.evidence}, so the text this client sends would {action}. "
                "Set prompt_mode='auto' (or 'server') to send plain text."
            )
        if templated is False and requested == "server":
            fix = "prompt_mode='client'" if needs_template else "prompt_mode='auto'"
            raise RerankConfigError(
                f"prompt_mode='server' contradicts the server at {base_url}: "
                f"{detection.evidence}. Start it with rerank-serve (which serves the model's "
                f"template by default), or set {fix}."
            )
        return requested, f"prompt_mode={requested!r} as configured; {detection.evidence}"
    if templated is True:
        return "server", f"auto: {detection.evidence}; sending plain text"
    if templated is False:
        if needs_template:
            return "client", (
                f"auto: {detection.evidence}, and the model needs Qwen3-Reranker's prompt: "
                "formatting it in the client"
            )
        return "raw", f"auto: {detection.evidence}; the model needs no prompt format"
    mode = "client" if needs_template else "raw"
    return mode, (
        f"auto: no signal ({detection.evidence}); by the model-name rule "
        f"{'a Qwen3-Reranker' if needs_template else 'not a Qwen3-Reranker'}: {mode!r}"
    )


def needs_template(*names: str | None) -> bool:
    """The model-name rule: whether any of the names is a Qwen3-Reranker's."""
    return any(prompts.is_qwen3_reranker(name or "") for name in names)

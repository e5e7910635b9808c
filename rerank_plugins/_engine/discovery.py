"""What the server is, learnt once per engine: ``/version``, ``/v1/models``, the probes.

The prompt probe posts a pair of two one-character texts and reads the prompt token count
vLLM reports. A server that applies a template (this package's Qwen3-Reranker template, a
Sentence-Transformers v6 checkpoint's own template, any ``--chat-template``) spends tens of
tokens on it; a bare cross-encoder adds at most a few special tokens. Each one-character text
is one token, so ``prompt_tokens - 2`` is exactly what the server adds to every pair: that
figure also sizes the truncation budget. A server that reports no usage (a gateway that
rewrites the reply) gives no signal; ``auto`` then falls back to the model-name rule. With an
API key the probe is first sent without it, to learn whether the key guards the route.

What the answers mean (:func:`read_probe`, :func:`resolve_mode`) is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import families
from ..errors import RerankConfigError, RerankStatusError
from ..prompts import needs_template
from ..types import ServerInfo
from .context import CallContext, WarnOnce, logger
from .http import NO_ROUTE, send
from .truncation import tokens
from .wire import json_object, parse_models, parse_version, usage_tokens

__all__ = [
    "PROBE_DOCUMENT",
    "PROBE_QUERY",
    "TEMPLATE_MIN_TOKENS",
    "Detection",
    "learn",
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


# -- asking the server -------------------------------------------------------------------------


async def learn(ctx: CallContext, warn: WarnOnce) -> ServerInfo:
    """Ask the server what it is and choose how to talk to it."""
    config = ctx.config
    base_url = config.base_url
    version_text = await _optional(ctx, "/version")
    version = parse_version(base_url + "/version", version_text) if version_text else None
    models_text = await _optional(ctx, "/v1/models")
    entry = (
        parse_models(base_url + "/v1/models", models_text, config.model) if models_text else None
    )
    model = config.model or (entry.id if entry else None)
    if not model:
        raise RerankConfigError(
            "no model: pass model=... or set RERANK_MODEL (the server listed none)"
        )
    root = entry.root if entry else None
    detection, auth_enforced = await _probe(ctx, model, warn)
    mode, why = resolve_mode(config.prompt_mode, detection, needs_template(model, root), base_url)
    if mode == "client":
        await _check_chat_tokens(ctx, model)
    if config.truncate and (entry is None or entry.max_model_len is None):
        warn(
            "no-window",
            "rerank_plugins: %s/v1/models gives no max_model_len: documents longer than "
            "the model's window are sent uncut (a gateway without /v1/models?)",
            base_url,
        )
    if detection.formats_prompt is None:
        warn("detect", "rerank_plugins: %s", why)
    else:
        logger.info("rerank_plugins: prompt mode %r: %s", mode, why)
    listwise = families.is_listwise(model, root) if config.listwise is None else config.listwise
    if listwise and config.cache is not None:
        warn(
            "listwise-cache",
            "rerank_plugins: %s is listwise (its scores depend on the whole list): the "
            "cache is not used for it",
            model,
        )
    return ServerInfo(
        listwise=listwise,
        version=version,
        model=model,
        model_root=root,
        max_model_len=entry.max_model_len if entry else None,
        formats_prompt=detection.formats_prompt,
        added_tokens=detection.added_tokens,
        prompt_mode=mode,
        prompt_detection=why,
        auth_enforced=auth_enforced,
    )


async def _optional(ctx: CallContext, path: str) -> bytes | None:
    try:
        return await send(ctx, "GET", path, None)
    except RerankStatusError as exc:
        if exc.status_code in NO_ROUTE:
            return None  # a gateway or an old server without it: the feature is unknown
        raise


async def _check_chat_tokens(ctx: CallContext, model: str) -> None:
    """Refuse client-side formatting for a model whose tokenizer lacks Qwen's chat tokens.

    Such a model was not trained on the prompt: MiniLM wrapped in it scores nonsense.
    """
    marker = "<|im_start|>"
    try:
        ids = await tokens(ctx, model, marker)
    except RerankStatusError as exc:
        if exc.status_code in NO_ROUTE:
            return  # no tokenizer to ask: trust the setting
        raise
    if len(ids) != 1:
        raise RerankConfigError(
            f"prompt_mode='client' formats Qwen3-Reranker's prompt, but the tokenizer of "
            f"{model!r} at {ctx.config.base_url} splits {marker!r} into {len(ids)} tokens: "
            "it is not a Qwen3-Reranker. Set prompt_mode='auto'."
        )


async def _probe(ctx: CallContext, model: str, warn: WarnOnce) -> tuple[Detection, bool | None]:
    """Post the probe pair; with an API key, first without it to see the route is guarded."""
    config = ctx.config
    route = config.route
    url = config.base_url + route
    payload = {"model": model, "query": PROBE_QUERY, "documents": [PROBE_DOCUMENT], "top_n": 0}
    auth_enforced: bool | None = None
    body: bytes | None = None
    for with_key in [False, True] if config.api_key else [True]:
        try:
            body = await send(ctx, "POST", route, payload, auth=with_key)
        except RerankStatusError as exc:
            if not with_key:
                # Refused without the key: guarded. Any other failure (a gateway answering
                # 500 to a keyless request) says nothing; the keyed probe decides.
                auth_enforced = True if exc.status_code in (401, 403) else None
                continue
            if exc.status_code in NO_ROUTE:
                return read_probe(None, f"{route} (answered {exc.status_code})"), None
            raise
        if not with_key:
            auth_enforced = False
            warn(
                "auth",
                "rerank_plugins: %s answered without the API key: the key guards nothing "
                "on this route. Serve with `rerank-serve` (its key guards every route) or "
                "put an authenticating gateway in front.",
                url,
            )
        break
    assert body is not None
    counted = usage_tokens(url, json_object(url, body))
    return read_probe(counted[0] if counted and counted[0] else None, route), auth_enforced

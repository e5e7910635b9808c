"""The Gradio app: search a corpus with BM25, rerank the candidates, show what changed.

``build_demo(client, backend)`` lays out the UI around one shared ``AsyncRerankClient``; the
module-level ``demo`` talks to ``RERANK_BASE_URL`` (``python -m demo`` starts a server too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import gradio as gr
import pandas as pd

from rerank_plugins import DEFAULT_INSTRUCTION, AsyncRerankClient

from .backend import OFFLINE_BEST_NOTE, Backend, describe_server
from .corpora import Corpus, Examples, load_bundled, load_examples_safe
from .handlers import OWN_DOCS, RERANK_ANYWAY, Handlers
from .inputs import MAX_DOCUMENTS, MAX_UPLOAD_BYTES, SPLIT_MODES
from .pipeline import IndexCache
from .views import LIST_COLUMNS, TABLE_COLUMNS, documents_html

__all__ = ["CSS", "INSTRUCTION_PRESETS", "build_demo", "demo_from_env", "launch_options"]

INSTRUCTION_PRESETS = {
    "Default: web search": "",
    "Explain a concept": (
        "Given a question, retrieve passages that explain the concept it asks about"
    ),
    "Find a definition": "Given a term, retrieve passages that define it",
    "Programming help": (
        "Given a programming question, retrieve documentation or code that answers it"
    ),
    "中文问答": "根据中文问题检索能够回答该问题的段落",
}
DEFAULT_LIST_QUERY = "解释量子纠缠的基本原理"

CSS = """
#rr-banner {border-left: 4px solid var(--color-accent); padding: 6px 12px; border-radius: 6px;
            background: var(--block-background-fill);}
#rr-status p, #rr-timings p {margin: 0;}
.rr-cards {display: flex; flex-direction: column; gap: 10px;}
.rr-card {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 14px;
          background: var(--block-background-fill);}
.rr-head {display: flex; gap: 12px; align-items: baseline; margin-bottom: 4px;}
.rr-rank {font-weight: 700; font-size: 1.1em; color: var(--color-accent);}
.rr-meta {font-size: 0.9em; opacity: 0.85;}
.rr-text {line-height: 1.55;}
.rr-text mark {background: #fde68a; color: #1f2937; padding: 0 2px; border-radius: 3px;}
.chg.up {color: #16a34a; font-weight: 600;}
.chg.down {color: #dc2626; font-weight: 600;}
.chg.same {color: #6b7280;}
.rr-empty {opacity: 0.7; padding: 8px;}
"""


def launch_options() -> dict[str, Any]:
    """Keyword arguments ``demo.launch`` needs (Gradio 6 takes theme and CSS there)."""
    return {
        "css": CSS,
        "theme": gr.themes.Soft(),
        # Gradio's own cap is a safety net far above ours, so a 2-20 MB file still reaches
        # the handler and gets the demo's readable message.
        "max_file_size": "20mb",
        "ssr_mode": False,
        "show_error": False,
    }


def _banner(backend: Backend) -> str:
    text = (
        f"**Reranker:** `{backend.model or '(server default)'}` — {backend.origin}.  \n"
        f"**Why this model:** {backend.reason}."
    )
    if backend.languages is not None:
        text += (
            f"  \n**Reads {backend.languages_label}:** text in another language (by the share "
            "of CJK characters) is not reranked: the Chinese corpus and pasted Chinese lists "
            "are shown in BM25's (or their input) order, because a model that cannot read "
            "them would only shuffle them. "
            f"Tick “{RERANK_ANYWAY}” to see its order all the same."
        )
    if not backend.takes_instruction:
        text += "  \n**No instruction:** this model does not read one."
    if backend.is_minilm:
        text += f"  \n**Best available here?** {OFFLINE_BEST_NOTE}"
    return text


METRICS_HELP = """The demo's client runs with `metrics=True`: every call updates the Prometheus
metrics of `rerank_plugins.telemetry` (call duration, documents per call, requests by status
class, errors, retries, cache hits and misses, calls in flight), labelled by model and route
only. In your application, expose them for Prometheus with
`prometheus_client.start_http_server(9464)` (then scrape `http://HOST:9464/metrics`); started
with `--metrics-port`, this demo does the same."""


def metrics_snapshot() -> str:
    """The ``rerank_`` lines of the default Prometheus registry, as a scrape would show them."""
    try:
        from prometheus_client import REGISTRY, generate_latest
    except ImportError:
        return "prometheus_client is not installed: pip install 'rerank-plugins[metrics]'"
    lines = generate_latest(REGISTRY).decode().splitlines()
    # Samples start with the metric's name; HELP and TYPE lines name it third.
    shown = [
        line
        for line in lines
        if line.startswith("rerank_") or line.startswith(("# HELP rerank_", "# TYPE rerank_"))
    ]
    return "\n".join(shown) or "(no calls yet)"


def build_demo(
    client: AsyncRerankClient,
    backend: Backend,
    *,
    corpora: Mapping[str, Corpus] | None = None,
    examples: Examples | None = None,
    cache: IndexCache | None = None,
) -> gr.Blocks:
    """The demo UI over one shared ``client``; ``backend`` says which model it is and why."""
    corpora = load_bundled() if corpora is None else corpora
    examples = load_examples_safe() if examples is None else examples
    handlers = Handlers(client, backend, corpora, cache)
    choices = [*handlers.by_label, OWN_DOCS]
    model_label = backend.model or "(server default)"
    instruction_kwargs: dict[str, Any] = {
        "interactive": backend.takes_instruction,
        "info": backend.instruction_note,
        "placeholder": f"Empty: the default, “{DEFAULT_INSTRUCTION}”",
    }
    limits = f"Up to {MAX_UPLOAD_BYTES // 2**20} MB per file and {MAX_DOCUMENTS:,} documents."

    blocks: gr.Blocks
    with gr.Blocks(title="BM25 → rerank demo", analytics_enabled=False) as blocks:
        gr.Markdown(
            "# BM25 → rerank\nBM25 finds candidates, a vLLM-served reranker re-scores them; "
            "see which documents moved and why."
        )
        gr.Markdown(_banner(backend), elem_id="rr-banner")
        with gr.Tab("Search a corpus", id="search"), gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                corpus = gr.Radio(choices, value=choices[0], label="Corpus", elem_id="rr-corpus")
                with gr.Group(visible=not handlers.by_label) as own_box:
                    upload = gr.File(
                        label="Upload .txt, .md or .jsonl (≤ 2 MB)",
                        file_types=[".txt", ".md", ".jsonl"],
                        type="filepath",
                        elem_id="rr-upload",
                    )
                    pasted = gr.Textbox(
                        label="…or paste documents",
                        lines=5,
                        placeholder="One document per line, or paragraphs split by blank lines",
                        elem_id="rr-paste",
                    )
                    split = gr.Radio(
                        list(SPLIT_MODES), value=next(iter(SPLIT_MODES)), label="Split into"
                    )
                    docs_status = gr.Markdown(limits, elem_id="rr-docs-status")
                top_k = gr.Slider(
                    5, 300, value=50, step=5, label="BM25 candidates (top-k)",
                    info="How many BM25 hits the reranker re-scores", elem_id="rr-topk",
                )  # fmt: skip
                top_n = gr.Slider(
                    1,
                    30,
                    value=10,
                    step=1,
                    label="Shown after reranking (top-n)",
                    elem_id="rr-topn",
                )
                rerank_anyway = gr.Checkbox(
                    value=False,
                    label=RERANK_ANYWAY,
                    info=f"Off: text that {model_label} cannot read keeps BM25's order",
                    visible=backend.languages is not None,
                    elem_id="rr-rerank-anyway",
                )
                with gr.Accordion("Instruction", open=True):
                    preset = gr.Dropdown(
                        list(INSTRUCTION_PRESETS),
                        value=next(iter(INSTRUCTION_PRESETS)),
                        label="Preset",
                        interactive=backend.takes_instruction,
                    )
                    instruction = gr.Textbox(
                        label="Instruction", lines=2, elem_id="rr-instruction", **instruction_kwargs
                    )
                gr.Textbox(
                    value=f"{model_label} — {backend.origin}",
                    label="Model / backend",
                    interactive=False,
                    elem_id="rr-model",
                )
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        label="Query",
                        placeholder="Ask something, e.g. how do vaccines train immunity?",
                        scale=5,
                        elem_id="rr-query",
                    )
                    go = gr.Button("Search & rerank", variant="primary", scale=1, elem_id="rr-go")
                example_sets = [
                    (corpora[name].label, gr.Dataset(
                        components=[query],
                        samples=[[q] for q in qs],
                        label=f"Try: {corpora[name].label}",
                        layout="gallery",
                        samples_per_page=8,
                        elem_id=f"rr-examples-{name}",
                    ))
                    for name, qs in examples.queries.items()
                    if name in corpora
                ]  # fmt: skip
                status = gr.Markdown(elem_id="rr-status")
                timings = gr.Markdown(elem_id="rr-timings")
                table = gr.Dataframe(
                    value=pd.DataFrame(columns=TABLE_COLUMNS),
                    label="Reranked results (Change = places moved compared with BM25)",
                    interactive=False,
                    wrap=True,
                    max_height=760,
                    column_widths=["6%", "9%", "8%", "8%", "8%", "7%", "54%"],
                    elem_id="rr-table",
                )
                chart = gr.Plot(show_label=False, elem_id="rr-chart")
                docs_view = gr.HTML(documents_html([], "", "en"), elem_id="rr-docs")
        with gr.Tab("Rerank a list", id="list"):
            gr.Markdown("Paste a query and candidates, one per line; the reranker orders them.")
            first_query, first_docs = next(iter(examples.lists.values()), (DEFAULT_LIST_QUERY, ()))
            with gr.Row():
                with gr.Column(scale=2):
                    if examples.lists:
                        list_example = gr.Dropdown(
                            list(examples.lists),
                            value=next(iter(examples.lists)),
                            label="Example list",
                            elem_id="rr-list-example",
                        )
                    list_query = gr.Textbox(
                        value=first_query, label="Query", elem_id="rr-list-query"
                    )
                    list_docs = gr.Textbox(
                        value="\n".join(first_docs),
                        label="Candidates, one per line",
                        lines=10,
                        max_lines=20,
                        elem_id="rr-list-docs",
                    )
                    list_instruction = gr.Textbox(
                        label="Instruction", lines=1, elem_id="rr-list-instruction",
                        **instruction_kwargs,
                    )  # fmt: skip
                    list_anyway = gr.Checkbox(
                        value=False,
                        label=RERANK_ANYWAY,
                        visible=backend.languages is not None,
                        elem_id="rr-list-rerank-anyway",
                    )
                    list_go = gr.Button("Rerank", variant="primary", elem_id="rr-list-go")
                with gr.Column(scale=3):
                    list_status = gr.Markdown(elem_id="rr-list-status")
                    list_out = gr.Dataframe(
                        value=pd.DataFrame(columns=LIST_COLUMNS),
                        label="Ranked candidates",
                        interactive=False,
                        wrap=True,
                        column_widths=["8%", "12%", "9%", "71%"],
                        elem_id="rr-list-table",
                    )

        with gr.Tab("Metrics", id="metrics"):
            gr.Markdown(METRICS_HELP)
            metrics_text = gr.Code(
                value=metrics_snapshot(), label="rerank_* metrics now", elem_id="rr-metrics"
            )
            gr.Button("Refresh", elem_id="rr-metrics-refresh").click(
                metrics_snapshot, None, metrics_text
            )

        inputs = [corpus, query, top_k, top_n, instruction, pasted, upload, split, rerank_anyway]
        outputs = [status, timings, table, chart, docs_view]
        go.click(handlers.search, inputs, outputs)
        for label, dataset in example_sets:
            # Clicking an example picks its corpus too, then runs it.
            dataset.click(
                lambda sample, label=label: (label, sample[0]), dataset, [corpus, query]
            ).then(handlers.search, inputs, outputs)
        query.submit(handlers.search, inputs, outputs)
        corpus.change(lambda c: gr.update(visible=c == OWN_DOCS), corpus, own_box)
        preset.change(lambda p: INSTRUCTION_PRESETS.get(p, ""), preset, instruction)
        for trigger in (upload.change, pasted.blur, split.change):
            trigger(handlers.check_documents, [pasted, upload, split], docs_status)
        if examples.lists:
            list_example.change(
                lambda name: (examples.lists[name][0], "\n".join(examples.lists[name][1])),
                list_example,
                [list_query, list_docs],
            )
        list_go.click(
            handlers.rerank_list,
            [list_query, list_docs, list_instruction, list_anyway],
            [list_status, list_out],
        )
    return blocks


def demo_from_env() -> gr.Blocks:
    """The demo against the server at ``RERANK_BASE_URL`` (default ``http://127.0.0.1:8000``)."""
    base_url = os.environ.get("RERANK_BASE_URL", "http://127.0.0.1:8000")
    client = AsyncRerankClient(base_url=base_url, timeout=300.0, metrics=True)
    return build_demo(client, describe_server(base_url, client.config.model, timeout=1.0))


def __getattr__(name: str) -> gr.Blocks:
    # The module-level `demo` (what `gradio demo/app.py` looks up) is built on first access,
    # so `python -m demo`, which builds one around the server it starts, does not build a
    # second one nor ask a server that is not there.
    if name == "demo":
        built = demo_from_env()
        globals()["demo"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    demo_from_env().launch(**launch_options())

"""The Gradio app: search a corpus with BM25, rerank the candidates, show what changed.

``build_demo(client, backend)`` lays out the UI around one shared ``AsyncRerankClient``; the
module-level ``demo`` talks to ``RERANK_BASE_URL`` (``python -m demo`` starts a server too).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import gradio as gr
import pandas as pd

from rerank_plugins import DEFAULT_INSTRUCTION, AsyncRerankClient

from .backend import Backend, describe_server
from .corpora import Corpus, Examples, PublicSet, load_bundled, load_examples_safe, load_public
from .handlers import OWN_DOCS, Handlers
from .i18n import UiText
from .inputs import MAX_DOCUMENTS, MAX_UPLOAD_BYTES
from .messages import Lang, languages_label, text
from .pipeline import IndexCache
from .views import list_columns, table_columns

__all__ = [
    "CSS",
    "INSTRUCTION_PRESETS",
    "DemoBlocks",
    "build_demo",
    "demo_from_env",
    "launch_options",
]

logger = logging.getLogger("demo")

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
# The presets' names in demo.messages (the dropdown's value stays the English name).
_PRESET_KEYS = dict(
    zip(
        INSTRUCTION_PRESETS,
        ("preset_default", "preset_explain", "preset_define", "preset_code", "preset_zh"),
        strict=True,
    )
)
_SPLIT_KEYS = {"auto": "split_auto", "lines": "split_lines", "paragraphs": "split_paragraphs"}
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
.rr-rel {color: #16a34a; font-weight: 600;}
#rr-judged p {margin: 0;}
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


def _origin(backend: Backend, lang: Lang) -> str:
    return (backend.origin_zh if lang == "zh" else "") or backend.origin


def _banner(backend: Backend, lang: Lang) -> str:
    model = backend.model or text(lang, "server_default")
    reason = (backend.reason_zh if lang == "zh" else "") or backend.reason
    lines = [
        text(lang, "banner_model", model=model, origin=_origin(backend, lang)),
        text(lang, "banner_why", reason=reason),
    ]
    if backend.languages is not None:
        languages = languages_label(backend.languages, lang)
        anyway = text(lang, "rerank_anyway")
        lines.append(text(lang, "banner_reads", languages=languages, anyway=anyway))
    if not backend.takes_instruction:
        lines.append(text(lang, "banner_no_instruction"))
    if backend.is_minilm:
        lines.append(text(lang, "banner_best", note=text(lang, "offline_best")))
    return "  \n".join(lines)


def _instruction_note(backend: Backend) -> str:
    if backend.takes_instruction:
        return "note_qwen"
    return "note_minilm" if backend.english_only else "note_other"


METRICS_HELP = text("en", "metrics_help")


def metrics_snapshot(lang: Lang = "en") -> str:
    """The ``rerank_`` lines of the default Prometheus registry, as a scrape would show them."""
    try:
        from prometheus_client import REGISTRY, generate_latest
    except ImportError:
        return text(lang, "no_metrics_lib")
    lines = generate_latest(REGISTRY).decode().splitlines()
    # Samples start with the metric's name; HELP and TYPE lines name it third.
    shown = [
        line
        for line in lines
        if line.startswith("rerank_") or line.startswith(("# HELP rerank_", "# TYPE rerank_"))
    ]
    return "\n".join(shown) or text(lang, "no_calls")


class DemoBlocks(gr.Blocks):
    """``gr.Blocks`` that launches with the translations its page was built with.

    Callers launch it as any Blocks (``demo.launch(**launch_options())``); the ``i18n``
    argument Gradio needs for a page that follows the browser's language is filled in here.
    """

    ui_text: UiText | None = None

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        if self.ui_text is not None and self.ui_text.fixed is None:
            kwargs.setdefault("i18n", self.ui_text.i18n)
        return super().launch(*args, **kwargs)


def _results_table(
    columns: list[str], label: str, widths: list[str], elem_id: str, **more: Any
) -> gr.Dataframe:
    """An empty read-only results table (search and list tabs), filled by the handlers."""
    return gr.Dataframe(
        value=pd.DataFrame(columns=columns),
        label=label,
        interactive=False,
        wrap=True,
        column_widths=widths,
        elem_id=elem_id,
        **more,
    )


def build_demo(
    client: AsyncRerankClient,
    backend: Backend,
    *,
    corpora: Mapping[str, Corpus] | None = None,
    examples: Examples | None = None,
    cache: IndexCache | None = None,
    public: Mapping[str, PublicSet] | None = None,
    lang: Lang | None = None,
) -> gr.Blocks:
    """The demo UI over one shared ``client``; ``backend`` says which model it is and why.

    ``public`` are the public labelled sets offered beside the bundled corpora (default: those
    in ``data/``, read at first use). ``lang`` fixes the interface language (``"en"``,
    ``"zh"``); None follows the browser's.
    """
    corpora = load_bundled() if corpora is None else corpora
    examples = load_examples_safe() if examples is None else examples
    public = load_public() if public is None else public
    ui = UiText(lang)
    handlers = Handlers(client, backend, corpora, cache, public=public, lang=lang)

    def corpus_label(corpus: Corpus) -> Any:
        return ui.each(
            f"corpus_label.{corpus.name}",
            lambda tl: text(
                tl,
                "corpus_label",
                title=handlers.corpus_title(corpus, tl),
                n=len(corpus.documents),
            ),
        )

    def try_label(corpus: Corpus | PublicSet) -> Any:
        return ui.each(
            f"try.{corpus.name}",
            lambda tl: text(tl, "try", corpus=handlers.corpus_title(corpus, tl)),
        )

    choices: list[tuple[Any, str]] = [(corpus_label(c), name) for name, c in corpora.items()]
    choices += [(ui(f"corpus_{name}"), name) for name in public]
    choices.append((ui("own_docs"), OWN_DOCS))
    model_label = backend.model or text(lang or "en", "server_default")
    instruction_kwargs: dict[str, Any] = {
        "interactive": backend.takes_instruction,
        "info": ui(_instruction_note(backend)),
        "placeholder": ui("instruction_placeholder", default=DEFAULT_INSTRUCTION),
    }
    limits = ui("limits", mb=MAX_UPLOAD_BYTES // 2**20, docs=f"{MAX_DOCUMENTS:,}")
    first = lang or "en"

    blocks: DemoBlocks
    with DemoBlocks(title=text(first, "title"), analytics_enabled=False) as blocks:
        blocks.ui_text = ui
        gr.Markdown(ui("intro"))
        gr.Markdown(ui.each("banner", lambda tl: _banner(backend, tl)), elem_id="rr-banner")
        with gr.Tab(ui("tab_search"), id="search"), gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                corpus = gr.Radio(
                    choices, value=choices[0][1], label=ui("corpus"), elem_id="rr-corpus"
                )
                with gr.Group(visible=len(choices) == 1) as own_box:
                    upload = gr.File(
                        label=ui("upload"),
                        file_types=[".txt", ".md", ".jsonl"],
                        type="filepath",
                        elem_id="rr-upload",
                    )
                    pasted = gr.Textbox(
                        label=ui("paste"),
                        lines=5,
                        placeholder=ui("paste_placeholder"),
                        elem_id="rr-paste",
                    )
                    split = gr.Radio(
                        [(ui(key), mode) for mode, key in _SPLIT_KEYS.items()],
                        value="auto",
                        label=ui("split"),
                    )
                    docs_status = gr.Markdown(limits, elem_id="rr-docs-status")
                top_k = gr.Slider(
                    5, 300, value=50, step=5, label=ui("top_k"),
                    info=ui("top_k_info"), elem_id="rr-topk",
                )  # fmt: skip
                top_n = gr.Slider(
                    1,
                    30,
                    value=10,
                    step=1,
                    label=ui("top_n"),
                    elem_id="rr-topn",
                )
                rerank_anyway = gr.Checkbox(
                    value=False,
                    label=ui("rerank_anyway"),
                    info=ui("rerank_anyway_info", model=model_label),
                    visible=backend.languages is not None,
                    elem_id="rr-rerank-anyway",
                )
                with gr.Accordion(ui("instruction"), open=True):
                    preset = gr.Dropdown(
                        [(ui(_PRESET_KEYS[name]), name) for name in INSTRUCTION_PRESETS],
                        value=next(iter(INSTRUCTION_PRESETS)),
                        label=ui("preset"),
                        interactive=backend.takes_instruction,
                    )
                    instruction = gr.Textbox(
                        label=ui("instruction"),
                        lines=2,
                        elem_id="rr-instruction",
                        **instruction_kwargs,
                    )
                gr.Textbox(
                    value=ui.each(
                        "model_box", lambda tl: f"{model_label} — {_origin(backend, tl)}"
                    ),
                    label=ui("model_box"),
                    interactive=False,
                    elem_id="rr-model",
                )
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        label=ui("query"),
                        placeholder=ui("query_placeholder"),
                        scale=5,
                        elem_id="rr-query",
                    )
                    go = gr.Button(ui("go"), variant="primary", scale=1, elem_id="rr-go")
                example_sets = [
                    (name, gr.Dataset(
                        components=[query],
                        samples=[[q] for q in qs],
                        label=try_label(corpora[name]),
                        layout="gallery",
                        samples_per_page=8,
                        elem_id=f"rr-examples-{name}",
                    ))
                    for name, qs in examples.queries.items()
                    if name in corpora
                ]  # fmt: skip
                # A public set's queries are read with the set, after the page opens.
                public_sets = [
                    (name, gr.Dataset(
                        components=[query],
                        samples=[],
                        label=try_label(public_set),
                        layout="gallery",
                        samples_per_page=6,
                        visible=False,
                        elem_id=f"rr-examples-{name}",
                    ))
                    for name, public_set in public.items()
                ]  # fmt: skip
                status = gr.Markdown(elem_id="rr-status")
                judged = gr.Markdown(elem_id="rr-judged")
                timings = gr.Markdown(elem_id="rr-timings")
                table = _results_table(
                    table_columns(first),
                    ui("table"),
                    ["6%", "9%", "8%", "8%", "8%", "7%", "54%"],
                    "rr-table",
                    max_height=760,
                )
                chart = gr.Plot(show_label=False, elem_id="rr-chart")
                docs_view = gr.HTML(
                    f'<div class="rr-empty">{ui("no_results")}</div>', elem_id="rr-docs"
                )
        with gr.Tab(ui("tab_list"), id="list"):
            gr.Markdown(ui("list_intro"))
            first_query, first_docs = next(iter(examples.lists.values()), (DEFAULT_LIST_QUERY, ()))
            with gr.Row():
                with gr.Column(scale=2):
                    if examples.lists:
                        list_example = gr.Dropdown(
                            list(examples.lists),
                            value=next(iter(examples.lists)),
                            label=ui("list_example"),
                            elem_id="rr-list-example",
                        )
                    list_query = gr.Textbox(
                        value=first_query, label=ui("query"), elem_id="rr-list-query"
                    )
                    list_docs = gr.Textbox(
                        value="\n".join(first_docs),
                        label=ui("candidates"),
                        lines=10,
                        max_lines=20,
                        elem_id="rr-list-docs",
                    )
                    list_instruction = gr.Textbox(
                        label=ui("instruction"), lines=1, elem_id="rr-list-instruction",
                        **instruction_kwargs,
                    )  # fmt: skip
                    list_anyway = gr.Checkbox(
                        value=False,
                        label=ui("rerank_anyway"),
                        visible=backend.languages is not None,
                        elem_id="rr-list-rerank-anyway",
                    )
                    list_go = gr.Button(ui("list_go"), variant="primary", elem_id="rr-list-go")
                with gr.Column(scale=3):
                    list_status = gr.Markdown(elem_id="rr-list-status")
                    list_out = _results_table(
                        list_columns(first),
                        ui("list_table"),
                        ["8%", "12%", "9%", "71%"],
                        "rr-list-table",
                    )

        with gr.Tab(ui("tab_metrics"), id="metrics"):
            gr.Markdown(ui("metrics_help"))
            metrics_text = gr.Code(
                value=metrics_snapshot(first), label=ui("metrics_now"), elem_id="rr-metrics"
            )

            def refresh_metrics(request: gr.Request) -> str:
                return metrics_snapshot(handlers.language(request))

            gr.Button(ui("refresh"), elem_id="rr-metrics-refresh").click(
                refresh_metrics, None, metrics_text
            )

        inputs = [corpus, query, top_k, top_n, instruction, pasted, upload, split, rerank_anyway]
        outputs = [status, timings, table, chart, docs_view, judged]
        go.click(handlers.search, inputs, outputs)
        for name, dataset in [*example_sets, *public_sets]:
            # Clicking an example picks its corpus too, then runs it.
            dataset.click(
                lambda sample, name=name: (name, sample[0]), dataset, [corpus, query]
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
        if lang is None:
            # Table headers are values, which gr.I18n does not translate: set them per visitor.

            def empty_tables(request: gr.Request) -> tuple[pd.DataFrame, pd.DataFrame]:
                lang = handlers.language(request)
                return pd.DataFrame(columns=table_columns(lang)), pd.DataFrame(
                    columns=list_columns(lang)
                )

            blocks.load(empty_tables, None, [table, list_out], queue=False)
        if public_sets:

            async def public_examples() -> list[Any]:
                return await _public_examples(public)

            blocks.load(
                public_examples,
                None,
                [dataset for _, dataset in public_sets],
                show_progress="hidden",
            )
    return blocks


async def _public_examples(public: Mapping[str, PublicSet]) -> list[Any]:
    """Each public set's example queries (its own), read at first page load, not at start."""
    updates: list[Any] = []
    for public_set in public.values():
        try:
            queries = await asyncio.to_thread(public_set.example_queries)
        except (OSError, ValueError) as exc:  # a missing data/ folder must not break the page
            logger.warning("public set %s not available: %s", public_set.name, exc)
            updates.append(gr.Dataset(visible=False))
            continue
        updates.append(gr.Dataset(samples=[[q] for q in queries], visible=True))
    return updates


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

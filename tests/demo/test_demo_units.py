# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""The demo below the browser: input parsing and limits, BM25 caching, views, and handlers.

Handlers that rerank talk to the real MiniLM server (``minilm_server``); the backend-down case
points a client at a closed port.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from support.servers import ServerHandle

from demo import backend as backend_mod
from demo.backend import MINILM_NAME, Backend, ModelChoice, describe_server, embedded_backend
from demo.corpora import PublicSet, load_bundled, load_examples_safe, load_public
from demo.handlers import OWN_DOCS, Handlers, user_documents
from demo.inputs import MAX_DOCUMENTS, MAX_UPLOAD_BYTES, DocumentsError, parse_file, parse_text
from demo.pipeline import IndexCache, Ranked, corpus_key
from demo.views import TABLE_COLUMNS, comparison_figure, highlight, results_table
from rerank_plugins import AsyncRerankClient
from rerank_plugins.eval.data import Collection, Document
from rerank_plugins.serve import free_port

AUTO = "Auto (blank lines if any, else lines)"
LINES = "One document per line"


# -- inputs -----------------------------------------------------------------------------------


def test_paste_without_blank_lines_is_one_document_per_line() -> None:
    assert parse_text("alpha\n  beta  \n\ngamma", "lines") == ["alpha", "beta", "gamma"]
    assert parse_text("alpha\nbeta\r\ngamma\n") == ["alpha", "beta", "gamma"]


def test_paste_with_blank_lines_splits_paragraphs_and_joins_wrapped_lines() -> None:
    text = "First paragraph\nwraps here.\n\n  \nSecond one.\n"
    assert parse_text(text) == ["First paragraph wraps here.", "Second one."]
    assert parse_text(text, "lines") == ["First paragraph", "wraps here.", "Second one."]


def test_paste_over_the_document_limit_says_the_limit() -> None:
    with pytest.raises(DocumentsError, match="5,000"):
        parse_text("\n".join(f"doc {i}" for i in range(MAX_DOCUMENTS + 1)))
    assert len(parse_text("\n".join(f"doc {i}" for i in range(MAX_DOCUMENTS)))) == MAX_DOCUMENTS


def test_paste_over_two_megabytes_is_refused() -> None:
    with pytest.raises(DocumentsError, match=r"2\.0 MB"):
        parse_text("x" * (MAX_UPLOAD_BYTES + 1))


def test_files_txt_md_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\nline\n\nnext para\n", encoding="utf-8")
    rows = [{"text": "plain"}, "a bare string", {"title": "T", "content": "with title"}, {}]
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows[:3]) + "\n\n", encoding="utf-8"
    )
    assert parse_file(tmp_path / "a.txt") == ["one", "two"]
    assert parse_file(tmp_path / "b.md") == ["# Title line", "next para"]
    assert parse_file(tmp_path / "c.jsonl") == ["plain", "a bare string", "T. with title"]


def test_file_errors_are_readable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n', encoding="utf-8")
    with pytest.raises(DocumentsError, match=r"bad\.jsonl, line 2: expected a string"):
        parse_file(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DocumentsError, match="line 1: not JSON"):
        parse_file(broken)
    pdf = tmp_path / "x.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(DocumentsError, match=r"unsupported file type \.pdf"):
        parse_file(pdf)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(DocumentsError, match="not UTF-8"):
        parse_file(latin)
    big = tmp_path / "big.txt"
    big.write_bytes(b"word " * (MAX_UPLOAD_BYTES // 5 + 1))
    with pytest.raises(DocumentsError, match=r"limited to 2\.0 MB"):
        parse_file(big)


def test_upload_plus_paste_share_the_document_limit(tmp_path: Path) -> None:
    upload = tmp_path / "many.txt"
    upload.write_text("\n".join(f"u{i}" for i in range(MAX_DOCUMENTS)), encoding="utf-8")
    docs, source = user_documents("p1\np2", None, AUTO)
    assert (docs, source) == (["p1", "p2"], "2 pasted")
    with pytest.raises(DocumentsError, match="together"):
        user_documents("p1", str(upload), LINES)


# -- BM25 layer and cache ---------------------------------------------------------------------


def test_corpus_key_depends_on_content_and_boundaries() -> None:
    assert corpus_key(["a", "b"]) == corpus_key(("a", "b"))
    assert corpus_key(["ab", "c"]) != corpus_key(["a", "bc"])
    assert corpus_key(["a"]) != corpus_key(["a", ""])


def test_index_is_built_once_per_corpus_content() -> None:
    cache = IndexCache(size=2)
    docs = ["the cat sat on the mat", "dogs chase cats", "a recipe for bread"]
    first, built_ms = cache.get(docs)
    again, cached_ms = cache.get(list(docs))  # equal content, another list object
    assert again is first and built_ms is not None and cached_ms is None
    assert cache.builds == 1
    cache.get(["other corpus"])
    cache.get(["third corpus"])  # evicts the least recently used: the first one
    _, rebuilt_ms = cache.get(docs)
    assert rebuilt_ms is not None and cache.builds == 4


def test_bundled_english_corpus_bm25() -> None:
    corpora = load_bundled()
    docs = corpora["demo_en"].documents
    assert len(docs) >= 400
    index, _ = IndexCache().get(docs)
    assert index.language == "en"
    hits = index.search("how do python decorators work", 10)
    assert "decorator" in hits[0].text.lower()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_bundled_chinese_corpus_bm25_finds_entanglement() -> None:
    docs = load_bundled()["demo_zh"].documents
    assert len(docs) >= 300
    index, _ = IndexCache().get(docs)
    assert index.language == "zh"
    hits = index.search("解释量子纠缠的基本原理", 5)
    assert "量子纠缠" in hits[0].text
    # jieba segments the query: a document sharing only 纠缠 still matches.
    assert any("纠缠" in h.text and "量子" not in h.text for h in index.search("纠缠", 50))


def test_examples_start_with_the_entanglement_list() -> None:
    examples = load_examples_safe()
    query, candidates = next(iter(examples.lists.values()))
    assert query == "解释量子纠缠的基本原理" and len(candidates) >= 4
    assert examples.queries["demo_en"] and examples.queries["demo_zh"]


# -- views ------------------------------------------------------------------------------------


def test_highlight_marks_stems_and_chinese_terms_and_escapes_html() -> None:
    html = highlight("Entangled <b>particles</b> & entanglement.", "particle entanglement", "en")
    assert "<mark>Entangled</mark>" in html and "<mark>entanglement</mark>" in html
    assert "&lt;b&gt;<mark>particles</mark>&lt;/b&gt; &amp;" in html
    zh = highlight("量子纠缠是一种关联;纠缠不清。", "解释量子纠缠", "zh")
    assert "<mark>量子纠缠</mark>" in zh and "<mark>纠缠</mark>不清" in zh


def _ranked() -> list[Ranked]:
    return [
        Ranked(1, 0.9, 3, 5.0, 10, "third by bm25"),
        Ranked(2, 0.5, 1, 9.0, 11, "first by bm25"),
        Ranked(3, 0.1, 2, 7.0, 12, "second by bm25"),
        Ranked(4, 0.0, 4, 1.0, 13, "unchanged"),
    ]


def test_results_table_columns_and_rank_change() -> None:
    table = results_table(_ranked())
    assert list(table.columns) == TABLE_COLUMNS
    assert table["Change"].tolist() == ["▲ 2", "▼ 1", "▼ 1", "="]
    assert table["BM25 rank"].tolist() == [3, 1, 2, 4]


def test_comparison_figure_has_rank_and_score_panels() -> None:
    from demo.pipeline import SearchOutcome

    ranked = tuple(_ranked())
    outcome = SearchOutcome("q", (), ranked, None, 1.0, None, 2.0, "en")
    fig = comparison_figure(outcome, top_n=3)
    slope, scatter = fig.axes
    assert len(slope.lines) == 3  # one line per shown document
    assert scatter.get_xlabel() == "BM25 score" and scatter.get_ylabel() == "rerank score"


# -- backend choice ---------------------------------------------------------------------------


def test_hub_probe_gives_up_quickly_on_a_closed_port() -> None:
    assert backend_mod.hub_reachable(f"http://127.0.0.1:{free_port()}", timeout=0.5) is False


def test_offline_auto_choice_is_minilm_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "hub_reachable", lambda: False)
    monkeypatch.setattr(backend_mod, "find_minilm", lambda python: "/models/minilm")
    choice = backend_mod.choose_model("auto", "python")
    assert choice.model == "/models/minilm" and choice.served_name == MINILM_NAME
    assert "not reachable" in choice.reason
    be = embedded_backend("http://127.0.0.1:1", choice, 42)
    assert be.english_only and not be.takes_instruction and "pid 42" in be.origin
    assert be.instruction_note.startswith("Disabled:")
    # The Chinese banner says the same in Chinese.
    assert be.reason_zh.startswith("离线回退：连不上 https://huggingface.co")
    assert be.origin_zh.endswith("（进程号 42）")


def test_online_with_gpu_picks_qwen3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "hub_reachable", lambda: True)
    monkeypatch.setattr(backend_mod, "has_gpu", lambda: True)
    choice = backend_mod.choose_model("auto", "python")
    assert choice.model == backend_mod.QWEN3_MODEL and "GPU" in choice.reason
    assert embedded_backend("http://x", choice, 1).takes_instruction


def test_online_without_gpu_on_few_cores_stays_on_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_mod, "hub_reachable", lambda: True)
    monkeypatch.setattr(backend_mod, "has_gpu", lambda: False)
    monkeypatch.setattr(backend_mod.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(backend_mod, "find_minilm", lambda python: "/m")
    choice = backend_mod.choose_model("auto", "python")
    assert choice.served_name == MINILM_NAME and "--model qwen3" in choice.reason
    assert backend_mod.choose_model("qwen3", "python").model == backend_mod.QWEN3_MODEL


def test_find_minilm_in_the_vllm_venv() -> None:
    python = backend_mod.vllm_python()
    if not Path(python).exists():
        pytest.fail(f"{python} missing: run tests/setup_vllm_env.sh")
    assert (Path(backend_mod.find_minilm(python)) / "config.json").exists()


# -- handlers against the real MiniLM server --------------------------------------------------


def _minilm_backend(server: ServerHandle) -> Backend:
    return describe_server(server.base_url)


async def test_describe_server_recognises_minilm(minilm_server: ServerHandle) -> None:
    be = _minilm_backend(minilm_server)
    assert be.model == minilm_server.model_name
    assert be.english_only and not be.takes_instruction


@pytest.fixture(scope="module")
def corpora() -> dict:
    return load_bundled()


@pytest.fixture(scope="module")
def cache() -> IndexCache:
    return IndexCache()


async def test_search_handler_reranks_bm25_candidates(
    minilm_server: ServerHandle, corpora: dict, cache: IndexCache
) -> None:
    async with AsyncRerankClient(base_url=minilm_server.base_url) as client:
        handlers = Handlers(client, _minilm_backend(minilm_server), corpora, cache)
        label = corpora["demo_en"].label
        status, timings, table, figure, docs_html, judged = await handlers.search(
            label, "how do python decorators work", 20, 5, "ignored", "", None, AUTO
        )
        assert judged == ""  # a bundled sample has no judgements
        assert isinstance(table, pd.DataFrame) and len(table) == 5, status
        assert table["Rank"].tolist() == [1, 2, 3, 4, 5]
        scores = table["Score"].tolist()
        assert scores == sorted(scores, reverse=True)
        assert set(table["BM25 rank"]) <= set(range(1, 21))
        assert "decorator" in table["Document"].iloc[0].lower()
        assert "BM25" in timings and "Rerank" in timings and "Tokens" in timings
        assert figure is not None and len(figure.axes) == 2
        assert docs_html.count('class="rr-card"') == 5 and "<mark>" in docs_html
        builds = cache.builds
        await handlers.search(label, "what causes inflation", 10, 3, "", "", None, AUTO)
        assert cache.builds == builds  # the corpus index is reused


async def test_search_handler_over_pasted_documents(minilm_server: ServerHandle) -> None:
    async with AsyncRerankClient(base_url=minilm_server.base_url) as client:
        handlers = Handlers(client, _minilm_backend(minilm_server), {})
        pasted = (
            "json.load reads a JSON file in Python.\nThe csv module reads CSV files in Python.\n"
            "Jackson parses JSON in Java.\nBake the bread for forty minutes."
        )
        _, _, table, *_ = await handlers.search(
            OWN_DOCS, "how do I read a JSON file in Python", 10, 10, "", pasted, None, AUTO
        )
        assert table["Document"].iloc[0].startswith("json.load")
        assert "Bake" not in " ".join(table["Document"])  # BM25 never offered it
        with pytest.warns(UserWarning, match="No documents yet"):
            status, *_ = await handlers.search(OWN_DOCS, "query", 10, 10, "", "", None, AUTO)
        assert "No documents yet" in status


async def test_rerank_list_handler_orders_candidates(minilm_server: ServerHandle) -> None:
    async with AsyncRerankClient(base_url=minilm_server.base_url) as client:
        handlers = Handlers(client, _minilm_backend(minilm_server), {})
        candidates = "Bake bread at 200 degrees.\njson.load reads a JSON file in Python.\n"
        status, table = await handlers.rerank_list("read a JSON file in Python", candidates, "")
        assert table["Input #"].tolist() == [2, 1], status
        assert "Tokens" in status


async def test_backend_down_gives_a_message_not_a_traceback(corpora: dict) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    be = Backend(url, "m", f"server at {url}", "test", False, True)
    async with AsyncRerankClient(base_url=url, max_retries=0, model="m") as client:
        handlers = Handlers(client, be, corpora)
        with pytest.warns(UserWarning, match="cannot connect"):
            status, _, table, figure, *_ = await handlers.search(
                corpora["demo_en"].label, "python decorators", 10, 5, "", "", None, AUTO
            )
        assert "The reranker failed" in status and url in status and "Traceback" not in status
        assert table.empty and figure is None
        with pytest.warns(UserWarning):
            status, table = await handlers.rerank_list("q", "a\nb", "")
        assert "cannot connect" in status and table.empty


def test_instruction_is_dropped_for_models_without_one() -> None:
    minilm = Backend("http://x", MINILM_NAME, "o", "r", False, True)
    qwen = embedded_backend(
        "http://x", ModelChoice("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-0.6B", "r"), 1
    )
    client = AsyncRerankClient(base_url="http://x")
    assert Handlers(client, minilm, {})._instruction("be nice") is None
    assert Handlers(client, qwen, {})._instruction("  be nice ") == "be nice"
    assert Handlers(client, qwen, {})._instruction("  ") is None


def test_module_level_demo_is_built_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    import demo.app as app

    monkeypatch.setenv("RERANK_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delitem(vars(app), "demo", raising=False)
    built = app.demo  # what `gradio demo/app.py` looks up
    assert isinstance(built, gr.Blocks) and app.demo is built
    with pytest.raises(AttributeError):
        _ = app.no_such_thing


# -- a model that cannot read the text does not rerank it ------------------------------------


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_backend_languages_come_from_the_model_table() -> None:
    minilm = Backend("http://x", MINILM_NAME, "o", "r", False, True)
    assert minilm.languages == frozenset({"en"}) and minilm.languages_label == "English only"
    assert minilm.reads("en") and not minilm.reads("zh") and minilm.is_minilm
    qwen = Backend("http://x", "Qwen/Qwen3-Reranker-0.6B", "o", "r", True, False)
    assert qwen.languages is None and qwen.reads("zh") and not qwen.is_minilm
    unknown = Backend("http://x", "my-reranker", "o", "r", False, False)
    assert unknown.reads("zh")  # unknown models are given the benefit of the doubt


async def test_chinese_corpus_keeps_bm25_order_without_calling_an_english_model(
    corpora: dict,
) -> None:
    # The server is down: the search must still answer, because nothing is sent to it.
    url = _dead_url()
    be = Backend(url, MINILM_NAME, f"server at {url}", "test", False, True)
    async with AsyncRerankClient(base_url=url, max_retries=0, model=MINILM_NAME) as client:
        handlers = Handlers(client, be, corpora)
        label = corpora["demo_zh"].label
        status, timings, table, figure, docs_html, _ = await handlers.search(
            label, "解释量子纠缠的基本原理", 20, 5, "", "", None, AUTO
        )
    assert "not reranked" in status and "English only" in status and "Chinese" in status
    assert "中文" in status  # the corpus it searched
    assert table["Rank"].tolist() == table["BM25 rank"].tolist() == [1, 2, 3, 4, 5]
    assert set(table["Change"]) == {"="} and set(table["Score"]) == {"—"}
    assert "skipped" in timings and figure is not None
    assert "not reranked" in docs_html


async def test_chinese_list_keeps_input_order_for_an_english_model() -> None:
    url = _dead_url()
    be = Backend(url, MINILM_NAME, f"server at {url}", "test", False, True)
    async with AsyncRerankClient(base_url=url, max_retries=0, model=MINILM_NAME) as client:
        handlers = Handlers(client, be, {})
        status, table = await handlers.rerank_list(
            "解释量子纠缠的基本原理", "红烧肉的做法\n量子纠缠是粒子之间的关联\n长城很长", ""
        )
        assert "Kept in input order" in status and "English only" in status
        assert table["Input #"].tolist() == [1, 2, 3] and set(table["Score"]) == {"—"}
        # English text still goes to the (here unreachable) server.
        with pytest.warns(UserWarning):
            status, table = await handlers.rerank_list("read json", "a json file\nbread", "")
        assert "cannot connect" in status


async def test_rerank_anyway_reranks_chinese_with_a_warning(
    minilm_server: ServerHandle, corpora: dict, cache: IndexCache
) -> None:
    async with AsyncRerankClient(base_url=minilm_server.base_url) as client:
        handlers = Handlers(client, _minilm_backend(minilm_server), corpora, cache)
        status, _, table, *_ = await handlers.search(
            corpora["demo_zh"].label, "解释量子纠缠的基本原理", 20, 5, "", "", None, AUTO, True
        )
        assert "Reranked anyway" in status and "not an improvement" in status
        assert all(isinstance(s, float) for s in table["Score"])
        status, table = await handlers.rerank_list(
            "解释量子纠缠的基本原理", "红烧肉的做法\n量子纠缠是粒子之间的关联", "", True
        )
        assert "Reranked anyway" in status and len(table) == 2


# -- the interface in Chinese ----------------------------------------------------------------


class _Request:
    """What the handlers read of a gr.Request: its headers."""

    def __init__(self, accept_language: str) -> None:
        self.headers = {"accept-language": accept_language}


ZH = _Request("zh-CN,zh;q=0.9,en;q=0.8")
EN = _Request("en-US,en;q=0.9")


def test_accept_language_picks_the_first_language_the_demo_speaks() -> None:
    from demo.i18n import accept_language, request_language

    assert accept_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert accept_language("zh-TW") == "zh"
    assert accept_language("fr-FR,fr;q=0.9,zh;q=0.8,en;q=0.7") == "zh"
    assert accept_language("en;q=0.5,zh;q=0.9") == "zh"  # quality, not position, decides
    assert accept_language("fr,de") == accept_language(None) == accept_language("") == "en"
    assert request_language(ZH, "en") == "en"  # --lang wins over the browser
    assert request_language(None) == "en"


def test_every_message_has_both_languages_with_the_same_placeholders() -> None:
    import string

    from demo.messages import MESSAGES

    def fields(template: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}

    cjk = re.compile("[\u4e00-\u9fff]")
    for key, (en, zh) in MESSAGES.items():
        assert en is not None and zh, key
        if key.startswith("err_"):
            continue  # the Chinese error says what to do by the exception's type, not its text
        assert fields(en) == fields(zh), key
        assert cjk.search(zh), f"{key} is not Chinese: {zh}"


def test_documents_errors_are_english_as_raised_and_chinese_when_shown(tmp_path: Path) -> None:
    pdf = tmp_path / "x.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(DocumentsError) as caught:
        parse_file(pdf)
    assert str(caught.value) == "x.pdf: unsupported file type .pdf; upload .txt, .md or .jsonl."
    assert (
        caught.value.message("zh")
        == "x.pdf：不支持的文件类型 .pdf；请上传 .txt、.md 或 .jsonl 文件。"
    )
    with pytest.raises(DocumentsError) as too_big:
        parse_text("x" * (MAX_UPLOAD_BYTES + 1), source="source_list")
    assert str(too_big.value).startswith("The candidate list is 2.0 MB")
    assert too_big.value.message("zh").startswith("候选列表 大小为 2.0 MB")


async def test_a_chinese_browser_gets_chinese_status_tables_and_cards(corpora: dict) -> None:
    url = _dead_url()  # the Chinese corpus is not sent to an English model: no server needed
    be = Backend(url, MINILM_NAME, f"server at {url}", "test", False, True)
    async with AsyncRerankClient(base_url=url, max_retries=0, model=MINILM_NAME) as client:
        handlers = Handlers(client, be, corpora)
        query = "解释量子纠缠的基本原理"
        args = ("demo_zh", query, 20, 5, "", "", None, "auto", False)
        status, timings, table, _, docs_html, _ = await handlers.search(*args, ZH)
        assert "未重排序" in status and "只读得懂英文" in status and "中文示例" in status
        assert "CJK 字符占" in status and "English only" not in status
        assert list(table.columns) == [
            "名次",
            "得分",
            "BM25 名次",
            "BM25 得分",
            "变化",
            "文档编号",
            "文档",
        ]
        assert "已跳过" in timings and "文档 " in docs_html and "量子纠缠" in docs_html
        # The same search from an English browser reads as before; the corpus text is the same.
        en_status, _, en_table, *_ = await handlers.search(*args, EN)
        assert "not reranked" in en_status and list(en_table.columns) == TABLE_COLUMNS
        assert en_table["Document"].tolist() == table["文档"].tolist()
        # --lang zh answers in Chinese whatever the browser asks.
        fixed = Handlers(client, be, corpora, lang="zh")
        assert "未重排序" in (await fixed.search(*args, EN))[0]
        assert (
            "请先输入查询" in (await fixed.search("demo_zh", " ", 20, 5, "", "", None, "auto"))[0]
        )


async def test_library_errors_stay_english_and_the_demo_says_them_in_chinese() -> None:
    url = _dead_url()
    be = Backend(url, MINILM_NAME, f"server at {url}", "test", False, True)
    async with AsyncRerankClient(base_url=url, max_retries=0, model=MINILM_NAME) as client:
        handlers = Handlers(client, be, {})
        with pytest.warns(UserWarning, match="无法连接到"):
            status, table = await handlers.rerank_list(
                "read json", "a json file\nbread", "", False, ZH
            )
        assert "重排序服务出错：无法连接到" in status and "rerank-serve" in status
        # The library's own words follow as the detail, unchanged.
        assert "cannot connect" in status and list(table.columns) == [
            "名次",
            "得分",
            "输入序号",
            "文档",
        ]
        with pytest.warns(UserWarning, match="cannot connect"):
            status, _ = await handlers.rerank_list("read json", "a json file\nbread", "", False, EN)
        assert status.startswith("⚠ **The reranker failed: cannot connect") and "无法" not in status
        assert "✓ 已准备好 2 篇文档（2 篇粘贴）" in handlers.check_documents(
            "a\nb", None, "lines", ZH
        )


def test_the_page_carries_both_languages_or_the_one_asked_for() -> None:
    import demo.app as app

    url = _dead_url()
    be = Backend(url, MINILM_NAME, f"server at {url}", "test", False, True)
    client = AsyncRerankClient(base_url=url)
    public = load_public()
    blocks = app.build_demo(client, be, public=public)
    translations = blocks.ui_text.i18n.translations  # what launch() hands the browser
    assert "检索并重排序" in translations["zh"].values()
    assert "Search & rerank" in translations["en"].values()
    banner_zh = next(v for v in translations["zh"].values() if v.startswith("**重排序模型"))
    assert "只读得懂英文" in banner_zh and "rerank-evaluate" in banner_zh
    assert not any(p.loaded for p in public.values())  # the public sets wait for their first use

    fixed = app.build_demo(client, be, public=public, lang="zh")
    values = {getattr(b, "elem_id", None): b for b in fixed.blocks.values()}
    assert values["rr-go"].value == "检索并重排序" and values["rr-query"].label == "查询"


# -- public labelled sets ---------------------------------------------------------------------


def _tiny_collection(name: str) -> Collection:
    texts = ("python lists sort", "python decorators wrap functions", "bread recipe")
    return Collection(
        name,
        tuple(Document(f"d{i}", text) for i, text in enumerate(texts)),
        {"q1": "python decorators", "q2": "unjudged query"},
        {"q1": {"d1": 2, "d0": 0}},
    )


def test_public_set_loads_once_and_maps_judgements_to_corpus_positions() -> None:
    calls: list[str] = []

    def loader(name: str) -> Collection:
        calls.append(name)
        return _tiny_collection(name)

    tiny = PublicSet("tiny", "Tiny", loader)
    assert not tiny.loaded and calls == []
    assert tiny.example_queries() == ["python decorators"]  # judged queries only
    assert tiny.grades("  python   decorators ") == {1: 2, 0: 0}
    assert tiny.grades("unjudged query") is None and tiny.grades("anything else") is None
    assert len(tiny.documents) == 3 and calls == ["tiny"]


def test_judged_markdown_reports_ndcg_of_both_lists() -> None:
    from demo.handlers import judged_markdown
    from demo.pipeline import SearchOutcome
    from rerank_plugins.retrieval import Hit

    hits = (Hit(0, 5.0, "a"), Hit(1, 4.0, "b"))
    ranked = (Ranked(1, 0.9, 2, 4.0, 1, "b"), Ranked(2, 0.1, 1, 5.0, 0, "a"))
    outcome = SearchOutcome("q", hits, ranked, None, 1.0, None, 1.0, "en")
    line = judged_markdown(outcome, ("d0", "d1", "d2"), {1: 2, 0: 0})
    # BM25 put the relevant d1 second: DCG 2/log2(3) over the ideal 2 -> 0.631.
    assert "BM25 0.631 → reranked 1.000 (+0.369): the reranker helped" in line
    assert "1 of 1 judged-relevant documents are among BM25's 2 candidates" in line
    assert "重排序有帮助" in judged_markdown(outcome, ("d0", "d1", "d2"), {1: 2}, "zh")


async def test_xquad_zh_query_shows_judgements_and_ndcg() -> None:
    url = _dead_url()  # Chinese text is not sent to MiniLM: BM25's order, judged all the same
    be = Backend(url, MINILM_NAME, f"server at {url}", "test", False, True)
    public = load_public(["xquad-zh"])
    xquad = public["xquad-zh"]
    query = xquad.example_queries(1)[0]
    async with AsyncRerankClient(base_url=url, max_retries=0, model=MINILM_NAME) as client:
        handlers = Handlers(client, be, {}, public=public)
        status, _, table, _, docs_html, judged = await handlers.search(
            "xquad-zh", query, 20, 10, "", "", None, "auto", False, EN
        )
        assert "not reranked" in status and "240" in status
        marked = [doc for doc in table["Document"] if doc.startswith("✓ ")]
        grades = xquad.grades(query)
        assert grades and len(marked) == sum(1 for i in table["Doc #"] if grades.get(i, 0) > 0)
        assert len(marked) >= 1 and "judged relevant" in docs_html
        assert re.search(r"BM25 (\d\.\d{3}) → reranked \1 \(\+0\.000\): not reranked", judged)
        status, *_, judged = await handlers.search(
            "xquad-zh", "完全不在集合里的问题", 20, 10, "", "", None, "auto", False, ZH
        )
        assert "这个查询没有相关性标注" in judged or "BM25 没有找到" in status


async def test_medquad_liveqa_is_indexed_once_and_reranked_with_ndcg(
    minilm_server: ServerHandle,
) -> None:
    from rerank_plugins.metrics import ndcg_at_k

    public = load_public(["medquad-liveqa"])
    medquad = public["medquad-liveqa"]
    cache = IndexCache()
    queries = medquad.example_queries(2)
    async with AsyncRerankClient(base_url=minilm_server.base_url) as client:
        handlers = Handlers(client, _minilm_backend(minilm_server), {}, cache, public=public)
        status, timings, table, _, _, judged = await handlers.search(
            "medquad-liveqa", queries[0], 30, 30, "", "", None, AUTO
        )
        assert "15,825 documents" in status and "index built now" in timings, status
        # The figures on the page are the package's metric over the lists the page shows.
        collection = medquad.collection()
        relevance = {
            collection.doc_ids[i]: g for i, g in (medquad.grades(queries[0]) or {}).items()
        }
        reranked = [collection.doc_ids[i] for i in table["Doc #"]]
        bm25 = [collection.doc_ids[i] for i in table.sort_values("BM25 rank")["Doc #"]]
        expected = (
            f"BM25 {ndcg_at_k(bm25, relevance, 10):.3f} → reranked "
            f"{ndcg_at_k(reranked, relevance, 10):.3f}"
        )
        assert expected in judged, judged
        builds = cache.builds
        _, timings, *_ = await handlers.search(
            "medquad-liveqa", queries[1], 30, 10, "", "", None, AUTO
        )
        assert cache.builds == builds == 1 and "cached index" in timings

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""The demo end to end in headless Chromium (Debian's package, driven by Playwright).

The app runs in this process (``launch(prevent_thread_lock=True)``) against the real MiniLM
server; one demo points at a closed port for the backend-down message; one test runs
``bash demo/run.sh`` as a newcomer would and checks it leaves no vLLM behind. Browsers ask
for English (``en-US``) or Chinese (``zh-CN``), as a visitor's settings would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio import Blocks
from playwright.sync_api import Browser, Page, sync_playwright
from support.servers import ServerHandle

from demo.app import build_demo, launch_options
from demo.backend import Backend, describe_server
from demo.messages import Lang
from rerank_plugins import AsyncRerankClient
from rerank_plugins.serve import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("DEMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # Chromium refuses to run as root with its sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 120_000  # a rerank on two busy CPU cores can take tens of seconds
ROW = "#rr-table [role=row].virtual-row"
SCREENSHOTS = ROOT / "demo"
LOCALES: dict[Lang, str] = {"en": "en-US", "zh": "zh-CN"}
# What a visitor reads on the page, in each language.
SEEN: dict[Lang, dict[str, str]] = {
    "en": {
        "query": "Query",
        "go": "Search & rerank",
        "corpus": "Corpus",
        "tabs": "Search a corpus|Rerank a list|Metrics",
        "headers": "Rank|Score|BM25 rank|BM25 score|Change|Doc #|Document",
        "banner": "Reads English only",
        "reranked": "Reranked BM25's top",
        "timings": "Rerank",
        "card": "score",
    },
    "zh": {
        "query": "查询",
        "go": "检索并重排序",
        "corpus": "语料库",
        "tabs": "检索语料库|对列表重排序|指标",
        "headers": "名次|得分|BM25 名次|BM25 得分|变化|文档编号|文档",
        "banner": "只读得懂英文",
        "reranked": "已对 BM25",
        "timings": "重排序",
        "card": "得分",
    },
}


def _launch(
    client: AsyncRerankClient, backend: Backend, lang: Lang | None = None
) -> tuple[Blocks, str]:
    port = free_port()
    blocks = build_demo(client, backend, lang=lang)
    blocks.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    return blocks, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def demo_url(minilm_server: ServerHandle) -> Iterator[str]:
    base_url = minilm_server.base_url
    client = AsyncRerankClient(base_url=base_url, timeout=300.0, metrics=True)
    blocks, url = _launch(client, describe_server(base_url))
    yield url
    blocks.close()


@pytest.fixture(scope="module")
def zh_fixed_url(minilm_server: ServerHandle) -> Iterator[str]:
    """The demo started with ``--lang zh``: Chinese whatever the browser asks for."""
    base_url = minilm_server.base_url
    client = AsyncRerankClient(base_url=base_url, timeout=300.0)
    blocks, url = _launch(client, describe_server(base_url), lang="zh")
    yield url
    blocks.close()


@pytest.fixture(scope="module")
def down_url() -> Iterator[str]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = AsyncRerankClient(base_url=dead, model="all-MiniLM-L6-v2", max_retries=0)
    blocks, url = _launch(client, describe_server(dead, "all-MiniLM-L6-v2", timeout=0.5))
    yield url
    blocks.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: apt-get update && apt-get install -y chromium",
            pytrace=False,
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _context_page(browser: Browser, lang: Lang) -> Iterator[Page]:
    # The locale sets both navigator.language (gr.I18n reads it) and Accept-Language (the
    # handlers read it), as a browser's language setting does.
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=LOCALES[lang])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _context_page(browser, "en")


@pytest.fixture
def zh_page(browser: Browser) -> Iterator[Page]:
    yield from _context_page(browser, "zh")


def _open(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#rr-query textarea")


def _search(page: Page, query: str, top_n: int | None = None) -> None:
    if top_n is not None:
        box = page.locator("#rr-topn input[type=number]")
        box.fill(str(top_n))
        box.press("Enter")
    page.locator("#rr-query textarea").fill(query)
    page.locator("#rr-go").click()


def _table(page: Page) -> list[list[str]]:
    rows = page.locator(ROW)
    return [
        [t.strip() for t in rows.nth(i).locator("[role=gridcell]").all_inner_texts()]
        for i in range(rows.count())
    ]


def _wait_for_results(page: Page) -> None:
    page.wait_for_selector("#rr-chart [data-testid=matplotlib] img")
    page.wait_for_selector(ROW)


def test_search_shows_ranked_table_chart_and_documents(page: Page, demo_url: str) -> None:
    _open(page, demo_url)
    # The MiniLM backend is announced, and it takes no instruction.
    banner = page.locator("#rr-banner").inner_text()
    assert "all-MiniLM-L6-v2" in banner and "English only" in banner
    # The page says why the Chinese corpus is not reranked, and that no better model runs here.
    assert "not reranked" in banner and "BM25's" in banner
    assert "no better reranker runs without the model hub" in banner
    assert page.locator("#rr-instruction textarea").is_disabled()
    anyway = page.locator("#rr-rerank-anyway input[type=checkbox]")
    assert anyway.is_visible() and not anyway.is_checked()

    _search(page, "how do python decorators work", top_n=5)
    _wait_for_results(page)
    rows = _table(page)
    assert len(rows) == 5
    ranks = [int(r[0]) for r in rows]
    scores = [float(r[1]) for r in rows]
    bm25_ranks = [int(r[2]) for r in rows]
    bm25_scores = [float(r[3]) for r in rows]
    assert ranks == [1, 2, 3, 4, 5]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.3
    assert all(1 <= b <= 50 for b in bm25_ranks) and all(s > 0 for s in bm25_scores)
    for rank, bm25_rank, change in zip(ranks, bm25_ranks, (r[4] for r in rows), strict=True):
        expected = "=" if rank == bm25_rank else ("▲ " if bm25_rank > rank else "▼ ")
        assert change.startswith(expected) and (
            change == "=" or int(change[2:]) == abs(bm25_rank - rank)
        )
    assert "decorator" in rows[0][6].lower()
    status = page.locator("#rr-status").inner_text()
    assert "Reranked BM25's top" in status and "not reranked" not in status
    assert any(change != "=" for change in (r[4] for r in rows))  # English: the model reorders
    chart = page.locator("#rr-chart [data-testid=matplotlib] img")
    assert chart.evaluate("img => img.naturalWidth") > 500
    assert page.locator("#rr-docs .rr-card").count() == 5
    assert page.locator("#rr-docs mark").count() > 0
    timings = page.locator("#rr-timings").inner_text()
    assert re.search(r"BM25 [\d.,]+ ms", timings) and re.search(r"Rerank [\d,]+ ms", timings)
    assert re.search(r"Tokens [\d,]+", timings)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_search.png"), full_page=True)


def _chinese_example_status(page: Page, demo_url: str, not_reranked: str) -> str:
    """Run the Chinese corpus's quantum example; once the status says ``not_reranked`` (in the
    page's language), return the status text."""
    _open(page, demo_url)
    page.locator("#rr-examples-demo_zh").get_by_text("解释量子纠缠的基本原理").click()
    _wait_for_results(page)
    status = page.locator("#rr-status")
    status.get_by_text(not_reranked).wait_for()
    return status.inner_text()


def test_chinese_corpus_shows_bm25_order_and_says_why(page: Page, demo_url: str) -> None:
    text = _chinese_example_status(page, demo_url, "not reranked")
    assert "中文" in text and "English only" in text and "Chinese" in text
    assert "CJK characters" in text and "Rerank anyway" in text
    rows = _table(page)
    assert len(rows) == 10 and any("量子纠缠" in r[6] for r in rows)
    # BM25's order as it is: rank = BM25 rank, nothing moved, no rerank score.
    assert [int(r[0]) for r in rows] == [int(r[2]) for r in rows] == list(range(1, 11))
    assert {r[4] for r in rows} == {"="} and {r[1] for r in rows} == {"—"}
    assert "skipped" in page.locator("#rr-timings").inner_text()
    assert page.locator("#rr-docs .rr-card").first.inner_text().count("not reranked") == 1
    page.screenshot(path=str(ARTIFACTS / "demo_search_zh.png"), full_page=True)

    # Asked for explicitly, the model's order comes with a warning that it is no improvement.
    page.locator("#rr-rerank-anyway input[type=checkbox]").check()
    page.locator("#rr-go").click()
    status = page.locator("#rr-status")
    status.get_by_text("Reranked anyway").wait_for()
    assert "not an improvement" in status.inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#rr-table [role=row].virtual-row')]"
        ".some(r => r.querySelectorAll('[role=gridcell]')[1].innerText.trim() !== '—')"
    )
    rows = _table(page)
    assert all(r[1] != "—" for r in rows)


def test_pasted_chinese_list_keeps_its_order(page: Page, demo_url: str) -> None:
    _open(page, demo_url)
    page.get_by_role("tab", name="Rerank a list").click()
    # The list tab opens with the seed example: a Chinese query and Chinese candidates.
    assert page.locator("#rr-list-query textarea").input_value() == "解释量子纠缠的基本原理"
    docs = page.locator("#rr-list-docs textarea").input_value().splitlines()
    assert len(docs) >= 3
    page.locator("#rr-list-go").click()
    status = page.locator("#rr-list-status")
    status.get_by_text("Kept in input order").wait_for()
    assert "English only" in status.inner_text() and "Chinese" in status.inner_text()
    rows = page.locator("#rr-list-table [role=row].virtual-row")
    rows.first.wait_for()
    cells = [rows.nth(i).locator("[role=gridcell]").all_inner_texts() for i in range(rows.count())]
    assert [int(c[2]) for c in cells] == list(range(1, len(docs) + 1))
    assert {c[1].strip() for c in cells} == {"—"}
    page.screenshot(path=str(ARTIFACTS / "demo_list_zh.png"), full_page=True)


def test_uploaded_file_is_searched(page: Page, demo_url: str, tmp_path: Path) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_text(
        "json.load reads a JSON file in Python into a dict.\n"
        "The csv module reads CSV files in Python.\n"
        "Jackson parses JSON in Java.\n"
        "Knead the dough for ten minutes.\n",
        encoding="utf-8",
    )
    _open(page, demo_url)
    page.get_by_label("Your documents (paste or upload)").check()
    page.locator("#rr-upload input[type=file]").set_input_files(str(upload))
    status = page.locator("#rr-docs-status")
    status.get_by_text("4 documents ready (4 from notes.txt)").wait_for()
    _search(page, "how do I read a JSON file in Python")
    _wait_for_results(page)
    rows = _table(page)
    assert rows[0][6].startswith("json.load")
    assert all("dough" not in r[6] for r in rows)  # BM25 did not offer it


def test_too_large_upload_and_too_many_documents_get_messages(
    page: Page, demo_url: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"lorem ipsum " * 200_000)  # 2.4 MB
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"document number {i}" for i in range(6000)), encoding="utf-8")
    _open(page, demo_url)
    page.get_by_label("Your documents (paste or upload)").check()
    files = page.locator("#rr-upload input[type=file]")
    files.set_input_files(str(big))
    status = page.locator("#rr-docs-status")
    status.get_by_text("uploads are limited to 2.0 MB").wait_for()
    assert "big.txt is 2.3 MB" in status.inner_text()
    # Searching anyway gives the same message instead of a crash.
    _search(page, "lorem")
    page.locator("#rr-status").get_by_text("limited to 2.0 MB").wait_for()
    page.locator("#rr-upload button[aria-label='Clear']").click()
    files.set_input_files(str(many))
    status.get_by_text("the demo takes at most 5,000").wait_for()
    assert "6,000 documents" in status.inner_text()


@pytest.mark.parametrize(
    ("lang", "failed", "says"),
    [("en", "The reranker failed", "cannot connect"), ("zh", "重排序服务出错", "无法连接到")],
)
def test_backend_down_shows_a_readable_message(
    browser: Browser, down_url: str, lang: Lang, failed: str, says: str
) -> None:
    page = next(_context_page(browser, lang))
    _open(page, down_url)
    _search(page, "how do python decorators work")
    status = page.locator("#rr-status")
    status.get_by_text(failed).wait_for()
    text = status.inner_text()
    assert says in text and "rerank-serve" in text
    assert "Traceback" not in page.content()
    assert page.locator(ROW).count() == 0
    page.context.close()


def test_metrics_tab_shows_where_the_metrics_are(page: Page, demo_url: str) -> None:
    _open(page, demo_url)
    _search(page, "how do python decorators work")
    _wait_for_results(page)
    page.get_by_role("tab", name="Metrics").click()
    page.locator("#rr-metrics-refresh").click()
    code = page.locator("#rr-metrics")
    code.get_by_text("rerank_call_duration_seconds_count").first.wait_for()
    text = code.inner_text()
    assert 'route="/v2/rerank"' in text and "rerank_requests_total" in text
    assert "decorators" not in text  # labels never carry a query
    assert "start_http_server" in page.locator("#rr-metrics").locator("xpath=..").inner_text() or (
        "start_http_server" in page.content()
    )


def test_rerank_a_pasted_list_tab(page: Page, demo_url: str) -> None:
    _open(page, demo_url)
    page.get_by_role("tab", name="Rerank a list").click()
    query = page.locator("#rr-list-query textarea")
    assert query.input_value() == "解释量子纠缠的基本原理"  # prefilled with the seed example
    query.fill("how do I read a JSON file in Python")
    page.locator("#rr-list-docs textarea").fill(
        "Bake bread at 200 degrees.\njson.load reads a JSON file in Python.\nJava parses JSON."
    )
    page.locator("#rr-list-go").click()
    page.locator("#rr-list-status").get_by_text("Ranked 3 candidates").wait_for()
    rows = page.locator("#rr-list-table [role=row].virtual-row")
    cells = [rows.nth(i).locator("[role=gridcell]").all_inner_texts() for i in range(3)]
    assert int(cells[0][2]) == 2  # the json.load candidate (input #2) wins
    scores = [float(c[1]) for c in cells]
    assert scores == sorted(scores, reverse=True)
    page.screenshot(path=str(ARTIFACTS / "demo_list.png"), full_page=True)


# -- both languages ---------------------------------------------------------------------------


def _labels(page: Page) -> dict[str, str]:
    """The labels a visitor reads, as the browser renders them."""
    return {
        "query": page.locator("#rr-query").inner_text().strip(),
        "go": page.locator("#rr-go").inner_text().strip(),
        "corpus": page.locator("#rr-corpus").inner_text().strip().splitlines()[0],
        "tabs": "|".join(t.strip() for t in page.get_by_role("tab").all_inner_texts()),
        "banner": page.locator("#rr-banner").inner_text(),
    }


def _headers(page: Page) -> str:
    cells = page.locator("#rr-table [role=columnheader]").all_inner_texts()
    return "|".join(c.strip() for c in cells if c.strip())


def test_the_same_query_in_english_and_chinese(browser: Browser, demo_url: str) -> None:
    seen: dict[str, list[list[str]]] = {}
    for lang in ("en", "zh"):
        page = next(_context_page(browser, lang))
        _open(page, demo_url)
        labels = _labels(page)
        want = SEEN[lang]
        assert {k: labels[k] for k in ("query", "go", "corpus", "tabs")} == {
            k: want[k] for k in ("query", "go", "corpus", "tabs")
        }
        assert want["banner"] in labels["banner"] and "all-MiniLM-L6-v2" in labels["banner"]
        other = SEEN["zh" if lang == "en" else "en"]
        assert other["go"] not in page.locator("#rr-go").inner_text()
        _search(page, "how do python decorators work", top_n=5)
        _wait_for_results(page)
        assert _headers(page) == want["headers"]
        status = page.locator("#rr-status").inner_text()
        assert want["reranked"] in status and other["reranked"] not in status
        assert re.search(rf"{want['timings']} [\d,]+ ms", page.locator("#rr-timings").inner_text())
        assert want["card"] in page.locator("#rr-docs .rr-card").first.inner_text()
        seen[lang] = _table(page)
        if lang == "en":
            page.screenshot(path=str(ARTIFACTS / "demo_search_en.png"), full_page=True)
        page.context.close()
    # Corpus text and model output are the same in both: only the words around them change.
    assert [(r[0], r[5], r[6]) for r in seen["en"]] == [(r[0], r[5], r[6]) for r in seen["zh"]]
    assert "decorator" in seen["zh"][0][6].lower()


def test_chinese_interface_explains_the_chinese_corpus_in_chinese(
    zh_page: Page, demo_url: str
) -> None:
    text = _chinese_example_status(zh_page, demo_url, "未重排序")
    assert "只读得懂英文" in text and "CJK 字符占" in text and "中文示例" in text
    assert "仍然重排序" in text and "Showing BM25's order" not in text
    assert "已跳过" in zh_page.locator("#rr-timings").inner_text()
    assert "未重排序" in zh_page.locator("#rr-docs .rr-card").first.inner_text()
    rows = _table(zh_page)
    assert [int(r[0]) for r in rows] == [int(r[2]) for r in rows] == list(range(1, 11))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    zh_page.screenshot(path=str(ARTIFACTS / "demo_search_zh_ui.png"), full_page=True)


def test_lang_zh_is_chinese_for_an_english_browser(page: Page, zh_fixed_url: str) -> None:
    _open(page, zh_fixed_url)
    assert _labels(page)["go"] == SEEN["zh"]["go"] and _labels(page)["query"] == "查询"
    _search(page, "how do python decorators work", top_n=3)
    _wait_for_results(page)
    assert "已对 BM25" in page.locator("#rr-status").inner_text()
    assert _headers(page) == SEEN["zh"]["headers"]


# -- public labelled sets ---------------------------------------------------------------------


def _judged_figures(page: Page, pattern: str) -> tuple[float, float, float]:
    judged = page.locator("#rr-judged")
    judged.get_by_text("nDCG@10").wait_for()
    match = re.search(pattern, judged.inner_text())
    assert match, judged.inner_text()
    bm25, reranked, delta = (float(x) for x in match.groups())
    assert 0.0 <= bm25 <= 1.0 and 0.0 <= reranked <= 1.0
    assert abs((reranked - bm25) - delta) < 0.0015
    return bm25, reranked, delta


def _judged_rows(page: Page) -> list[list[str]]:
    return [r for r in _table(page) if r[6].startswith("✓ ")]


def test_medquad_liveqa_shows_judgements_and_ndcg(page: Page, demo_url: str) -> None:
    _open(page, demo_url)
    examples = page.locator("#rr-examples-medquad-liveqa")
    query = "What is the relationship between Noonan syndrome and polycystic renal disease?"
    examples.get_by_text("What is the relationship between Noonan").click()  # the set's own
    _wait_for_results(page)  # the first search reads the set and indexes 15,825 documents
    assert page.locator("#rr-query textarea").input_value() == query
    status = page.locator("#rr-status").inner_text()
    assert "15,825 documents" in status and "MedQuAD" in status
    _, _, delta = _judged_figures(
        page, r"BM25 (\d\.\d{3}) → reranked (\d\.\d{3}) \(([+-]\d\.\d{3})\)"
    )
    judged = page.locator("#rr-judged").inner_text()
    verdict = "helped" if delta > 0 else "worse" if delta < 0 else "no change"
    assert verdict in judged
    marked = _judged_rows(page)
    assert marked, "no judged-relevant document among the shown ten"
    assert page.locator("#rr-docs .rr-rel").count() == len(marked)
    page.screenshot(path=str(ARTIFACTS / "demo_medquad.png"), full_page=True)
    # A query the set never judged says so instead of inventing a figure.
    _search(page, "how do vaccines train immunity")
    page.locator("#rr-judged").get_by_text("No judgements for this query").wait_for()
    assert "cached index" in page.locator("#rr-timings").inner_text()  # indexed once


def test_xquad_zh_judgements_in_the_chinese_interface(zh_page: Page, demo_url: str) -> None:
    _open(zh_page, demo_url)
    zh_page.locator("#rr-examples-xquad-zh").get_by_text("黑豹队的防守丢了多少分？").click()
    _wait_for_results(zh_page)
    bm25, reranked, delta = _judged_figures(
        zh_page, r"BM25 (\d\.\d{3}) → 重排序后 (\d\.\d{3})（([+-]\d\.\d{3})）"
    )
    # MiniLM cannot read Chinese: not reranked, so both lists are BM25's.
    assert bm25 == reranked and delta == 0.0
    assert "未重排序，两个列表都是 BM25 的顺序" in zh_page.locator("#rr-judged").inner_text()
    assert len(_judged_rows(zh_page)) == 1  # XQuAD judges one passage per question
    assert "标注为相关" in zh_page.locator("#rr-docs .rr-rel").first.inner_text()


def test_screenshots_for_the_readme(browser: Browser, demo_url: str) -> None:
    """demo/screenshot.png and demo/screenshot_zh.png, from the demo as it is now."""
    for lang, corpus, query, name in (
        ("en", "demo_en", "how do python decorators work", "screenshot.png"),
        ("zh", "demo_zh", "解释量子纠缠的基本原理", "screenshot_zh.png"),
    ):
        page = next(_context_page(browser, lang))
        _open(page, demo_url)
        # The example picks its corpus too: the Chinese query searches the Chinese sample.
        page.locator(f"#rr-examples-{corpus}").get_by_text(query, exact=True).click()
        _wait_for_results(page)
        page.locator("#rr-docs .rr-card").first.wait_for()
        target = ARTIFACTS / name
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 50_000
        if os.environ.get("DEMO_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(target, SCREENSHOTS / name)
        page.context.close()


def _wait_until_answers(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo/run.sh exited with {proc.returncode} before answering")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def test_run_sh_starts_the_demo_and_sigterm_stops_vllm(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RERANK_BASE_URL", "RERANK_MODEL")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "demo" / "run.sh"), "--port", str(port)],
            cwd=tmp_path,  # a newcomer may run it from anywhere
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_until_answers(f"http://127.0.0.1:{port}/", proc, timeout=600)
        text = log_path.read_text(errors="replace")
        match = re.search(r"vLLM server pid (\d+)", text)
        assert match, text
        vllm_pid = int(match.group(1))
        os.kill(vllm_pid, 0)  # running while the demo runs
        assert "reranker: model all-MiniLM-L6-v2" in text and "not reachable" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:  # only on failure: do not leave the demo running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text(errors="replace")
    assert "vLLM stopped" in text, text
    with pytest.raises(ProcessLookupError):
        os.kill(vllm_pid, 0)
    assert _live_group_members(vllm_pid) == []  # nor any helper process vLLM started


def _live_group_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` that still run. Zombies do not count: they are dead, and a
    container whose PID 1 does not reap orphans keeps them listed."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command: state ppid pgrp ...
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            alive.append(f"{stat.parent.name} {text[:80]}")
    return alive


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

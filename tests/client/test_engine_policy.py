"""The engine's pure policy, without I/O: retry waits, the truncation budget, cache keys,
the discovery decision, the wire readers. Clock and jitter are passed in, so every case is
exact."""

from __future__ import annotations

import pytest

from rerank_plugins import RerankConfig, RerankConfigError, RerankInputError, ServerInfo
from rerank_plugins._engine import cached, discovery, http, truncation, wire
from rerank_plugins.multimodal import ImageDocument
from rerank_plugins.prompts import format_document, format_query

BASE = "http://127.0.0.1:1"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
CONFIG = RerankConfig(base_url=BASE, retry_backoff=0.5, retry_backoff_max=8.0, max_retries=3)


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_busy_and_gateway_statuses_are_retried(status: int) -> None:
    assert status in http.RETRY_STATUSES


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 500, 501])
def test_other_statuses_fail_at_once(status: int) -> None:
    assert status not in http.RETRY_STATUSES


def test_backoff_doubles_up_to_its_cap_and_jitter_picks_in_the_upper_half() -> None:
    lowest = [http.retry_delay(CONFIG, n, None, jitter=0.0, now=NOW) for n in range(1, 7)]
    highest = [http.retry_delay(CONFIG, n, None, jitter=1.0, now=NOW) for n in range(1, 7)]
    assert lowest == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert highest == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_retry_after_seconds_and_dates_win_over_backoff_capped() -> None:
    assert http.retry_delay(CONFIG, 1, "2", jitter=0.0, now=NOW) == 2.0
    in_ten = "Tue, 14 Nov 2023 22:13:30 GMT"
    assert http.retry_delay(CONFIG, 1, in_ten, jitter=0.0, now=NOW) == 10.0
    assert http.retry_delay(CONFIG, 1, "Tue, 14 Nov 2023 22:13:00 GMT", jitter=0, now=NOW) == 0
    assert http.retry_delay(CONFIG, 1, "3600", jitter=0.0, now=NOW) == 32.0  # 4 x backoff_max


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf", "1e309", "Wed, 99 Foo 2015"])
def test_unreadable_retry_after_falls_back_to_backoff(value: str) -> None:
    assert http.parse_retry_after(value, NOW) is None
    assert http.retry_delay(CONFIG, 1, value, jitter=0.5, now=NOW) == 0.375


def test_a_retry_after_in_the_past_means_now() -> None:
    assert http.parse_retry_after("-5", NOW) == 0.0


def test_no_retry_past_max_retries_or_past_the_deadline() -> None:
    def wait(attempt: int, left: float | None, after: str | None = None) -> float | None:
        return http.next_retry_delay(CONFIG, attempt, after, left, jitter=1.0, now=NOW)

    assert wait(3, None) == 2.0
    assert wait(4, None) is None  # max_retries=3
    assert wait(1, 0.6) == 0.5
    assert wait(1, 0.5) is None  # the wait would use the rest of the deadline: fail now
    assert wait(1, 10.0, after="20") is None


def test_status_errors_carry_the_servers_own_message() -> None:
    error = http.status_error("POST", BASE + "/rerank", 400, '{"error": {"message": "bad"}}')
    assert (error.status_code, error.server_message) == (400, "bad")
    assert str(error) == f"POST {BASE}/rerank returned 400: bad"
    assert http.parse_error_message("") == "(empty body)"
    assert http.parse_error_message('{"detail": "Not Found"}') == "Not Found"


# --- truncation budget -----------------------------------------------------------------------


def test_window_leaves_the_measured_additions_and_a_margin() -> None:
    window = truncation.window_for(512, 3, "raw", "query", None)
    assert window.tokens == 512 - 3 - truncation.TRUNCATION_MARGIN
    assert window.side == "query"
    assert window.byte_bound == window.tokens - len(b"query")


def test_window_without_a_measurement_assumes_the_template_or_special_tokens() -> None:
    server = truncation.window_for(4096, None, "server", "q", "be brief")
    template = len((format_query("") + format_document("")).encode())
    assert server.added == template and server.side == "qbe brief"
    raw = truncation.window_for(4096, None, "raw", "q", None)
    assert raw.added == truncation.UNKNOWN_ADDED_TOKENS


def test_client_mode_counts_the_prompt_around_query_and_document() -> None:
    window = truncation.window_for(8192, 2, "client", "q", "find code")
    assert window.side == format_query("q", "find code") + format_document("")
    assert window.byte_bound == window.tokens - len(window.side.encode())


def test_only_text_longer_in_bytes_than_the_bound_is_tokenized() -> None:
    image = ImageDocument(("https://example.com/x.png",), "x" * 100)
    docs = ["short", "é" * 6, "x" * 11, image]
    assert truncation.long_documents(docs, 10) == [1, 2]  # "é" is two bytes


def test_budget_is_what_the_query_side_leaves_and_none_left_is_refused() -> None:
    window = truncation.window_for(100, 4, "raw", "q", None)
    assert truncation.document_budget(window, 10, 100) == window.tokens - 10
    with pytest.raises(RerankInputError, match="leaving no room"):
        truncation.document_budget(window, window.tokens, 100)


def test_prepare_call_applies_the_prompt_mode() -> None:
    client = truncation.prepare_call("client", "q", ["d"], "find", True)
    assert client.query == format_query("q", "find") and client.documents == (format_document("d"),)
    server = truncation.prepare_call("server", "q", ["d"], "find", True)
    assert (server.query, server.instruction) == ("q", "find")
    with pytest.raises(RerankInputError, match="ignores the 'instruction'"):
        truncation.prepare_call("server", "q", ["d"], "find", False)
    with pytest.raises(RerankInputError, match="prompt_mode is 'raw'"):
        truncation.prepare_call("raw", "q", ["d"], "find", True)


# --- cache keys ------------------------------------------------------------------------------

INFO = ServerInfo(
    version=(0, 32, 0),
    model="m",
    model_root="/models/m",
    max_model_len=512,
    formats_prompt=False,
    added_tokens=3,
    prompt_mode="raw",
)


def test_pair_keys_are_stable_and_one_per_document() -> None:
    keys = cached.pair_keys(CONFIG, INFO, "q", None, ["a", "b", "a"])
    assert keys == cached.pair_keys(CONFIG, INFO, "q", None, ["a", "b", "a"])
    assert keys[0] == keys[2] != keys[1]
    assert all(len(k) == 64 for k in keys)


@pytest.mark.parametrize(
    "change",
    [
        {"query": "other"},
        {"instruction": "find"},
        {"config": CONFIG.replace(base_url="http://127.0.0.1:2")},
        {"config": CONFIG.replace(truncate=False)},
        {"info": ServerInfo((0, 31), "m", "/models/m", 512, False, 3, "raw")},
        {"info": ServerInfo((0, 32, 0), "m", "/models/m", 256, False, 3, "raw")},
        {"info": ServerInfo((0, 32, 0), "m", "/models/m", 512, True, 60, "server")},
    ],
)
def test_a_key_changes_with_everything_a_score_depends_on(change: dict[str, object]) -> None:
    args: dict[str, object] = {"config": CONFIG, "info": INFO, "query": "q", "instruction": None}
    base = cached.pair_keys(docs=["a"], **args)  # type: ignore[arg-type]
    args.update(change)
    assert cached.pair_keys(docs=["a"], **args) != base  # type: ignore[arg-type]


def test_an_image_documents_identity_is_its_content_parts() -> None:
    image = ImageDocument(("https://example.com/x.png",), "caption")
    same = ImageDocument(("https://example.com/x.png",), "caption")
    other = ImageDocument(("https://example.com/y.png",), "caption")
    assert cached.document_identity(image) == cached.document_identity(same)
    assert cached.document_identity(image) != cached.document_identity(other)
    assert cached.document_identity("text") == "text"


# --- the discovery decision ------------------------------------------------------------------


def test_probe_counts_become_a_detection() -> None:
    plain = discovery.read_probe(5, "/v2/rerank")
    assert (plain.formats_prompt, plain.added_tokens) == (False, 3)
    templated = discovery.read_probe(62, "/v2/rerank")
    assert (templated.formats_prompt, templated.added_tokens) == (True, 60)
    assert discovery.read_probe(None, "/v2/rerank").formats_prompt is None


def test_auto_follows_the_server_then_the_model_name() -> None:
    def auto(tokens: int | None, qwen3: bool) -> str:
        return discovery.resolve_mode("auto", discovery.read_probe(tokens, "/r"), qwen3, BASE)[0]

    assert auto(62, False) == "server"
    assert (auto(5, True), auto(5, False)) == ("client", "raw")
    assert (auto(None, True), auto(None, False)) == ("client", "raw")


def test_an_explicit_mode_that_contradicts_the_server_is_refused() -> None:
    with pytest.raises(RerankConfigError, match="wrap the prompt a second time"):
        discovery.resolve_mode("client", discovery.read_probe(62, "/r"), True, BASE)
    with pytest.raises(RerankConfigError, match="prompt_mode='server' contradicts"):
        discovery.resolve_mode("server", discovery.read_probe(5, "/r"), False, BASE)


# --- wire ------------------------------------------------------------------------------------


def test_models_reader_picks_the_wanted_entry_else_the_first() -> None:
    body = b'{"data": [{"id": "a", "max_model_len": 512}, {"id": "b", "root": "/w/b"}]}'
    assert wire.parse_models(BASE, body, None) == wire.ModelEntry("a", None, 512)
    assert wire.parse_models(BASE, body, "b") == wire.ModelEntry("b", "/w/b", None)
    assert wire.parse_models(BASE, body, "c") is None


def test_version_reader_finds_the_numbers_in_a_build_string() -> None:
    assert wire.parse_version(BASE, b'{"version": "0.32.0+cpu"}') == (0, 32, 0)
    assert wire.parse_version(BASE, b'{"version": "dev"}') is None

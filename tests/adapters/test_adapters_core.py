"""Unit tests of the framework-free adapter policy in rerank_plugins._adapters."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from rerank_plugins import (
    AsyncRerankClient,
    RerankConfigError,
    RerankConnectionError,
    RerankInputError,
    RerankItem,
    RerankResponseError,
    RerankResult,
    RerankStatusError,
    Usage,
)
from rerank_plugins._adapters import (
    Placement,
    RerankOptions,
    arerank,
    check_ranking,
    client_option_names,
    client_setting_names,
    document_text,
    fall_back,
    rerank,
    rerank_metadata,
    select,
)
from rerank_plugins.serve import free_port


def _result(*scores: float) -> RerankResult:
    """A ranking whose item i has index 10 + i (so index and rank never coincide)."""
    items = tuple(RerankItem(10 + i, s, f"doc{i}") for i, s in enumerate(scores))
    return RerankResult(items, "m", Usage(), "rid")


def closed_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


def test_select_keeps_everything_by_default() -> None:
    placements = select(_result(0.9, 0.5, 0.1), RerankOptions())
    assert placements == [Placement(10, 1, 0.9), Placement(11, 2, 0.5), Placement(12, 3, 0.1)]


def test_select_cuts_to_top_n() -> None:
    assert [p.index for p in select(_result(0.9, 0.5, 0.1), RerankOptions(top_n=2))] == [10, 11]


def test_select_threshold_drops_low_scores() -> None:
    placements = select(_result(0.9, 0.5, 0.1), RerankOptions(score_threshold=0.4))
    assert [p.score for p in placements] == [0.9, 0.5]


def test_select_threshold_keeps_min_keep_best() -> None:
    options = RerankOptions(score_threshold=0.95, min_keep=2)
    assert [p.index for p in select(_result(0.9, 0.5, 0.1), options)] == [10, 11]
    options = RerankOptions(score_threshold=0.95, min_keep=0)
    assert select(_result(0.9, 0.5, 0.1), options) == []


def test_select_min_keep_never_exceeds_top_n() -> None:
    options = RerankOptions(top_n=1, score_threshold=0.95, min_keep=3)
    assert [p.index for p in select(_result(0.9, 0.5, 0.1), options)] == [10]


@pytest.mark.parametrize("bad", [{"top_n": 0}, {"top_n": True}, {"min_keep": -1}])
def test_options_reject_bad_values(bad: dict[str, int]) -> None:
    with pytest.raises(RerankConfigError):
        RerankOptions(**bad)  # type: ignore[arg-type]


def test_fall_back_raises_by_default() -> None:
    error = RerankConnectionError("down", url="http://x")
    with pytest.raises(RerankConnectionError):
        fall_back(3, RerankOptions(), error)


def test_fall_back_fails_open_in_input_order(caplog: pytest.LogCaptureFixture) -> None:
    error = RerankStatusError("503", url="http://x", status_code=503, server_message="busy")
    with caplog.at_level(logging.WARNING, logger="rerank_plugins"):
        placements = fall_back(3, RerankOptions(top_n=2, fail_open=True), error)
    assert placements == [Placement(0, 1, None), Placement(1, 2, None)]
    assert "failing open" in caplog.text and "503" in caplog.text


def test_fall_back_never_hides_input_errors() -> None:
    with pytest.raises(RerankInputError):
        fall_back(3, RerankOptions(fail_open=True), RerankInputError("query is empty"))


def _ranking(*indices: int) -> RerankResult:
    items = tuple(RerankItem(i, 1.0 - n / 10, f"doc{i}") for n, i in enumerate(indices))
    return RerankResult(items, "m", Usage(), "rid")


def test_check_ranking_accepts_what_was_asked() -> None:
    check_ranking(_ranking(2, 0, 1), 3, None)
    check_ranking(_ranking(2, 0), 3, 2)
    check_ranking(_ranking(1, 0), 2, 5)  # top_n beyond the input
    check_ranking(_ranking(), 0, None)


@pytest.mark.parametrize(
    ("indices", "count", "top_n", "message"),
    [
        ((2, 0), 3, None, "covers 2 of the 3"),
        ((2,), 3, 2, "covers 1 of the 2"),
        ((0, 0, 1), 3, None, "repeated or out-of-range"),
        ((0, 3, 1), 3, None, "repeated or out-of-range"),
        ((0, -1, 1), 3, None, "repeated or out-of-range"),
    ],
)
def test_check_ranking_rejects_lost_inputs(
    indices: tuple[int, ...], count: int, top_n: int | None, message: str
) -> None:
    with pytest.raises(RerankResponseError, match=message):
        check_ranking(_ranking(*indices), count, top_n)


class _ShortClient:
    """Stands in for both clients: ranks all but the last document."""

    def rerank(self, query: str, texts: list[str], **kwargs: object) -> RerankResult:
        return _ranking(*range(len(texts) - 1))


class _ShortAsyncClient:
    async def rerank(self, query: str, texts: list[str], **kwargs: object) -> RerankResult:
        return _ranking(*range(len(texts) - 1))


async def test_short_ranking_raises_or_fails_open_never_drops() -> None:
    texts = ["a", "b", "c"]
    short, ashort = _ShortClient(), _ShortAsyncClient()
    with pytest.raises(RerankResponseError):
        rerank(short, "q", texts, RerankOptions())  # type: ignore[arg-type]
    with pytest.raises(RerankResponseError):
        await arerank(ashort, "q", texts, RerankOptions())  # type: ignore[arg-type]
    options = RerankOptions(fail_open=True)
    expected = [Placement(0, 1, None), Placement(1, 2, None), Placement(2, 3, None)]
    assert rerank(short, "q", texts, options) == expected  # type: ignore[arg-type]
    assert await arerank(ashort, "q", texts, options) == expected  # type: ignore[arg-type]


def test_setting_names_follow_client_options() -> None:
    from rerank_plugins.client import ClientOptions

    keys = ClientOptions.__required_keys__ | ClientOptions.__optional_keys__
    assert set(client_option_names()) == keys
    assert len(client_option_names()) == len(keys)
    assert client_setting_names()[:3] == ("base_url", "model", "api_key")


def test_document_text_layouts() -> None:
    metadata = {"title": "JSON", "source": "docs", "n": 3}
    assert document_text("body", metadata) == "body"
    assert document_text("body", metadata, ("title", "n", "absent")) == "title: JSON\nn: 3\n\nbody"


def test_rerank_metadata_makes_a_new_dict() -> None:
    original = {"a": [1]}
    new = rerank_metadata(original, Placement(4, 1, 0.7), relevance_score=0.7, skipped=None)
    new["a"].append(2)
    assert original == {"a": [1]}
    assert new == {
        "a": [1, 2],
        "rerank_rank": 1,
        "original_index": 4,
        "reranked": True,
        "relevance_score": 0.7,
    }
    assert rerank_metadata(original, Placement(0, 1, None))["reranked"] is False


def test_empty_input_sends_no_request() -> None:
    # Nothing listens at this URL: any request would raise RerankConnectionError.
    client = AsyncRerankClient(closed_url(), "m", max_retries=0)
    assert rerank(client.to_sync(), "q", [], RerankOptions()) == []


async def test_empty_input_sends_no_request_async() -> None:
    client = AsyncRerankClient(closed_url(), "m", max_retries=0)
    assert await arerank(client, "q", [], RerankOptions()) == []
    with pytest.raises(RerankConnectionError):
        await arerank(client, "q", ["a"], RerankOptions())


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("rerank_plugins.llamaindex", "llama_index", "llamaindex"),
        ("rerank_plugins.langchain", "langchain_core", "langchain"),
    ],
)
def test_import_error_names_the_extra(module: str, blocked: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'rerank-plugins[{extra}]'" in out.stdout

"""TLS against a real vLLM serving HTTPS with a CA the test session made, client certs required.

Every path of the package (both clients, the sync twin the adapters use, both adapters) gets
the same verify/cert settings, and a failed handshake is the same typed error everywhere.
"""

from __future__ import annotations

import pytest

from rerank_plugins import AsyncRerankClient, RerankClient, RerankConnectionError

QUERY = "how do I read a JSON file in Python"
DOCS = ["Boil the pasta.", "json.load(f) parses a JSON file.", "csv.reader yields rows."]


def test_ca_path_and_client_certificate(tls_server):
    assert tls_server.base_url.startswith("https://127.0.0.1:")
    cert, key = tls_server.client_cert
    with RerankClient(
        tls_server.base_url, verify=str(tls_server.ca_path), cert=(str(cert), str(key))
    ) as client:
        result = client.rerank(QUERY, DOCS)
        assert sorted(result.indices) == [0, 1, 2]
        assert client.server_info().formats_prompt is True  # rerank-serve's defaults


async def test_an_ssl_context_and_the_sync_twin_share_the_settings(tls_server):
    client = AsyncRerankClient(tls_server.base_url, verify=tls_server.ssl_context())
    ranked = await client.rerank(QUERY, DOCS)
    twin = client.to_sync()  # what the adapters' sync paths use
    assert twin.rerank(QUERY, DOCS).indices == ranked.indices
    await client.aclose()


def test_both_adapters_reach_a_tls_server(tls_server):
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.langchain import VLLMRerank as ChainRerank
    from rerank_plugins.llamaindex import VLLMRerank as NodeRerank

    ctx = tls_server.ssl_context()
    nodes = NodeRerank(base_url=tls_server.base_url, verify=ctx, top_n=2).postprocess_nodes(
        [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCS], query_str=QUERY
    )
    docs = ChainRerank(base_url=tls_server.base_url, verify=ctx, top_n=2).compress_documents(
        [Document(page_content=d) for d in DOCS], QUERY
    )
    assert len(nodes) == len(docs) == 2
    assert all(n.node.metadata["reranked"] for n in nodes)
    assert all(d.metadata["reranked"] for d in docs)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="system-CAs"),
        pytest.param({"verify": "CA"}, id="no-client-cert"),
        pytest.param({"verify": False}, id="no-verify-no-cert"),
    ],
)
def test_a_failed_handshake_is_a_typed_connection_error_without_retries(tls_server, settings):
    if settings.get("verify") == "CA":
        settings = {"verify": str(tls_server.ca_path)}
    client = RerankClient(tls_server.base_url, max_retries=2, deadline=30, **settings)
    with pytest.raises(RerankConnectionError) as info:
        client.rerank(QUERY, DOCS)
    assert tls_server.base_url in str(info.value)
    client.close()

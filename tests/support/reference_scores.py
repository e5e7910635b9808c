"""Reference scores computed with transformers, to compare vLLM's /rerank and /score against.

Test support, run with the vLLM venv's Python (same transformers as the server). Reads one JSON
object on stdin, writes one on stdout:

    {"model": DIR, "kind": "qwen3", "pairs": [[query, document], ...],
     "format": "raw" | "official", "instruction": null}
        -> {"scores": [...], "num_tokens": [...]}
    qwen3: P(yes) = softmax([logit_no, logit_yes])[1] at the last position of the prompt.
      "raw": the prompt is query + document (text concatenation, as vLLM does for an
      LLM-as-reranker without a template); "official": this script wraps the raw pair in the
      official Qwen3-Reranker prompt itself (its own copy of the recipe, independent of the
      package under test).

    {"model": DIR, "kind": "minilm", "pairs": [...], "max_length": 256}
        -> {"scores": [...], "num_tokens": [...]}
    minilm: cosine of mean-pooled token embeddings (sentence-transformers' recipe).

    {"model": DIR, "kind": "mxbai", "pairs": [...], "instruction": null}
        -> {"scores": [...], "num_tokens": [...]}
    mxbai: mixedbread-ai/mxbai-rerank v2's own recipe (mxbai_rerank_v2.py), piece by piece:
      token ids of prefix + ["instruction: I" + sep] + "query: Q" + sep + "document: D" + sep
      + task prompt + suffix, each piece tokenized on its own; score = sigmoid(logit("1") -
      logit("0")) at the last position.

    {"model": DIR, "kind": "bge-gemma", "pairs": [...], "normalize": true}
        -> {"scores": [...], "num_tokens": [...]}
    bge-gemma: FlagEmbedding's LLM reranker recipe for bge-reranker-v2-gemma, piece by piece:
      [bos] + ids("A: Q") + ids("\n") + ids("B: D") + ids("\n") + ids(prompt); score = the
      logit of "Yes" at the last position, through a sigmoid with "normalize" (FlagEmbedding's
      compute_score(normalize=True), what vLLM's /rerank returns by default), raw without.

    {"model": DIR, "kind": "jina-v3", "query": Q, "documents": [...], "instruction": null}
        -> {"scores": [...], "num_tokens": [n]}
    jina-v3: jina-reranker-v3's listwise recipe (its modeling.py): ONE prompt with every
      document, each followed by <|embed_token|>, then the query followed by <|rerank_token|>;
      score = cosine of the projected (Linear, ReLU, Linear) last hidden states at a document's
      marker and at the query's. The scores depend on the whole list.

    {"model": DIR, "kind": "qwen3-vl", "query": ITEM, "documents": [ITEM, ...],
     "instruction": null}  ITEM: a string or {"text": str | null, "images": [data URL, ...]}
        -> {"scores": [...], "num_tokens": [...]}
    qwen3-vl: Qwen3-VL-Reranker's recipe (its format_mm_instruction through Qwen3-VL's chat
      template): system prompt, "<Instruct>: I", "<Query>:" + query parts, "\n<Document>:" +
      document parts, generation prompt; an item's images go before its text, each as
      <|vision_start|><|image_pad|><|vision_end|> with the pad repeated once per merged patch
      (the checkpoint's own image processor: grid t*h*w / merge_size^2). Score = P(yes) from the
      "no"/"yes" logits at the last position of Qwen3VLForConditionalGeneration.

    {"model": DIR, "kind": "tokens", "texts": [...]} -> {"ids": [[...]], "counts": [...]}
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

# The official recipe (Qwen3-Reranker model card), kept separate from rerank_plugins.prompts
# on purpose: the reference must not share a bug with the code it checks.
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def official_prompt(query: str, document: str, instruction: str | None) -> str:
    """The full official Qwen3-Reranker prompt for one pair."""
    instr = instruction or DEFAULT_INSTRUCTION
    return f"{PREFIX}<Instruct>: {instr}\n<Query>: {query}\n<Document>: {document}{SUFFIX}"


def _p_yes(logits: Any, yes_id: int, no_id: int) -> float:
    """Qwen3-Reranker's score: P(yes) = softmax([logit_no, logit_yes])[1], in float64."""
    import torch

    pair = torch.stack([logits[no_id], logits[yes_id]]).double()
    return float(torch.softmax(pair, dim=0)[1])


def qwen3_scores(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(req["model"])
    model = AutoModelForCausalLM.from_pretrained(req["model"], dtype=torch.float32).eval()
    yes_id = tok.convert_tokens_to_ids("yes")
    no_id = tok.convert_tokens_to_ids("no")
    fmt = req.get("format", "raw")
    scores: list[float] = []
    counts: list[int] = []
    for query, document in req["pairs"]:
        if fmt == "official":
            text = official_prompt(query, document, req.get("instruction"))
        else:
            text = query + document
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        scores.append(_p_yes(logits, yes_id, no_id))
        counts.append(int(ids.shape[1]))
    return {"scores": scores, "num_tokens": counts}


# mxbai-rerank v2's prompt pieces (mixedbread-ai/mxbai-rerank, mxbai_rerank_v2.py).
MXBAI_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\n"
)
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MXBAI_TASK = (
    "You are a search relevance expert who evaluates how well documents match search queries. "
    "For each query-document pair, carefully analyze the semantic relationship between them, "
    "then provide your binary relevance judgment (0 for not relevant, 1 for relevant).\n"
    "Relevance:"
)
# bge-reranker-v2-gemma's default prompt (FlagEmbedding, FlagLLMReranker).
BGE_GEMMA_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)


def _causal_lm(path: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return tok, model


def _last_logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].double()


def mxbai_scores(req: dict[str, Any]) -> dict[str, Any]:
    import torch

    tok, model = _causal_lm(req["model"])

    def ids(text: str) -> list[int]:
        out: list[int] = tok(text, add_special_tokens=False)["input_ids"]
        return out

    one, zero = ids("1")[0], ids("0")[0]
    sep = ids("\n")
    instruction = req.get("instruction")
    scores: list[float] = []
    counts: list[int] = []
    for query, document in req["pairs"]:
        query_part = f"query: {query}"
        if instruction:
            query_part = f"instruction: {instruction}\n{query_part}"
        prompt = (
            ids(MXBAI_PREFIX)
            + ids(query_part)
            + sep
            + ids(f"document: {document}")
            + sep
            + ids(MXBAI_TASK)
            + ids(MXBAI_SUFFIX)
        )
        logits = _last_logits(model, prompt)
        scores.append(float(torch.sigmoid(logits[one] - logits[zero])))
        counts.append(len(prompt))
    return {"scores": scores, "num_tokens": counts}


def bge_gemma_scores(req: dict[str, Any]) -> dict[str, Any]:
    import torch

    tok, model = _causal_lm(req["model"])

    def ids(text: str) -> list[int]:
        out: list[int] = tok(text, add_special_tokens=False)["input_ids"]
        return out

    yes = ids("Yes")[0]
    sep = ids("\n")
    prompt_ids = ids(req.get("instruction") or BGE_GEMMA_PROMPT)
    scores: list[float] = []
    counts: list[int] = []
    for query, document in req["pairs"]:
        prompt = [tok.bos_token_id, *ids(f"A: {query}"), *sep, *ids(f"B: {document}"), *sep]
        prompt += prompt_ids
        logit = _last_logits(model, prompt)[yes]
        scores.append(float(torch.sigmoid(logit) if req.get("normalize", True) else logit))
        counts.append(len(prompt))
    return {"scores": scores, "num_tokens": counts}


JINA_SYSTEM = (
    "You are a search relevance expert who can determine a ranking of the passages based on how "
    "relevant they are to the query. If the query is a question, how relevant a passage is "
    "depends on how well it answers the question. If not, try to analyze the intent of the "
    "query and assess how well each passage satisfies the intent. If an instruction is "
    "provided, you should follow the instruction when determining the ranking."
)


def jina_v3_prompt(query: str, documents: list[str], instruction: str | None) -> str:
    """jina-reranker-v3's listwise prompt for one query and all its documents."""
    text = (
        f"I will provide you with {len(documents)} passages, each indicated by a numerical "
        f"identifier. Rank the passages based on their relevance to query: {query}\n"
    )
    if instruction:
        text += f"<instruct>\n{instruction}\n</instruct>\n"
    passages = [
        f'<passage id="{i}">\n{doc}<|embed_token|>\n</passage>' for i, doc in enumerate(documents)
    ]
    text += "\n".join(passages) + "\n" + f"<query>\n{query}<|rerank_token|>\n</query>"
    return (
        f"<|im_start|>system\n{JINA_SYSTEM}<|im_end|>\n<|im_start|>user\n{text}"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def jina_v3_scores(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen3Model

    path = req["model"]
    tok = AutoTokenizer.from_pretrained(path)
    model = Qwen3Model.from_pretrained(path, dtype=torch.float32).eval()
    weights = load_file(f"{path}/model.safetensors")
    # The checkpoint's own weights, not a fresh init (from_pretrained of the base model).
    assert torch.equal(model.embed_tokens.weight, weights["model.embed_tokens.weight"])
    projector = torch.nn.Sequential(
        torch.nn.Linear(model.config.hidden_size, model.config.hidden_size // 2, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(model.config.hidden_size // 2, 512, bias=False),
    )
    projector[0].weight.data = weights["projector.0.weight"].float()
    projector[2].weight.data = weights["projector.2.weight"].float()
    prompt = jina_v3_prompt(req["query"], list(req["documents"]), req.get("instruction"))
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    doc_id = tok.convert_tokens_to_ids("<|embed_token|>")
    query_id = tok.convert_tokens_to_ids("<|rerank_token|>")
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state[0]
        docs = projector(hidden[ids[0] == doc_id]).double()
        query = projector(hidden[ids[0] == query_id]).double()
    assert docs.shape[0] == len(req["documents"]) and query.shape[0] == 1
    scores = torch.nn.functional.cosine_similarity(query, docs)
    return {"scores": [float(x) for x in scores], "num_tokens": [int(ids.shape[1])]}


def minilm_scores(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(req["model"])
    model = AutoModel.from_pretrained(req["model"], dtype=torch.float32).eval()
    max_length = int(req.get("max_length", 256))

    def embed(text: str) -> tuple[Any, int]:
        enc = tok(text, return_tensors="pt", truncation=True, max_length=max_length)
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        mask = enc["attention_mask"][0].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(0) / mask.sum()
        return torch.nn.functional.normalize(pooled.double(), dim=0), int(enc["input_ids"].shape[1])

    scores: list[float] = []
    counts: list[int] = []
    for query, document in req["pairs"]:
        q, _ = embed(query)
        d, n = embed(document)
        scores.append(float(q @ d))
        counts.append(n)
    return {"scores": scores, "num_tokens": counts}


# Qwen3-VL-Reranker's recipe (Qwen3-VL-Embedding's qwen3_vl_reranker.py), kept apart from
# rerank_plugins' template for the same reason as PREFIX above.
VL_SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
)
VL_DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
VL_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _vl_item(item: str | dict[str, Any]) -> tuple[str, list[str]]:
    """An item's text in the prompt (images first, then its text) and its image URLs."""
    if isinstance(item, str):
        return item, []
    images = list(item.get("images") or [])
    return VL_IMAGE * len(images) + (item.get("text") or ""), images


def _decode_image(url: str) -> Any:
    import base64
    import io

    from PIL import Image

    head, _, data = url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError("the reference takes images as base64 data URLs only")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def qwen3_vl_scores(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

    path = req["model"]
    tok = AutoTokenizer.from_pretrained(path)
    images_in = AutoImageProcessor.from_pretrained(path)
    model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    yes_id, no_id = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    merge = int(images_in.merge_size) ** 2
    query, query_images = _vl_item(req["query"])
    instruction = req.get("instruction") or VL_DEFAULT_INSTRUCTION
    scores: list[float] = []
    counts: list[int] = []
    for document in req["documents"]:
        doc, doc_images = _vl_item(document)
        text = (
            f"{VL_SYSTEM}<|im_start|>user\n<Instruct>: {instruction}<Query>:{query}"
            f"\n<Document>:{doc}<|im_end|>\n<|im_start|>assistant\n"
        )
        inputs: dict[str, Any] = {}
        urls = query_images + doc_images
        if urls:
            pixels = images_in(images=[_decode_image(u) for u in urls], return_tensors="pt")
            inputs = {
                "pixel_values": pixels["pixel_values"],
                "image_grid_thw": pixels["image_grid_thw"],
            }
            pieces = text.split("<|image_pad|>")
            sizes = [int(thw.prod()) // merge for thw in pixels["image_grid_thw"]]
            text = pieces[0] + "".join(
                "<|image_pad|>" * n + rest for n, rest in zip(sizes, pieces[1:], strict=True)
            )
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        if inputs and "mm_token_type_ids" in inspect.signature(model.forward).parameters:
            # Newer transformers take the image positions for M-RoPE from the caller (1 = image).
            image_id = model.config.image_token_id
            inputs["mm_token_type_ids"] = (ids["input_ids"] == image_id).long()
        with torch.no_grad():
            out = model(**ids, **inputs)
        scores.append(_p_yes(out.logits[0, -1], yes_id, no_id))
        counts.append(int(ids["input_ids"].shape[1]))
    return {"scores": scores, "num_tokens": counts}


def token_ids(req: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(req["model"])
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in req["texts"]]
    return {"ids": ids, "counts": [len(i) for i in ids]}


def main() -> int:
    req = json.load(sys.stdin)
    kind = req.get("kind")
    compute = {
        "qwen3": qwen3_scores,
        "minilm": minilm_scores,
        "mxbai": mxbai_scores,
        "bge-gemma": bge_gemma_scores,
        "jina-v3": jina_v3_scores,
        "qwen3-vl": qwen3_vl_scores,
        "tokens": token_ids,
    }.get(kind)
    if compute is None:
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 2
    json.dump(compute(req), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

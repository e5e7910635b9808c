"""Build a tiny random-weight jina-reranker-v3 look-alike that vLLM serves natively (listwise).

Test support, run with the vLLM venv's Python (torch, transformers, tokenizers, safetensors):

    .venv-vllm/bin/python tests/support/build_tiny_jina_reranker_v3.py OUT_DIR

jina-reranker-v3 is a Qwen3 model plus a projector (hidden -> hidden/2 -> 512, ReLU between)
served by vLLM's native JinaForRanking: ONE prompt holds the query and every document, each
followed by a marker token; the score of a document is the cosine of the projected hidden states
at its marker and at the query's. vLLM hard-codes the marker ids (<|embed_token|> 151670,
<|rerank_token|> 151671), so the vocabulary must reach them: the locally trained BPE vocabulary
is padded with unreachable filler entries up to id 151669. To keep that small the model is
hidden 64 (2 heads of head_dim 32, which vLLM's CPU attention supports), 2 layers, tied
embeddings: about 40 MB. Random weights: the scores mean nothing for relevance, but the code path
in vLLM (listwise prompt, marker pooling, cosine) is the real one. Idempotent.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from build_tiny_qwen3_reranker import EN_WORDS, ZH_CHARS

BUILD_VERSION = 1
MARKER = "tiny_build.json"
SEED = 3141
DOC_TOKEN, DOC_TOKEN_ID = "<|embed_token|>", 151670
QUERY_TOKEN, QUERY_TOKEN_ID = "<|rerank_token|>", 151671
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
PROMPT_WORDS = (
    "You are a search relevance expert who can determine a ranking of the passages based on how "
    "relevant they are to the query. If the query is a question, how relevant a passage is "
    "depends on how well it answers the question. If not, try to analyze the intent of the "
    "query and assess how well each passage satisfies the intent. If an instruction is provided, "
    "you should follow the instruction when determining the ranking. I will provide you with "
    "passages, each indicated by a numerical identifier. Rank the passages based on their "
    'relevance to query: <passage id="0"> </passage> <query> </query> <instruct> </instruct>'
)


def _corpus(rng: random.Random) -> list[str]:
    lines: list[str] = []
    for _ in range(3000):
        n = rng.randint(4, 20)
        lines.append(" ".join(rng.choice(EN_WORDS) for _ in range(n)).capitalize() + ".")
    for _ in range(1500):
        n = rng.randint(6, 30)
        lines.append("".join(rng.choice(ZH_CHARS) for _ in range(n)) + "。")
    lines.extend([PROMPT_WORDS] * 200)
    return lines


def _build_tokenizer(rng: random.Random) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng), trainer=trainer)
    # Pad the vocabulary with entries no merge can produce, so the two marker tokens land on
    # the ids vLLM's JinaForRanking looks for.
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    for token_id in range(len(vocab), DOC_TOKEN_ID):
        vocab[f"<|filler_{token_id}|>"] = token_id
    for token, token_id in ((DOC_TOKEN, DOC_TOKEN_ID), (QUERY_TOKEN, QUERY_TOKEN_ID)):
        vocab[token] = token_id
        data["added_tokens"].append(
            {
                "id": token_id,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    tok = Tokenizer.from_str(json.dumps(data))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    for token, token_id in ((DOC_TOKEN, DOC_TOKEN_ID), (QUERY_TOKEN, QUERY_TOKEN_ID)):
        if fast.convert_tokens_to_ids(token) != token_id:
            raise SystemExit(f"{token} is not id {token_id}")
        if fast(f"a{token}b", add_special_tokens=False)["input_ids"].count(token_id) != 1:
            raise SystemExit(f"{token} is not encoded as one token")
    return fast


def build(out_dir: Path) -> Path:
    """Build the model into ``out_dir`` unless a complete build of this version is there."""
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        return out_dir

    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    rng = random.Random(SEED)
    torch.manual_seed(SEED)
    tokenizer = _build_tokenizer(rng)
    ids = tokenizer.convert_tokens_to_ids  # type: ignore[attr-defined]
    hidden = 64
    config = Qwen3Config(
        vocab_size=QUERY_TOKEN_ID + 1,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,  # vLLM's CPU attention needs 32, 64, 80, ...
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    config.architectures = ["JinaForRanking"]
    body = Qwen3Model(config)
    with torch.no_grad():
        for param in body.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
    weights = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    weights["projector.0.weight"] = torch.randn(hidden // 2, hidden) * 0.2
    weights["projector.2.weight"] = torch.randn(512, hidden // 2) * 0.2

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-build-", dir=out_dir.parent))
    try:
        config.save_pretrained(tmp)
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)  # type: ignore[attr-defined]
        (tmp / MARKER).write_text(json.dumps({"version": BUILD_VERSION, "seed": SEED}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Build into the directory given on the command line and print its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: build_tiny_jina_reranker_v3.py OUT_DIR", file=sys.stderr)
        return 2
    print(build(Path(args[0]).resolve()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build a tiny random-weight mxbai-rerank-v2 look-alike that vLLM serves like mxbai-rerank-v2.

Test support, run with the vLLM venv's Python (torch, transformers, tokenizers):

    .venv-vllm/bin/python tests/support/build_tiny_mxbai_rerank_v2.py OUT_DIR

mxbai-rerank-base/large-v2 is a Qwen2 causal LM scored by the logits of "1" and "0" at the
last position of its own prompt; vLLM serves it as Qwen2ForSequenceClassification with
classifier_from_token ["0", "1"] and from_2_way_softmax. This is a Qwen2ForCausalLM of the same
kind (hidden 128, 2 layers, 4 heads -> head_dim 32, which vLLM's CPU attention supports) with a
byte-level BPE tokenizer trained locally on mxbai-shaped prompts: "0" and "1" are single tokens,
<|im_start|>/<|im_end|>/<|endoftext|> are special. Random weights: the scores mean nothing for
relevance, but the code path in vLLM is the real one. Idempotent: a complete build is kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

# The Qwen3 builder's word lists and the trainer settings are shared; its dir is sys.path[0].
from build_tiny_qwen3_reranker import EN_WORDS, ZH_CHARS

BUILD_VERSION = 1
MARKER = "tiny_build.json"
SEED = 4321
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\nquery: {q}\ndocument: {d}\nYou are a search relevance expert "
    "who evaluates how well documents match search queries. For each query-document pair, "
    "carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def _corpus(rng: random.Random) -> list[str]:
    lines: list[str] = []
    for _ in range(3000):
        n = rng.randint(4, 20)
        lines.append(" ".join(rng.choice(EN_WORDS) for _ in range(n)).capitalize() + ".")
    for _ in range(1500):
        n = rng.randint(6, 30)
        lines.append("".join(rng.choice(ZH_CHARS) for _ in range(n)) + "。")
    for _ in range(500):
        q = " ".join(rng.choice(EN_WORDS) for _ in range(6))
        d = " ".join(rng.choice(EN_WORDS) for _ in range(12))
        lines.append(PROMPT.format(q=q, d=d))
    return lines


def _build_tokenizer(rng: random.Random) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2500,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng), trainer=trainer)
    for word in ("0", "1"):
        if tok.token_to_id(word) is None:
            raise SystemExit(f"the tokenizer has no single token for {word!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def build(out_dir: Path) -> Path:
    """Build the model into ``out_dir`` unless a complete build of this version is there."""
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        return out_dir

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(SEED)
    torch.manual_seed(SEED)
    tokenizer = _build_tokenizer(rng)
    ids = tokenizer.convert_tokens_to_ids  # type: ignore[attr-defined]
    config = Qwen2Config(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 32: vLLM's CPU attention needs 32, 64, 80, ...
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
    model.eval()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-build-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
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
        print("usage: build_tiny_mxbai_rerank_v2.py OUT_DIR", file=sys.stderr)
        return 2
    print(build(Path(args[0]).resolve()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

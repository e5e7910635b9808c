"""Build a tiny random-weight bge-reranker-v2-gemma look-alike that vLLM serves like the real one.

Test support, run with the vLLM venv's Python (torch, transformers, tokenizers):

    .venv-vllm/bin/python tests/support/build_tiny_bge_reranker_v2_gemma.py OUT_DIR

bge-reranker-v2-gemma is a Gemma causal LM scored by the logit of "Yes" at the last position of
FlagEmbedding's prompt; vLLM serves it as GemmaForSequenceClassification with
classifier_from_token ["Yes"] and method no_post_processing. This is a GemmaForCausalLM of the
same kind (hidden 128, 2 layers, 4 heads of head_dim 32, which vLLM's CPU attention supports)
with a locally trained byte-level BPE tokenizer that, like Gemma's, puts <bos> in front of
every encoded text (add_special_tokens) and has "Yes" as one token. Random weights: scores mean
nothing for relevance, but vLLM's code path is the real one. Idempotent.
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
SEED = 2718
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
PROMPT = (
    "A: {q}\nB: {d}\nGiven a query A and a passage B, determine whether the passage contains an "
    "answer to the query by providing a prediction of either 'Yes' or 'No'."
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
    lines.extend(["Yes", "No", "Yes No", "'Yes'", "'No'"] * 300)
    return lines


def _build_tokenizer(rng: random.Random) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2500,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng), trainer=trainer)
    if tok.token_to_id("Yes") is None:
        raise SystemExit("the tokenizer has no single token for 'Yes'")
    bos = tok.token_to_id("<bos>")
    # Gemma's tokenizer prepends <bos> to every text encoded with special tokens.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def build(out_dir: Path) -> Path:
    """Build the model into ``out_dir`` unless a complete build of this version is there."""
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        return out_dir

    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    rng = random.Random(SEED)
    torch.manual_seed(SEED)
    tokenizer = _build_tokenizer(rng)
    ids = tokenizer.convert_tokens_to_ids  # type: ignore[attr-defined]
    if tokenizer("a")["input_ids"][0] != ids("<bos>"):  # type: ignore[operator]
        raise SystemExit("the tokenizer does not prepend <bos>")
    config = GemmaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,  # vLLM's CPU attention needs 32, 64, 80, ...
        max_position_embeddings=2048,
        bos_token_id=ids("<bos>"),
        eos_token_id=ids("<eos>"),
        pad_token_id=ids("<pad>"),
        torch_dtype="float32",
    )
    model = GemmaForCausalLM(config)
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
        print("usage: build_tiny_bge_reranker_v2_gemma.py OUT_DIR", file=sys.stderr)
        return 2
    print(build(Path(args[0]).resolve()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

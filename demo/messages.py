# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""The demo's messages in English and Chinese: one catalog, no Gradio (the pure layers use it).

Each key holds ``(English, Chinese)`` with ``str.format`` placeholders. Corpus text, queries and
model output are never translated.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["LANGUAGES", "MESSAGES", "Lang", "language_name", "languages_label", "text"]

Lang = Literal["en", "zh"]
LANGUAGES: tuple[Lang, ...] = ("en", "zh")

# key -> (English, Chinese). str.format placeholders; no braces otherwise, since the browser
# reads static entries as ICU messages.
MESSAGES: dict[str, tuple[str, str]] = {
    # -- page and layout --
    "title": ("BM25 → rerank demo", "BM25 → 重排序演示"),
    "intro": (
        "# BM25 → rerank\nBM25 finds candidates, a vLLM-served reranker re-scores them; "
        "see which documents moved and why.",
        "# BM25 → 重排序\nBM25 先找出候选文档，再由 vLLM 部署的重排序模型重新打分；"
        "看看哪些文档移动了位置，以及原因。",
    ),
    "tab_search": ("Search a corpus", "检索语料库"),
    "tab_list": ("Rerank a list", "对列表重排序"),
    "tab_metrics": ("Metrics", "指标"),
    "corpus": ("Corpus", "语料库"),
    "own_docs": ("Your documents (paste or upload)", "你的文档（粘贴或上传）"),
    "upload": ("Upload .txt, .md or .jsonl (≤ 2 MB)", "上传 .txt、.md 或 .jsonl 文件（≤ 2 MB）"),
    "paste": ("…or paste documents", "……或粘贴文档"),
    "paste_placeholder": (
        "One document per line, or paragraphs split by blank lines",
        "每行一篇文档，或用空行分隔的段落",
    ),
    "split": ("Split into", "切分方式"),
    "split_auto": ("Auto (blank lines if any, else lines)", "自动（有空行按段落，否则按行）"),
    "split_lines": ("One document per line", "每行一篇文档"),
    "split_paragraphs": ("Blank-line separated paragraphs", "按空行分段"),
    "limits": (
        "Up to {mb} MB per file and {docs} documents.",
        "每个文件最多 {mb} MB，最多 {docs} 篇文档。",
    ),
    "top_k": ("BM25 candidates (top-k)", "BM25 候选数（top-k）"),
    "top_k_info": ("How many BM25 hits the reranker re-scores", "重排序模型重新打分的 BM25 结果数"),
    "top_n": ("Shown after reranking (top-n)", "重排序后显示（top-n）"),
    "rerank_anyway": (
        "Rerank anyway, even text the model cannot read",
        "仍然重排序（即使模型读不懂这种语言）",
    ),
    "rerank_anyway_info": (
        "Off: text that {model} cannot read keeps BM25's order",
        "关闭时：{model} 读不懂的文本保持 BM25 的顺序",
    ),
    "instruction": ("Instruction", "指令"),
    "preset": ("Preset", "预设"),
    "instruction_placeholder": ("Empty: the default, “{default}”", "留空：使用默认指令“{default}”"),
    "note_qwen": (
        "Qwen3-Reranker reads this instruction with every query (optional).",
        "Qwen3-Reranker 会随每个查询读取这条指令（可选）。",
    ),
    "note_minilm": (
        "Disabled: all-MiniLM-L6-v2 is a small English sentence-embedding model (cosine "
        "similarity, 256 tokens per text): it takes no instruction and does not understand "
        "Chinese.",
        "已停用：all-MiniLM-L6-v2 是一个小型英文句向量模型（余弦相似度，每段文本 256 个 "
        "token）：它不接受指令，也读不懂中文。",
    ),
    "note_other": (
        "Disabled: this model is not a Qwen3-Reranker, so it takes no instruction.",
        "已停用：该模型不是 Qwen3-Reranker，不接受指令。",
    ),
    "preset_default": ("Default: web search", "默认：网页检索"),
    "preset_explain": ("Explain a concept", "解释概念"),
    "preset_define": ("Find a definition", "查找定义"),
    "preset_code": ("Programming help", "编程帮助"),
    "preset_zh": ("中文问答", "中文问答"),
    "model_box": ("Model / backend", "模型 / 后端"),
    "query": ("Query", "查询"),
    "query_placeholder": (
        "Ask something, e.g. how do vaccines train immunity?",
        "输入问题，例如：疫苗如何训练免疫系统？",
    ),
    "go": ("Search & rerank", "检索并重排序"),
    "try": ("Try: {corpus}", "试试：{corpus}"),
    "table": (
        "Reranked results (Change = places moved compared with BM25)",
        "重排序结果（变化 = 与 BM25 相比移动的名次）",
    ),
    "list_intro": (
        "Paste a query and candidates, one per line; the reranker orders them.",
        "粘贴一个查询和若干候选（每行一个），由重排序模型排序。",
    ),
    "list_example": ("Example list", "示例列表"),
    "candidates": ("Candidates, one per line", "候选文本，每行一个"),
    "list_go": ("Rerank", "重排序"),
    "list_table": ("Ranked candidates", "排序后的候选"),
    "metrics_now": ("rerank_* metrics now", "当前的 rerank_* 指标"),
    "refresh": ("Refresh", "刷新"),
    "metrics_help": (
        "The demo's client runs with `metrics=True`: every call updates the Prometheus metrics "
        "of `rerank_plugins.telemetry` (call duration, documents per call, requests by status "
        "class, errors, retries, cache hits and misses, calls in flight), labelled by model and "
        "route only. In your application, expose them for Prometheus with "
        "`prometheus_client.start_http_server(9464)` (then scrape `http://HOST:9464/metrics`); "
        "started with `--metrics-port`, this demo does the same.",
        "演示的客户端以 `metrics=True` 运行：每次调用都会更新 `rerank_plugins.telemetry` 的 "
        "Prometheus 指标（调用耗时、每次调用的文档数、按状态类别统计的请求、错误、重试、缓存命中"
        "与未命中、进行中的调用），标签只有模型和路由。在你的应用中，用 "
        "`prometheus_client.start_http_server(9464)` 把它们暴露给 Prometheus（然后抓取 "
        "`http://HOST:9464/metrics`）；用 `--metrics-port` 启动时，本演示也会这样做。",
    ),
    "no_metrics_lib": (
        "prometheus_client is not installed: pip install 'rerank-plugins[metrics]'",
        "未安装 prometheus_client：pip install 'rerank-plugins[metrics]'",
    ),
    "no_calls": ("(no calls yet)", "（还没有调用）"),
    "no_results": ("No results yet.", "还没有结果。"),
    # -- corpora --
    "corpus_label": ("{title} ({n} docs)", "{title}（{n} 篇）"),
    "corpus_demo_en": ("English sample", "英文示例"),
    "corpus_demo_zh": ("中文 sample", "中文示例"),
    "corpus_medquad-liveqa": (
        "MedQuAD × LiveQA: public, judged (English)",
        "MedQuAD × LiveQA：公开数据集，有相关性标注（英文）",
    ),
    "corpus_xquad-zh": (
        "XQuAD: public, judged (Chinese)",
        "XQuAD：公开数据集，有相关性标注（中文）",
    ),
    # -- banner --
    "banner_model": (
        "**Reranker:** `{model}` — {origin}.",
        "**重排序模型：** `{model}` — {origin}。",
    ),
    "banner_why": ("**Why this model:** {reason}.", "**为什么是这个模型：** {reason}。"),
    "banner_reads": (
        "**Reads {languages}:** text in another language (by the share of CJK characters) is "
        "not reranked: the Chinese corpus and pasted Chinese lists are shown in BM25's (or "
        "their input) order, because a model that cannot read them would only shuffle them. "
        "Tick “{anyway}” to see its order all the same.",
        "**只读得懂{languages}：** 其他语言的文本（按 CJK 字符所占比例判断）不做重排序：中文语料库"
        "和粘贴的中文列表按 BM25 的顺序（或输入顺序）显示，因为读不懂它们的模型只会把顺序打乱。"
        "勾选“{anyway}”仍可查看模型给出的顺序。",
    ),
    "banner_no_instruction": (
        "**No instruction:** this model does not read one.",
        "**不接受指令：** 该模型不读取指令。",
    ),
    "banner_best": ("**Best available here?** {note}", "**这里能用的最好模型？** {note}"),
    "offline_best": (
        "MiniLM is the demo's offline default because no better reranker runs without the model "
        "hub: the only other model available offline is a random-weight test model. It is a "
        "bi-encoder (a cosine of two embeddings), not a cross-encoder reranker, and on some data "
        "it ranks worse than BM25 alone: measure it on yours with `rerank-evaluate` before "
        "trusting its order.",
        "MiniLM 是本演示的离线默认模型，因为没有模型仓库时跑不了更好的重排序模型：离线可用的另一个"
        "模型只是随机权重的测试模型。它是双塔模型（两个向量的余弦），不是交叉编码器重排序模型，"
        "在某些数据上排得比单用 BM25 还差：信任它的顺序之前，先用 `rerank-evaluate` 在你的数据上"
        "测一测。",
    ),
    # -- why this model, and where it runs (demo.backend) --
    "reason_asked_minilm": ("asked for with --model minilm", "启动时用 --model minilm 指定"),
    "reason_asked_qwen3": ("asked for with --model qwen3", "启动时用 --model qwen3 指定"),
    "reason_asked": ("asked for with --model", "启动时用 --model 指定"),
    "reason_gpu": ("the model hub is reachable and a GPU is here", "能连上模型仓库，本机也有 GPU"),
    "reason_cpus": (
        "the model hub is reachable and {cpus} CPU cores are here",
        "能连上模型仓库，本机也有 {cpus} 个 CPU 核",
    ),
    "reason_no_hub": (
        "{hub} is not reachable (2 s probe), so Qwen3-Reranker cannot be downloaded",
        "连不上 {hub}（探测 2 秒），因此无法下载 Qwen3-Reranker",
    ),
    "reason_few_cpus": (
        "no GPU and only {cpus} CPU cores: Qwen3-Reranker-0.6B would take many seconds per "
        "query (start with --model qwen3 to use it anyway)",
        "没有 GPU，且只有 {cpus} 个 CPU 核：Qwen3-Reranker-0.6B 每个查询要花很多秒"
        "（仍想使用，请加 --model qwen3 启动）",
    ),
    "reason_fallback": ("offline fallback: {why}", "离线回退：{why}"),
    "reason_server_qwen": ("the server serves a Qwen3-Reranker", "服务端部署的是 Qwen3-Reranker"),
    "reason_server_minilm": (
        "the server serves MiniLM (English only)",
        "服务端部署的是 MiniLM（只读得懂英文）",
    ),
    "reason_server_given": (
        "the server's model was given with --base-url / RERANK_BASE_URL",
        "服务端由 --base-url / RERANK_BASE_URL 指定",
    ),
    "origin_embedded": (
        "embedded vLLM at {url} (pid {pid})",
        "内置 vLLM，地址 {url}（进程号 {pid}）",
    ),
    "origin_server": ("server at {url}", "服务端 {url}"),
    "server_default": ("(server default)", "（服务端默认）"),
    "languages_many": ("many languages", "多种语言"),
    "languages_en_only": ("English only", "英文"),
    "lang_en": ("English", "英文"),
    "lang_zh": ("Chinese", "中文"),
    # -- handler messages --
    "type_query": ("Type a query first.", "请先输入查询。"),
    "no_docs_yet": (
        "No documents yet: paste some text or upload a .txt, .md or .jsonl file under "
        "“Your documents”.",
        "还没有文档：请在“你的文档”下粘贴文本，或上传 .txt、.md 或 .jsonl 文件。",
    ),
    "your_docs": ("your documents ({source})", "你的文档（{source}）"),
    "source_file": ("{n} from {name}", "{n} 篇来自 {name}"),
    "source_pasted": ("{n} pasted", "{n} 篇粘贴"),
    "docs_ready": (
        "✓ {n} documents ready ({source}). Pick “{own}” to search them.",
        "✓ 已准备好 {n} 篇文档（{source}）。选择“{own}”即可检索。",
    ),
    "docs_hint": (
        "Paste text or upload .txt, .md or .jsonl (up to {mb} MB and {docs} documents).",
        "粘贴文本或上传 .txt、.md、.jsonl 文件（最多 {mb} MB、{docs} 篇文档）。",
    ),
    "progress_bm25": ("BM25 search", "BM25 检索"),
    "progress_rerank": ("Reranking: batch {done} of {total}", "重排序中：第 {done}/{total} 批"),
    "progress_load": ("Loading {corpus}", "正在加载 {corpus}"),
    "search_failed": ("Search failed ({kind}): {detail}", "检索失败（{kind}）：{detail}"),
    "no_hits": (
        "BM25 found no document sharing a word with the query.",
        "BM25 没有找到与查询有共同词语的文档。",
    ),
    "not_reranked": (
        "**Showing BM25's order, not reranked.** {reason}. Tick “{anyway}” to see the model's "
        "order.  \nBM25's top {hits} of {total} documents ({source}); showing the best {shown}.",
        "**按 BM25 的顺序显示，未重排序（not reranked）。** {reason}。勾选“{anyway}”可查看模型"
        "给出的顺序。  \nBM25 从 {total} 篇文档（{source}）中取前 {hits} 篇；"
        "显示最好的 {shown} 篇。",
    ),
    "reranked": (
        "Reranked BM25's top {hits} of {total} documents ({source}); showing the best {shown}.",
        "已对 BM25 从 {total} 篇文档（{source}）中取出的前 {hits} 篇重排序；"
        "显示最好的 {shown} 篇。",
    ),
    "reranked_anyway": (
        "⚠ **Reranked anyway:** {reason}. This order is not an improvement on BM25's.",
        "⚠ **仍然重排序了：** {reason}。这个顺序并不比 BM25 的更好。",
    ),
    "unreadable": (
        "`{model}` reads {languages}, and this text is {language} ({share:.0%} CJK "
        "characters): a model that cannot read it reorders it by accident, not by meaning",
        "`{model}` 只读得懂{languages}，而这段文本是{language}（CJK 字符占 {share:.0%}）："
        "读不懂它的模型只会随机打乱顺序，而不是按语义排序",
    ),
    "list_kept": (
        "**Kept in input order, not reranked.** {reason}. Tick “{anyway}” to see the model's "
        "order.  \n{n} candidates.",
        "**保持输入顺序，未重排序（not reranked）。** {reason}。勾选“{anyway}”可查看模型给出的"
        "顺序。  \n共 {n} 个候选。",
    ),
    "list_empty": ("Paste at least one candidate, one per line.", "请至少粘贴一个候选，每行一个。"),
    "list_ranked": (
        "Ranked {n} candidates with `{model}` · **Tokens** {tokens}",
        "已用 `{model}` 排序 {n} 个候选 · **Token 数** {tokens}",
    ),
    "list_anyway": (
        "⚠ **Reranked anyway:** {reason}. This order is not an improvement.",
        "⚠ **仍然重排序了：** {reason}。这个顺序并不更好。",
    ),
    # -- judgements (public sets) --
    "judged_ndcg": (
        "**nDCG@10 on this query:** BM25 {bm25:.3f} → reranked {reranked:.3f} ({delta:+.3f}): "
        "{verdict}. {found} of {relevant} judged-relevant documents are among BM25's "
        "{hits} candidates; ✓ marks them below.",
        "**本查询的 nDCG@10：** BM25 {bm25:.3f} → 重排序后 {reranked:.3f}（{delta:+.3f}）："
        "{verdict}。"
        "{relevant} 篇标注为相关的文档中有 {found} 篇在 BM25 的 {hits} 个候选里；下面用 ✓ 标出。",
    ),
    "verdict_up": ("the reranker helped", "重排序有帮助"),
    "verdict_down": ("the reranker made it worse", "重排序反而变差了"),
    "verdict_same": ("no change", "没有变化"),
    "verdict_skipped": (
        "not reranked, so both lists are BM25's",
        "未重排序，两个列表都是 BM25 的顺序",
    ),
    "judged_none": (
        "**No judgements for this query:** {corpus} has relevance judgements for its own "
        "queries only; pick one of the examples to see nDCG@10 and the ✓ marks.",
        "**这个查询没有相关性标注：** {corpus} 只对它自带的查询有标注；选一个示例查询即可看到 "
        "nDCG@10 和 ✓ 标记。",
    ),
    # -- table, cards, chart, timings --
    "col_rank": ("Rank", "名次"),
    "col_score": ("Score", "得分"),
    "col_bm25_rank": ("BM25 rank", "BM25 名次"),
    "col_bm25_score": ("BM25 score", "BM25 得分"),
    "col_change": ("Change", "变化"),
    "col_doc": ("Doc #", "文档编号"),
    "col_document": ("Document", "文档"),
    "col_input": ("Input #", "输入序号"),
    "card_score": ("score <b>{score:.4f}</b>", "得分 <b>{score:.4f}</b>"),
    "card_not_reranked": ("not reranked", "未重排序（not reranked）"),
    "card_doc": ("doc {index}", "文档 {index}"),
    "card_relevant": ("✓ judged relevant (grade {grade})", "✓ 标注为相关（等级 {grade}）"),
    "chart_bm25_rank": ("BM25 rank", "BM25 名次"),
    "chart_reranked": ("Reranked", "重排序后"),
    "chart_shown_bm25": ("Shown (BM25's order)", "显示（BM25 顺序）"),
    "chart_rank_change": ("Rank change of the top {n}", "前 {n} 名的名次变化"),
    "chart_doc": ("doc {index}", "文档 {index}"),
    "chart_not_reranked": (
        "Not reranked: the model cannot read\nthis language, so BM25's order is shown.",
        "未重排序：模型读不懂这种语言，\n因此显示 BM25 的顺序。",
    ),
    "chart_others": ("other BM25 candidates ({n})", "其他 BM25 候选（{n}）"),
    "chart_shown": ("shown top {n}", "显示的前 {n} 名"),
    "chart_bm25_score": ("BM25 score", "BM25 得分"),
    "chart_rerank_score": ("rerank score", "重排序得分"),
    "chart_scores": ("BM25 score vs rerank score", "BM25 得分与重排序得分"),
    "timing_index_built": (
        " (index built now in {ms:,.0f} ms, then cached)",
        "（索引刚刚建立，用时 {ms:,.0f} ms，之后复用缓存）",
    ),
    "timing_index_cached": (" (cached index)", "（使用缓存的索引）"),
    "timing_batches": (", {n} batches", "，{n} 批"),
    "timing_skipped": (
        "**BM25** {bm25:,.1f} ms over {docs:,} documents{index} · **Rerank** skipped ({hits} "
        "candidates kept in BM25's order) · **Model** `{model}`",
        "**BM25** {bm25:,.1f} ms，共 {docs:,} 篇文档{index} · **重排序** 已跳过（{hits} 个候选保持 "
        "BM25 的顺序） · **模型** `{model}`",
    ),
    "timing": (
        "**BM25** {bm25:,.1f} ms over {docs:,} documents{index} · **Rerank** {rerank:,.0f} ms "
        "for {hits} candidates{batches} · **Tokens** {tokens:,} · **Model** `{model}`",
        "**BM25** {bm25:,.1f} ms，共 {docs:,} 篇文档{index} · **重排序** {rerank:,.0f} ms，"
        "{hits} 个候选{batches} · **Token 数** {tokens:,} · **模型** `{model}`",
    ),
    # -- errors: the library's exceptions stay English; these say what they mean --
    "err_prefix": ("The reranker failed: {detail}", "重排序服务出错：{detail}"),
    "err_connection": (
        "The reranker failed: {detail}",
        "重排序服务出错：无法连接到 {url}。请确认服务已启动（例如 `rerank-serve MODEL`），或用 "
        "--base-url 指定正确的地址。",
    ),
    "err_timeout": (
        "The reranker failed: {detail}",
        "重排序服务出错：{url} 没有在时限内应答。服务可能过载，或候选太多；"
        "请减少 BM25 候选数后重试。",
    ),
    "err_status": (
        "The reranker failed: {detail}",
        "重排序服务出错：服务返回 HTTP {status}。请查看服务日志，确认模型名称和请求是否正确。",
    ),
    "err_response": (
        "The reranker failed: {detail}",
        "重排序服务出错：服务的应答格式无法读取。请确认这是一个重排序（rerank）服务。",
    ),
    "err_input": (
        "The reranker failed: {detail}",
        "重排序服务出错：查询或文档无法按原样发送。",
    ),
    "err_detail": ("", "  \n详情（服务端的英文原文）：{detail}"),
    # -- user documents (demo.inputs) --
    "docs_too_many_together": (
        "The upload and the pasted text hold {n:,} documents together; the demo takes at most "
        "{limit:,}.",
        "上传的文件和粘贴的文本合计 {n:,} 篇文档；本演示最多接受 {limit:,} 篇。",
    ),
    "docs_too_many": (
        "{source} holds {n:,} documents; the demo takes at most {limit:,}. Trim it or split it "
        "into smaller files.",
        "{source} 含有 {n:,} 篇文档；本演示最多接受 {limit:,} 篇。请删减，或拆成更小的文件。",
    ),
    "paste_too_big": (
        "{source} is {size}; the limit is {limit}. Paste less, or upload a smaller file.",
        "{source} 大小为 {size}；上限是 {limit}。请少粘贴一些，或上传更小的文件。",
    ),
    "file_type": (
        "{name}: unsupported file type {suffix}; upload .txt, .md or .jsonl.",
        "{name}：不支持的文件类型 {suffix}；请上传 .txt、.md 或 .jsonl 文件。",
    ),
    "file_too_big": (
        "{name} is {size}; uploads are limited to {limit}. Split it into smaller files or keep "
        "the part you want to search.",
        "{name} 大小为 {size}；上传限制为 {limit}。请拆成更小的文件，或只保留要检索的部分。",
    ),
    "file_not_utf8": (
        "{name} is not UTF-8 text (byte {byte}).",
        "{name} 不是 UTF-8 文本（第 {byte} 字节）。",
    ),
    "jsonl_not_json": (
        "{name}, line {line}: not JSON ({why}).",
        "{name} 第 {line} 行：不是 JSON（{why}）。",
    ),
    "jsonl_no_text": (
        "{name}, line {line}: expected a string or an object with one of the fields {fields}.",
        "{name} 第 {line} 行：应为字符串，或带有以下字段之一的对象：{fields}。",
    ),
    "source_paste": ("The pasted text", "粘贴的文本"),
    "source_list": ("The candidate list", "候选列表"),
}


def text(lang: Lang, key: str, /, **params: Any) -> str:
    """The message ``key`` in ``lang``, its placeholders filled from ``params``."""
    template = MESSAGES[key][LANGUAGES.index(lang)]
    return template.format(**params) if params else template


def language_name(code: str, lang: Lang) -> str:
    """A language code (``en``, ``zh``) as ``lang`` names it; an unknown code as is."""
    key = f"lang_{code}"
    return text(lang, key) if key in MESSAGES else code


def languages_label(languages: frozenset[str] | None, lang: Lang) -> str:
    """What a model reads: ``English only`` / ``英文``, or ``many languages`` (None)."""
    if languages is None:
        return text(lang, "languages_many")
    if languages == frozenset({"en"}):
        return text(lang, "languages_en_only")
    return " + ".join(language_name(code, lang) for code in sorted(languages))

"""The Gradio demo: BM25 retrieval, reranking by a vLLM server, and a display of the difference.

Run it with ``python -m demo`` (or ``bash demo/run.sh`` from a fresh clone). The
``rerank_plugins`` package never imports this directory.
"""

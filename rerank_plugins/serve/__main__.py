"""``python -m rerank_plugins.serve``: the same as ``rerank-serve``."""

from rerank_plugins.serve.cli import serve_main

if __name__ == "__main__":
    raise SystemExit(serve_main())

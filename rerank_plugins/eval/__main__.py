"""``python -m rerank_plugins.eval``: the ``rerank-evaluate`` command."""

from .cli import main

raise SystemExit(main())

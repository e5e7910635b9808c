"""Code that runs inside the vLLM server process, not in the client.

``rerank-serve`` puts this folder itself (not the package) on the server's ``PYTHONPATH``, so
vLLM's Python imports these modules as top-level modules (``rerank_api_key_guard``) without
importing ``rerank_plugins`` or its dependencies. Modules here use the standard library only.
"""

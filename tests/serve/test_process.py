"""The managed-process base under VLLMServer and RouterProcess, and the launchers' run loop.

A stand-in router (a few lines of Python that answer GET /health on the --host and --port
they are given) is run through the real RouterProcess: no vLLM, no vllm-router, seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from rerank_plugins.cluster import ClusterError, RouterConfig, RouterProcess
from rerank_plugins.serve import ServeConfig, VLLMServer, free_port
from rerank_plugins.serve.process import ManagedProcess
from rerank_plugins.serve.run import run_until_signalled

FAKE_ROUTER = textwrap.dedent(
    """\
    import http.server, signal, socket, sys
    args = sys.argv[1:]
    def arg(name, default=None):
        return args[args.index(name) + 1] if name in args else default
    if arg("--exit-code"):
        print("fake router: refusing to start")
        raise SystemExit(int(arg("--exit-code")))
    marker = arg("--marker")
    def on_term(signum, frame):
        if marker:
            open(marker, "w").write("SIGTERM")
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

    host = arg("--host")
    class Server(http.server.HTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    print("fake router: listening", flush=True)
    Server((host, int(arg("--port"))), H).serve_forever()
    """
)


@pytest.fixture
def fake_router(tmp_path: Path) -> str:
    path = tmp_path / "fake-router"
    path.write_text(f"#!{sys.executable}\n{FAKE_ROUTER}")
    path.chmod(0o755)
    return str(path)


def _router(executable: str, *extra: str, host: str = "127.0.0.1") -> RouterProcess:
    cfg = RouterConfig(executable=executable, host=host, extra_args=extra, startup_timeout=60)
    return RouterProcess(cfg, ["http://127.0.0.1:1"])


def test_free_port_is_defined_once_and_binds_the_host_family() -> None:
    import rerank_plugins.cluster
    import rerank_plugins.serve.process

    assert rerank_plugins.serve.free_port is rerank_plugins.serve.process.free_port
    assert not hasattr(rerank_plugins.cluster, "_free_port")
    port = free_port("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it was free


def test_router_and_server_share_the_ipv6_url_rules() -> None:
    for host, url in (
        ("::1", "http://[::1]:1234"),
        ("::", "http://127.0.0.1:1234"),
        ("0.0.0.0", "http://127.0.0.1:1234"),
        ("10.1.2.3", "http://10.1.2.3:1234"),
    ):
        assert RouterProcess(RouterConfig(host=host, port=1234), []).base_url == url
        assert ServeConfig("m", host=host, port=1234).base_url == url


def test_router_and_server_are_one_managed_process() -> None:
    assert issubclass(RouterProcess, ManagedProcess) and issubclass(VLLMServer, ManagedProcess)
    for name in ("start", "wait_ready", "stop", "terminate", "log_tail", "_cleanup_files"):
        assert name not in vars(RouterProcess) and name not in vars(VLLMServer), name


def test_router_temporary_log_is_removed_after_a_clean_stop(fake_router: str) -> None:
    router = _router(fake_router)
    with router:
        log = Path(router.log_path or "")
        assert log.is_file() and "fake router: listening" in log.read_text()
        assert router.is_running()
    assert not router.is_running()
    assert not log.exists() and not log.parent.exists()


def test_router_that_fails_keeps_its_log_and_says_where(fake_router: str) -> None:
    router = _router(fake_router, "--exit-code", "3")
    router.start()
    with pytest.raises(ClusterError) as err:
        router.wait_ready()
    assert err.value.returncode == 3 and err.value.log_path == router.log_path
    assert "refusing to start" in err.value.log_tail and "vllm-router exited" in str(err.value)
    log = Path(router.log_path or "")
    try:
        assert "refusing to start" in log.read_text()
        assert [p.name for p in log.parent.iterdir()] == [log.name]
    finally:
        log.unlink()
        log.parent.rmdir()


def test_router_on_ipv6_loopback_is_reached_through_brackets(fake_router: str) -> None:
    try:
        free_port("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    with _router(fake_router, host="::1") as router:
        assert router.base_url.startswith("http://[::1]:")


def test_a_router_left_running_is_stopped_at_exit_with_sigterm(
    fake_router: str, tmp_path: Path
) -> None:
    marker = tmp_path / "terminated"
    code = (
        "import sys\n"
        "from rerank_plugins.cluster import RouterConfig, RouterProcess\n"
        f"extra = ('--marker', {str(marker)!r})\n"
        f"cfg = RouterConfig(executable={fake_router!r}, extra_args=extra)\n"
        "router = RouterProcess(cfg, ['http://127.0.0.1:1']).start().wait_ready(60)\n"
        "print(router.pid, router.log_path, flush=True)\n"
        # No stop(): the interpreter exits with the router running.
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    pid, log = out.stdout.split()
    # The atexit stopper sent SIGTERM (parent-death SIGKILL would leave no marker) and
    # removed the temporary log with its folder.
    assert marker.read_text() == "SIGTERM"
    assert not Path(log).parent.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


# -- the run loop ------------------------------------------------------------------------------


class _Target:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def wait_ready(self) -> None:
        self.calls.append("ready?")

    def stop(self) -> None:
        self.calls.append("stop")


def test_run_loop_stops_the_target_on_a_signal() -> None:
    target = _Target()
    before = signal.getsignal(signal.SIGTERM)
    code = run_until_signalled(
        target,
        on_ready=lambda: os.kill(os.getpid(), signal.SIGTERM),
    )
    assert code == 0 and target.calls == ["start", "ready?", "stop"]
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_run_loop_ends_with_the_checks_exit_code_and_still_stops() -> None:
    target = _Target()
    seen = threading.Event()

    def check() -> int | None:
        if seen.is_set():
            return 7
        seen.set()
        return None

    assert run_until_signalled(target, check=check) == 7
    assert target.calls == ["start", "ready?", "stop"]


def test_run_loop_raises_a_failed_start_up_after_stopping() -> None:
    target = _Target()

    def fail() -> None:
        raise ClusterError("no")

    target.wait_ready = fail  # type: ignore[method-assign]
    with pytest.raises(ClusterError):
        run_until_signalled(target)
    assert target.calls == ["start", "stop"]


def test_command_builders_start_nothing_and_open_nothing(
    monkeypatch: pytest.MonkeyPatch, fake_router: str
) -> None:
    from rerank_plugins.serve import build_command, build_env
    from rerank_plugins.serve.command import router_command

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a command builder ran a process or opened a socket")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    cfg = ServeConfig("/m/Qwen3-Reranker-0.6B", python="/py", port=8000, device="cpu")
    assert "--chat-template" in build_command(cfg)
    assert build_env(cfg, base={})["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    router = RouterConfig(executable=fake_router, port=9000)
    assert router_command(router, ["http://127.0.0.1:8000"], metrics_port=9001)[0] == fake_router


# Every name these modules exported before serve/ became a package (FamilySpec aside: a dead
# alias of Family, removed). A pinned record, packed rather than one name a line as in the
# modules' __all__.
SERVE_NAMES = [
    "API_KEY_ENV", "API_KEY_GUARD_MIDDLEWARE", "CPU_FLAGS", "DEFAULT_STARTUP_TIMEOUT", "FAMILIES",
    "LOG_TAIL_LINES", "QWEN3_RERANKER_HF_OVERRIDES", "STOP_GRACE_SECONDS", "Family",
    "ServeConfig", "ServeError", "VLLMServer", "build_command", "build_env", "client_settings",
    "default_cache_dir", "detect_device", "family_of", "free_port", "main", "resolve_config",
    "stop_servers", "template_path", "vllm_entry_point", "vllm_ext_dir",
]  # fmt: skip
CLUSTER_NAMES = [
    "POLICIES", "ClusterError", "RouterConfig", "RouterProcess", "ServerCluster", "find_router",
    "main", "router_command",
]  # fmt: skip


def test_the_public_import_paths_keep_their_names_and_export_nothing_private() -> None:
    import rerank_plugins.cluster
    import rerank_plugins.serve

    for module, names in (
        (rerank_plugins.serve, SERVE_NAMES),
        (rerank_plugins.cluster, CLUSTER_NAMES),
    ):
        assert set(names) <= set(module.__all__), module.__name__
        assert all(hasattr(module, name) for name in module.__all__)
        assert not [name for name in module.__all__ if name.startswith("_")]

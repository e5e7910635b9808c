"""rerank_plugins.serve: the command it builds (unit) and the processes it runs (integration)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jinja2
import pytest
from support.servers import REPO_ROOT, VLLM_CACHE, vllm_python

from rerank_plugins import serve
from rerank_plugins.errors import RerankError
from rerank_plugins.serve import (
    QWEN3_RERANKER_HF_OVERRIDES,
    ServeConfig,
    ServeError,
    VLLMServer,
    build_command,
    build_env,
    template_path,
)

OFFICIAL_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
OFFICIAL_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# Read before the autouse fixture below clears RERANK_VLLM_PYTHON for the unit tests.
VLLM_PY = vllm_python()


def flag_value(cmd: list[str], flag: str) -> str:
    assert flag in cmd, f"{flag} missing from {cmd}"
    return cmd[cmd.index(flag) + 1]


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (PID 1 in a container may not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(autouse=True)
def _no_env_defaults(monkeypatch):
    for var in ("RERANK_PROMPT_MODE", "RERANK_VLLM_PYTHON", "HF_HUB_OFFLINE", "VLLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)


# --- build_command -----------------------------------------------------------------------------


def test_qwen3_reranker_gets_pooling_runner_and_hf_overrides():
    cfg = ServeConfig("Qwen/Qwen3-Reranker-0.6B", python="/py", port=8123, device="gpu")
    cmd = build_command(cfg)
    assert cmd[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag_value(cmd, "--model") == "Qwen/Qwen3-Reranker-0.6B"
    assert flag_value(cmd, "--runner") == "pooling"
    assert json.loads(flag_value(cmd, "--hf-overrides")) == {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    }
    assert flag_value(cmd, "--port") == "8123"
    assert flag_value(cmd, "--host") == "127.0.0.1"
    # A hub id keeps its full name; the client sends it as "model".
    assert flag_value(cmd, "--served-model-name") == "Qwen/Qwen3-Reranker-0.6B"
    # Default prompt mode is client-side formatting: no server template (no double wrapping).
    assert "--chat-template" not in cmd
    assert "--dtype" not in cmd and "--enforce-eager" not in cmd  # GPU: vLLM's defaults


def test_family_detection_is_case_insensitive_and_can_be_forced():
    assert "--hf-overrides" in build_command(ServeConfig("/m/my-QWEN3-RERANKER-4b"))
    plain = build_command(ServeConfig("/m/all-MiniLM-L6-v2"))
    assert "--hf-overrides" not in plain and flag_value(plain, "--runner") == "pooling"
    forced = build_command(ServeConfig("/m/finetuned", family="qwen3-reranker"))
    assert json.loads(flag_value(forced, "--hf-overrides")) == dict(QWEN3_RERANKER_HF_OVERRIDES)
    off = build_command(ServeConfig("/m/qwen3-reranker-x", family="generic"))
    assert "--hf-overrides" not in off


def test_server_prompt_mode_adds_the_packaged_template():
    cmd = build_command(ServeConfig("Qwen/Qwen3-Reranker-0.6B", prompt_mode="server"))
    path = Path(flag_value(cmd, "--chat-template"))
    assert path == template_path()
    assert path.is_file()
    # Shipped inside the installed package, not read from the source tree or ../shared.
    import rerank_plugins

    assert path.parent.parent == Path(rerank_plugins.__file__).parent


@pytest.mark.parametrize("mode", ["client", "raw", "auto"])
def test_other_prompt_modes_add_no_template(mode):
    cmd = build_command(ServeConfig("Qwen/Qwen3-Reranker-0.6B", prompt_mode=mode))
    assert "--chat-template" not in cmd


def test_prompt_mode_comes_from_env_unless_given(monkeypatch):
    monkeypatch.setenv("RERANK_PROMPT_MODE", "server")
    assert "--chat-template" in build_command(ServeConfig("Qwen/Qwen3-Reranker-0.6B"))
    explicit = ServeConfig("Qwen/Qwen3-Reranker-0.6B", prompt_mode="client")
    assert "--chat-template" not in build_command(explicit)
    monkeypatch.setenv("RERANK_PROMPT_MODE", "bogus")
    with pytest.raises(ServeError, match="RERANK_PROMPT_MODE"):
        build_command(ServeConfig("Qwen/Qwen3-Reranker-0.6B"))


def test_server_prompt_mode_needs_a_qwen3_reranker():
    with pytest.raises(ServeError, match="family"):
        build_command(ServeConfig("/m/all-MiniLM-L6-v2", prompt_mode="server"))


def test_invalid_settings_are_rejected_with_the_setting_named():
    with pytest.raises(ServeError, match="prompt_mode"):
        ServeConfig("m", prompt_mode="serverside")  # type: ignore[arg-type]
    with pytest.raises(ServeError, match="device"):
        ServeConfig("m", device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ServeError, match="model"):
        ServeConfig("")
    assert issubclass(ServeError, RerankError)


def test_cpu_device_adds_the_lean_flags_and_options_pass_through():
    cfg = ServeConfig(
        "/m/all-MiniLM-L6-v2",
        device="cpu",
        max_model_len=256,
        enable_request_id_headers=True,
        served_model_name="minilm",
        extra_args=("--seed", "7"),
        host="0.0.0.0",
    )
    cmd = build_command(cfg)
    assert flag_value(cmd, "--dtype") == "float32"
    assert "--enforce-eager" in cmd
    assert flag_value(cmd, "--kv-cache-memory-bytes") == "67108864"
    assert flag_value(cmd, "--max-model-len") == "256"
    assert "--enable-request-id-headers" in cmd
    assert flag_value(cmd, "--served-model-name") == "minilm"
    assert flag_value(cmd, "--host") == "0.0.0.0"
    assert cmd[-2:] == ["--seed", "7"]  # last, so they can override ours
    assert "--port" not in cmd  # unresolved: resolve_config picks one


def test_local_model_name_defaults_to_the_directory_name(tmp_path):
    model = tmp_path / "tiny-qwen3-reranker"
    model.mkdir()
    cfg = ServeConfig(str(model) + "/")
    assert cfg.model_name == "tiny-qwen3-reranker"
    assert flag_value(build_command(cfg), "--served-model-name") == "tiny-qwen3-reranker"


def test_python_comes_from_config_then_env_then_this_interpreter(monkeypatch):
    assert build_command(ServeConfig("m", python="/a/python"))[0] == "/a/python"
    monkeypatch.setenv("RERANK_VLLM_PYTHON", "/env/python")
    assert build_command(ServeConfig("m"))[0] == "/env/python"
    assert build_command(ServeConfig("m", python="/a/python"))[0] == "/a/python"
    monkeypatch.delenv("RERANK_VLLM_PYTHON")
    assert build_command(ServeConfig("m"))[0] == sys.executable


def test_api_key_goes_through_the_environment_never_argv_or_repr():
    key = "sk-serve-unit-sentinel"
    cfg = ServeConfig("Qwen/Qwen3-Reranker-0.6B", api_key=key, device="cpu", port=1)
    assert key not in repr(cfg) and key not in str(cfg)
    assert not any(key in arg for arg in build_command(cfg))
    assert build_env(cfg, base={})["VLLM_API_KEY"] == key
    server = VLLMServer(cfg)
    assert key not in repr(server)


def test_build_env_cpu_settings_and_offline_only_for_local_models(tmp_path):
    local = ServeConfig(str(tmp_path), device="cpu", cache_dir="/c")
    env = build_env(local, tmp_dir="/t", base={"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert env["VLLM_CACHE_ROOT"] == "/c"
    assert env["TMPDIR"] == "/t"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "VLLM_API_KEY" not in env

    hub_gpu = build_env(ServeConfig("Qwen/Qwen3-Reranker-0.6B", device="gpu"), base={})
    assert "HF_HUB_OFFLINE" not in hub_gpu  # a GPU user with a hub id needs the hub
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in hub_gpu
    # What the user set wins over our defaults.
    user = build_env(local, base={"VLLM_HOST_IP": "10.0.0.5", "HF_HUB_OFFLINE": "0"})
    assert user["VLLM_HOST_IP"] == "10.0.0.5" and user["HF_HUB_OFFLINE"] == "0"
    assert build_env(ServeConfig("m", host="0.0.0.0"), base={})["VLLM_HOST_IP"] == "127.0.0.1"


def test_resolve_config_fills_port_and_keeps_explicit_values():
    cfg = serve.resolve_config(ServeConfig("m", python="/py", device="cpu", prompt_mode="auto"))
    assert isinstance(cfg.port, int) and cfg.port > 0
    assert cfg.prompt_mode == "client"
    assert cfg.base_url == f"http://127.0.0.1:{cfg.port}"
    assert serve.resolve_config(ServeConfig("m", device="gpu", port=9)).port == 9


def test_detect_device_refuses_a_python_without_vllm():
    with pytest.raises(ServeError, match="vLLM is not installed"):
        serve.detect_device(sys.executable)
    with pytest.raises(ServeError, match="RERANK_VLLM_PYTHON"):
        serve.detect_device("/nonexistent/python")


# --- the packaged template -------------------------------------------------------------------


def render_like_transformers(messages, **kwargs):
    # transformers renders chat templates with these settings (and keep_trailing_newline off,
    # which is what drops the upstream example's final newline).
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template_path().read_text()).render(messages=messages, **kwargs)


@pytest.mark.parametrize("instruction", [None, "", "Find the passage with working code"])
def test_template_renders_exactly_the_official_prompt(instruction):
    query, doc = "what is 上海?\nline two", "Shanghai {{ not a tag }} is a city.\n"
    messages = [{"role": "query", "content": query}, {"role": "document", "content": doc}]
    kwargs = {} if instruction is None else {"instruction": instruction}
    expected = (
        f"{OFFICIAL_PREFIX}<Instruct>: {instruction or DEFAULT_INSTRUCTION}\n"
        f"<Query>: {query}\n<Document>: {doc}{OFFICIAL_SUFFIX}"
    )
    assert render_like_transformers(messages, **kwargs) == expected
    assert render_like_transformers(messages, **kwargs).endswith("</think>\n\n")


# --- command line ------------------------------------------------------------------------------


def test_cli_print_command_is_a_dry_run(capsys):
    argv = ["/m/Qwen3-Reranker-0.6B", "--device", "cpu", "--port", "8123", "--python", "/py"]
    argv += ["--prompt-mode", "server", "--api-key", "sk-cli-sentinel", "--print-command"]
    argv += ["--", "--seed", "3"]
    assert serve.main(argv) == 0
    out = capsys.readouterr().out
    cmd = shlex.split(out.strip())
    assert cmd[0] == "/py"
    assert flag_value(cmd, "--port") == "8123"
    assert flag_value(cmd, "--chat-template") == str(template_path())
    assert "--enforce-eager" in cmd
    assert cmd[-2:] == ["--seed", "3"]
    assert "sk-cli-sentinel" not in out


def test_cli_reports_a_bad_setting_without_a_traceback(capsys):
    assert serve.main(["/m/all-MiniLM-L6-v2", "--prompt-mode", "server", "--print-command"]) == 1
    assert "rerank-serve:" in capsys.readouterr().err


# --- real processes ----------------------------------------------------------------------------


def _vllm_py() -> str:
    py = VLLM_PY
    if not py.exists():
        pytest.fail(f"vLLM Python {py} missing: run tests/setup_vllm_env.sh", pytrace=False)
    return str(py)


@pytest.mark.integration
def test_cli_print_command_detects_the_cpu_build():
    args = ["/m/Qwen3-Reranker-0.6B", "--print-command", "--python", _vllm_py()]
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_plugins.serve", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    cmd = shlex.split(proc.stdout.strip())
    assert "--enforce-eager" in cmd and flag_value(cmd, "--dtype") == "float32"
    assert int(flag_value(cmd, "--port")) > 0


@pytest.mark.integration
def test_a_bad_model_fails_with_the_log_tail_and_leaves_no_process(tmp_path):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "no-such-architecture"}')
    cfg = ServeConfig(str(model), python=_vllm_py(), cache_dir=str(VLLM_CACHE), startup_timeout=240)
    server = VLLMServer(cfg)
    with pytest.raises(ServeError) as info, server:
        pytest.fail("a broken model must not become healthy")
    err = info.value
    assert err.returncode not in (None, 0)
    assert err.log_tail and err.log_tail in str(err)
    assert "no-such-architecture" in err.log_tail  # vLLM's own complaint, not just ours
    assert err.log_path and Path(err.log_path).is_file()  # the full log survives a failure
    assert server.pid is not None and not pid_alive(server.pid)
    assert not server.is_running()


def _start_cli(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    """Start rerank-serve on the tiny model; return it, the vLLM PID, and lines read so far."""
    model = REPO_ROOT / "tests" / "artifacts" / "tiny-qwen3-reranker"
    build = REPO_ROOT / "tests" / "support" / "build_tiny_qwen3_reranker.py"
    subprocess.run([_vllm_py(), str(build), str(model)], check=True, capture_output=True)
    cmd = [sys.executable, "-u", "-m", "rerank_plugins.serve", str(model), "--python", _vllm_py()]
    cmd += ["--cache-dir", str(VLLM_CACHE), "--log-path", str(tmp_path / "vllm.log"), *extra]
    cli = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert cli.stdout is not None
    for line in cli.stdout:
        lines.append(line)
        if "(pid " in line:
            return cli, int(line.split("(pid ")[1].split(",")[0]), lines
    pytest.fail("rerank-serve exited before starting vLLM:\n" + "".join(lines))


def _wait_gone(pid: int, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return False


def _read_until_ready(cli: subprocess.Popen[str], lines: list[str]) -> str:
    assert cli.stdout is not None
    for line in cli.stdout:
        lines.append(line)
        if "ready" in line:
            break
    out = "".join(lines)
    assert "RERANK_BASE_URL=http://127.0.0.1:" in out, out
    return out


@pytest.mark.integration
def test_sigterm_to_the_cli_stops_its_vllm_server(tmp_path):
    cli, vllm_pid, lines = _start_cli(tmp_path)
    try:
        out = _read_until_ready(cli, lines)
        assert "RERANK_MODEL=tiny-qwen3-reranker" in out
        assert "RERANK_PROMPT_MODE=client" in out
        base_url = out.split("RERANK_BASE_URL=")[1].split()[0]
        assert httpx.get(f"{base_url}/health").status_code == 200
        assert pid_alive(vllm_pid)
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
        assert not pid_alive(vllm_pid)
    finally:
        if cli.poll() is None:
            cli.kill()
        if pid_alive(vllm_pid):
            os.killpg(vllm_pid, signal.SIGKILL)


@pytest.mark.integration
def test_vllm_dies_with_its_parent_even_when_the_parent_is_killed(tmp_path):
    # Killed mid-start-up, the hardest case: vLLM may ignore a SIGTERM then, so the
    # parent-death signal is SIGKILL.
    cli, vllm_pid, _ = _start_cli(tmp_path)
    try:
        # Best effort to reach the phase where SIGTERM was seen to hang (not asserted: the
        # log text is vLLM's, and the test is valid in any phase).
        log = tmp_path / "vllm.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and pid_alive(vllm_pid):
            if "Enabled custom fusions" in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        assert pid_alive(vllm_pid)
        cli.kill()  # SIGKILL: no cleanup code runs in the parent; PDEATHSIG must do it
        cli.wait(timeout=30)
        assert _wait_gone(vllm_pid), "vLLM outlived its killed parent"
    finally:
        if pid_alive(vllm_pid):
            os.killpg(vllm_pid, signal.SIGKILL)


@pytest.mark.integration
@pytest.mark.parametrize("fixture", ["tiny_server", "tiny_server_template", "minilm_server"])
def test_session_servers_are_healthy_and_serve_their_model(request, fixture):
    server = request.getfixturevalue(fixture)
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    models = httpx.get(f"{server.base_url}/v1/models", headers=headers).json()["data"]
    assert [m["id"] for m in models] == [server.model_name]
    assert Path(server.log_path).is_file()
    assert server.pid is not None and pid_alive(server.pid)


@pytest.mark.integration
def test_template_server_enforces_its_api_key_and_echoes_request_ids(tiny_server_template):
    server = tiny_server_template
    body = {"model": server.model_name, "query": "q", "documents": ["d"]}
    url = f"{server.base_url}/v1/rerank"
    assert httpx.post(url, json=body).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert httpx.post(url, json=body, headers=wrong).status_code == 401
    good = {"Authorization": f"Bearer {server.api_key}", "X-Request-Id": "req-serve-test-1"}
    resp = httpx.post(url, json=body, headers=good)
    assert resp.status_code == 200
    assert resp.headers.get("x-request-id") == "req-serve-test-1"
    # The key reached vLLM through its environment, not its command line.
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
    assert server.api_key not in cmdline

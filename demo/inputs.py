"""User documents for the demo: pasted text and uploaded files, parsed into a bounded list.

Pure functions, no Gradio: the limits and the messages a person sees live here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

__all__ = [
    "MAX_DOCUMENTS",
    "MAX_UPLOAD_BYTES",
    "SPLIT_MODES",
    "DocumentsError",
    "SplitMode",
    "parse_file",
    "parse_text",
]

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_DOCUMENTS = 5_000
SUFFIXES = (".txt", ".md", ".jsonl")
# Keys tried, in order, for the text of a JSON Lines record.
_TEXT_KEYS = ("text", "content", "document", "body", "passage")

SplitMode = Literal["auto", "lines", "paragraphs"]
SPLIT_MODES: dict[str, SplitMode] = {
    "Auto (blank lines if any, else lines)": "auto",
    "One document per line": "lines",
    "Blank-line separated paragraphs": "paragraphs",
}

_BLANK_LINE = re.compile(r"\n\s*\n")


class DocumentsError(ValueError):
    """The user's documents cannot be used as given; the message is shown in the UI as is."""


def _split(text: str, mode: SplitMode) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode == "auto":
        # A blank line is a deliberate separator; without any, each line is a document
        # (the common "paste a candidate list" case).
        mode = "paragraphs" if _BLANK_LINE.search(text.strip()) else "lines"
    if mode == "paragraphs":
        # Lines inside a paragraph are one document: join them with spaces, as hard-wrapped
        # text (Markdown, e-mails) would read.
        parts = [" ".join(line.strip() for line in p.splitlines()) for p in _BLANK_LINE.split(text)]
    else:
        parts = text.split("\n")
    return [p.strip() for p in parts if p.strip()]


def _check_count(docs: list[str], source: str) -> list[str]:
    if len(docs) > MAX_DOCUMENTS:
        raise DocumentsError(
            f"{source} holds {len(docs):,} documents; the demo takes at most "
            f"{MAX_DOCUMENTS:,}. Trim it or split it into smaller files."
        )
    return docs


def parse_text(
    text: str, mode: SplitMode = "auto", *, source: str = "The pasted text"
) -> list[str]:
    """Split pasted text into documents: ``lines``, blank-line ``paragraphs``, or ``auto``.

    Raises:
        DocumentsError: the text is over 2 MB or holds more than 5,000 documents.

    """
    size = len(text.encode("utf-8"))
    if size > MAX_UPLOAD_BYTES:
        raise DocumentsError(
            f"{source} is {_mb(size)}; the limit is {_mb(MAX_UPLOAD_BYTES)}. "
            "Paste less, or upload a smaller file."
        )
    return _check_count(_split(text, mode), source)


def parse_file(path: str | Path, mode: SplitMode = "auto") -> list[str]:
    """Read an uploaded ``.txt``, ``.md`` or ``.jsonl`` file into documents.

    ``.txt`` and ``.md`` are split like pasted text; ``.jsonl`` takes one document per line,
    either a JSON string or an object with a ``text`` (or ``content``, ``document``, ``body``,
    ``passage``) field.

    Raises:
        DocumentsError: wrong type, over 2 MB, not UTF-8, bad JSON, or over 5,000 documents.

    """
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentsError(
            f"{name}: unsupported file type {suffix or '(none)'}; upload .txt, .md or .jsonl."
        )
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise DocumentsError(
            f"{name} is {_mb(size)}; uploads are limited to {_mb(MAX_UPLOAD_BYTES)}. "
            "Split it into smaller files or keep the part you want to search."
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentsError(f"{name} is not UTF-8 text (byte {exc.start}).") from None
    if suffix == ".jsonl":
        return _check_count(_parse_jsonl(text, name), name)
    return _check_count(_split(text, mode), name)


def _parse_jsonl(text: str, name: str) -> list[str]:
    docs: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentsError(f"{name}, line {number}: not JSON ({exc.msg}).") from None
        doc = _record_text(record)
        if doc is None:
            raise DocumentsError(
                f"{name}, line {number}: expected a string or an object with one of the "
                f"fields {', '.join(_TEXT_KEYS)}."
            )
        if doc.strip():
            docs.append(doc.strip())
    return docs


def _record_text(record: object) -> str | None:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for key in _TEXT_KEYS:
            value = record.get(key)
            if isinstance(value, str):
                title = record.get("title")
                return f"{title}. {value}" if isinstance(title, str) and title else value
    return None


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"

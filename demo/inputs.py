"""User documents for the demo: pasted text and uploaded files, parsed into a bounded list.

Pure functions, no Gradio: the limits and the messages a person sees live here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from . import messages
from .messages import Lang

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
    """The user's documents cannot be used as given; the message is shown in the UI.

    Built from a message key of :mod:`demo.messages`: ``str()`` is the English message, and
    :meth:`message` gives it in the visitor's language.
    """

    def __init__(self, key: str, **params: Any) -> None:
        self.key = key
        self.params = params
        super().__init__(self.message("en"))

    def message(self, lang: Lang) -> str:
        """The message in ``lang``; a ``source_*`` key among the parameters is translated too."""
        params = {
            name: messages.text(lang, value) if value in messages.MESSAGES else value
            for name, value in self.params.items()
        }
        return messages.text(lang, self.key, **params)


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
        raise DocumentsError("docs_too_many", source=source, n=len(docs), limit=MAX_DOCUMENTS)
    return docs


def parse_text(text: str, mode: SplitMode = "auto", *, source: str = "source_paste") -> list[str]:
    """Split pasted text into documents: ``lines``, blank-line ``paragraphs``, or ``auto``.

    ``source`` names the text in messages: a message key (``source_paste``, ``source_list``).

    Raises:
        DocumentsError: the text is over 2 MB or holds more than 5,000 documents.

    """
    size = len(text.encode("utf-8"))
    if size > MAX_UPLOAD_BYTES:
        raise DocumentsError(
            "paste_too_big", source=source, size=_mb(size), limit=_mb(MAX_UPLOAD_BYTES)
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
        raise DocumentsError("file_type", name=name, suffix=suffix or "(none)")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise DocumentsError("file_too_big", name=name, size=_mb(size), limit=_mb(MAX_UPLOAD_BYTES))
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentsError("file_not_utf8", name=name, byte=exc.start) from None
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
            raise DocumentsError("jsonl_not_json", name=name, line=number, why=exc.msg) from None
        doc = _record_text(record)
        if doc is None:
            raise DocumentsError(
                "jsonl_no_text", name=name, line=number, fields=", ".join(_TEXT_KEYS)
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

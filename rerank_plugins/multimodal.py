"""Documents and queries with images, in the form vLLM's multimodal rerank request takes (pure).

vLLM's ``/rerank`` (and ``/score``) accept, for the query and for each document, either a
string or a ``ScoreMultiModalParam``: ``{"content": [part, ...]}``, where a part is
``{"type": "text", "text": ...}`` or ``{"type": "image_url", "image_url": {"url": ...}}`` (the
OpenAI chat content parts). In vLLM 0.32 each element of ``documents`` is ONE document, its
parts rendered together into one prompt; a bare ``{"content": [...]}`` as ``documents`` (not a
list) is also one document. Image URLs may be ``http(s)://`` or ``data:image/...;base64,...``
(``file://`` only with the server's ``--allowed-local-media-path``). A text-only model answers
any ``{"content": ...}`` with 400 "MultiModalParam is not supported for <architecture>";
:func:`check_images_allowed` says so before sending, from the model's family.

Parts go in the order of the model authors' own input formatting (Qwen3-VL-Reranker's
``format_mm_content``): images first, then the text. The reply echoes an image document as
``{"text": null, "multi_modal": [parts]}``; map results by ``index`` as for text.

This module builds and checks the request body; it sends nothing and imports nothing heavy.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from rerank_plugins.errors import RerankInputError
from rerank_plugins.families import FAMILIES, Family, family_of

__all__ = [
    "ImageDocument",
    "RerankInputItem",
    "ScoreInput",
    "build_multimodal_rerank_body",
    "check_images_allowed",
    "for_text_only",
    "has_images",
    "image_part",
    "image_url_from_bytes",
    "is_image_url",
    "only_str",
    "text_of",
    "text_part",
    "to_score_input",
    "to_score_inputs",
]

# What vLLM's request takes for one query or document: a string or {"content": [parts]}.
ScoreInput: TypeAlias = str | dict[str, list[dict[str, Any]]]

_URL_SCHEMES = ("http://", "https://", "data:image/", "file://")
_PART_TYPES = frozenset({"text", "image_url"})


def image_url_from_bytes(data: bytes, mime_type: str = "image/png") -> str:
    """A ``data:`` URL carrying the image bytes (base64), which vLLM decodes itself."""
    if not data:
        raise RerankInputError("an image has no bytes")
    if not mime_type.startswith("image/"):
        raise RerankInputError(f"mime_type must be an image/* type, got {mime_type!r}")
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def is_image_url(source: str) -> bool:
    """Whether ``source`` is an image URL the server reads (else it is a local path)."""
    return source.startswith(_URL_SCHEMES)


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not is_image_url(url):
        raise RerankInputError(
            "an image must be an http(s):// URL, a data:image/...;base64 URL or (with the "
            f"server's --allowed-local-media-path) a file:// URL, got {str(url)[:60]!r}"
        )
    # As for text (checks._check_text): a lone surrogate cannot be encoded, so never sent.
    try:
        url.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RerankInputError(
            f"an image URL holds a lone surrogate {url[exc.start]!r} at character {exc.start}: "
            "it is not valid Unicode text and cannot be sent"
        ) from None
    return url


@dataclass(frozen=True)
class ImageDocument:
    """A query or document with one or more images and optional text.

    ``images`` are URLs (``http(s)://``, ``data:image/...;base64,...``, ``file://``); make one
    from bytes with :meth:`from_bytes` or from a local file with :meth:`from_path` (inlined as a
    data URL: the server need not see the file).
    """

    images: tuple[str, ...]
    text: str | None = None

    def __post_init__(self) -> None:
        images = (self.images,) if isinstance(self.images, str) else tuple(self.images)
        if not images:
            raise RerankInputError("an ImageDocument needs at least one image")
        for url in images:
            _check_url(url)
        if self.text is not None and not isinstance(self.text, str):
            raise RerankInputError(f"ImageDocument.text must be a string, got {type(self.text)}")
        object.__setattr__(self, "images", images)

    @classmethod
    def from_bytes(
        cls, data: bytes, mime_type: str = "image/png", text: str | None = None
    ) -> ImageDocument:
        """One image given as bytes (sent inline as a data URL)."""
        return cls((image_url_from_bytes(data, mime_type),), text)

    @classmethod
    def from_path(cls, path: str | Path, text: str | None = None) -> ImageDocument:
        """One image read from a local file (sent inline as a data URL)."""
        file = Path(path)
        mime_type = mimetypes.guess_type(file.name)[0] or "image/png"
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise RerankInputError(f"cannot read image {str(file)!r}: {exc.strerror}") from None
        return cls.from_bytes(data, mime_type, text)

    @classmethod
    def from_fields(
        cls,
        text: str | None = None,
        *,
        url: str | None = None,
        base64_data: str | None = None,
        path: str | Path | None = None,
        mime_type: str | None = None,
    ) -> ImageDocument | None:
        """From the image fields frameworks use; None when there is no image.

        LlamaIndex's ``ImageNode`` has ``image`` (base64 text), ``image_path``, ``image_url`` and
        ``image_mimetype``: ``from_fields(node.text or None, url=node.image_url,
        base64_data=node.image, path=node.image_path, mime_type=node.image_mimetype)``. The
        first one set is used: ``base64_data``, then ``url``, then ``path``.
        """
        if base64_data:
            data_url = f"data:{mime_type or 'image/png'};base64,{base64_data}"
            return cls((data_url,), text)
        if url:
            return cls((url,), text)
        if path:
            return cls.from_path(path, text)
        return None

    @classmethod
    def from_metadata(cls, text: str, metadata: Mapping[str, Any]) -> ImageDocument | None:
        """From a LangChain ``Document``'s text and metadata; None without an image.

        NVIDIA's convention (``langchain_nvidia_ai_endpoints.NVIDIARerank``): an ``"image"``
        key holding an http(s) URL or a ``data:image/...;base64`` URL.
        """
        image = metadata.get("image")
        if not image:
            return None
        return cls((str(image),), text or None)

    def content(self) -> list[dict[str, Any]]:
        """The content parts: the images, then the text (if any)."""
        parts = [image_part(url) for url in self.images]
        if self.text:
            parts.append(text_part(self.text))
        return parts


# What a caller may give for one query or document.
RerankInputItem: TypeAlias = str | ImageDocument | Mapping[str, Any]


def text_part(text: str) -> dict[str, Any]:
    """``{"type": "text", "text": text}``."""
    return {"type": "text", "text": text}


def image_part(url: str) -> dict[str, Any]:
    """``{"type": "image_url", "image_url": {"url": url}}``."""
    return {"type": "image_url", "image_url": {"url": _check_url(url)}}


def _check_content(item: Mapping[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    content = item.get("content")
    if set(item) != {"content"} or not isinstance(content, list) or not content:
        raise RerankInputError(
            f"{where}: a multimodal item is {{'content': [part, ...]}} with at least one part"
        )
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in _PART_TYPES:
            raise RerankInputError(
                f"{where}: content parts must be of type 'text' or 'image_url', got {kind!r}"
            )
        if kind == "text" and not isinstance(part.get("text"), str):
            raise RerankInputError(f"{where}: a text part needs a string 'text'")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else None
            _check_url(url)  # type: ignore[arg-type]
        parts.append(dict(part))
    return {"content": parts}


def to_score_input(item: RerankInputItem, where: str = "document") -> ScoreInput:
    """One query or document as vLLM takes it: a string stays a string, images become content.

    A mapping must already be ``{"content": [parts]}`` and is checked part by part.
    """
    if isinstance(item, str):
        return item
    if isinstance(item, ImageDocument):
        return {"content": item.content()}
    if isinstance(item, Mapping):
        return _check_content(item, where)
    raise RerankInputError(
        f"{where}: expected a string, an ImageDocument or {{'content': [...]}}, "
        f"got {type(item).__name__}"
    )


def to_score_inputs(documents: Sequence[RerankInputItem]) -> list[ScoreInput]:
    """The ``documents`` list of a request: one entry per document, in order."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise RerankInputError("documents must be a list")
    return [to_score_input(d, f"documents[{i}]") for i, d in enumerate(documents)]


def only_str(values: Iterable[object]) -> bool:
    """Whether every value is exactly a ``str`` (one C-level pass, no Python per value)."""
    return set(map(type, values)) <= _STR


_STR = frozenset({str})


def has_images(*items: RerankInputItem | Sequence[RerankInputItem]) -> bool:
    """Whether any of the given queries/documents (or lists of them) is not plain text."""
    for item in items:
        if isinstance(item, str):
            continue
        if isinstance(item, (ImageDocument, Mapping)):
            return True
        # One C-level pass over the types first: text-only lists are the common case.
        if only_str(item):
            continue
        if any(not isinstance(sub, str) for sub in item):
            return True
    return False


def check_images_allowed(
    query: RerankInputItem,
    documents: Sequence[RerankInputItem],
    *,
    model_name: str,
    model_root: str | None = None,
    family: str | None = None,
    unknown_ok: bool = True,
) -> Family | None:
    """Raise :class:`RerankInputError` if images go to a model whose family is text-only.

    The family is ``family`` (a :data:`~rerank_plugins.families.FAMILIES` name) or the one the
    model's names give (:func:`~rerank_plugins.families.family_of`). A model of no known family
    passes when ``unknown_ok`` (the server then decides: vLLM answers 400 for a text-only
    model); with ``unknown_ok=False`` it is refused too. Returns the family found.
    """
    found = FAMILIES.get(family) if family else family_of(model_name, model_root)
    if family and found is None:
        raise RerankInputError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if not has_images(query, documents):
        return found
    if found is None:
        if unknown_ok:
            return None
        raise RerankInputError(
            f"images were given, but the family of {model_name!r} is unknown; name a "
            "multimodal family or send text only"
        )
    if not found.multimodal:
        multimodal = ", ".join(f.name for f in FAMILIES.values() if f.multimodal)
        raise RerankInputError(
            f"{model_name!r} is a {found.name} model, which takes text only, but the query or "
            f"documents contain images; image-capable families: {multimodal}"
        )
    return found


def for_text_only(
    query: RerankInputItem,
    documents: Sequence[RerankInputItem],
    *,
    model_name: str,
    model_root: str | None = None,
    images: str = "as_text",
) -> list[str] | None:
    """The documents a text-only model is sent in place of ones with images; None if it sees them.

    For a model whose family takes images, None: send ``documents`` as given. Otherwise (a
    text-only family, or none known: images need a family that says how the server renders
    them) each document goes as its text: a string as is, an :class:`ImageDocument` as its
    ``text`` (caption, alt text, whatever the adapter read) or ``""``, a content list as its
    text parts. An image in the query, or ``images="error"``, raises
    :class:`RerankInputError` instead: a query is what the ranking is for, so it is never
    silently reduced.
    """
    found = family_of(model_name, model_root)
    if found is not None and found.multimodal:
        return None
    if images == "error" or has_images(query):
        check_images_allowed(
            query, documents, model_name=model_name, model_root=model_root, unknown_ok=False
        )
    return [text_of(document) for document in documents]


def text_of(item: RerankInputItem) -> str:
    """The text of a query or document: a string as is, else its text parts (or ``""``)."""
    if isinstance(item, str):
        return item
    if isinstance(item, ImageDocument):
        return item.text or ""
    parts = item.get("content") if isinstance(item, Mapping) else None
    texts = [p.get("text") for p in parts or () if isinstance(p, Mapping)]
    return "\n".join(t for t in texts if isinstance(t, str))


def build_multimodal_rerank_body(
    model: str,
    query: RerankInputItem,
    documents: Sequence[RerankInputItem],
    *,
    top_n: int | None = None,
    instruction: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /rerank`` for a query and documents that may carry images.

    ``top_n`` None means all results (sent as 0, vLLM's "all"); ``instruction`` is passed for
    templates that use it (Qwen3-VL-Reranker). Call :func:`check_images_allowed` first.
    """
    if not documents:
        raise RerankInputError("documents is empty: vLLM needs at least one document")
    if top_n is not None and top_n < 0:
        raise RerankInputError(f"top_n must be >= 0 or None, got {top_n}")
    body: dict[str, Any] = {
        "model": model,
        "query": to_score_input(query, "query"),
        "documents": to_score_inputs(documents),
        "top_n": 0 if top_n is None else top_n,
    }
    if instruction is not None:
        body["instruction"] = instruction
    return body
